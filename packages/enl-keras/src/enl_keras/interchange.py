"""Keras files and TensorFlow checkpoints <-> the framework-neutral ``.npz``.

Every other framework meets the Keras layers through the ``.npz`` layout of
:mod:`enl_core.params` (one file per block, kernels ``(in, out)``); this module
reads and writes that layout from what a Keras user has:

* a model object (Keras 3, or tf_keras / Model Garden, e.g. one restored from
  its checkpoint): :func:`model_to_npz`, :func:`npz_to_model`;
* a Keras 3 ``.keras`` file: :func:`keras_file_to_npz`, :func:`npz_to_keras_file`;
* a TensorFlow checkpoint (tf_keras ``save_weights`` / ``tf.train.Checkpoint``,
  Model Garden's), read without building the model: :func:`tf_checkpoint_to_npz`.

Each block's weights go through the layer's own ``get_block_weights`` /
``set_block_weights`` (:mod:`enl_keras.blocks` owns the fused theta|phi|g
layout), so a transfer is a copy: bit-exact. A PyTorch user then loads the
files with ``enl_torch.ENL.load_npz`` (or ``enl_torch.convert``).

Example:
    >>> import keras, enl_keras
    >>> from enl_keras import interchange
    >>> inputs = keras.Input((None, None, 64))
    >>> model = keras.Model(inputs, enl_keras.ENL(name="enl")(inputs))
    >>> interchange.model_to_npz(model, "blocks")  # doctest: +SKIP
    {'enl': 'blocks/enl.npz'}
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping

import keras
import numpy as np

from enl_core import params as core_params
from enl_core.validation import DEFAULT_DCT_SIZE
from enl_keras import blocks
from enl_keras.layers import ENL

# The variables of one block (enl_keras.blocks), as a TF checkpoint names them.
_VARIABLES = ("projection_kernel", "projection_bias", "output_kernel", "output_bias",
              "dct_weights")
_CHECKPOINT_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


def _walk(layer, seen: set[int]) -> Iterator[object]:
    """``layer`` and every layer reachable from it through public attributes."""
    if id(layer) in seen:
        return
    seen.add(id(layer))
    yield layer
    # tf_keras layers are tf.Modules: `submodules` lists every nested layer.
    # Keras 3 has no public recursive listing: a model's `layers`, then the
    # public attributes a custom layer keeps its sublayers in.
    if hasattr(layer, "submodules"):
        for child in layer.submodules:
            if id(child) not in seen:
                seen.add(id(child))
                yield child
        return
    children = list(getattr(layer, "layers", None) or ())
    # Instance attributes (not the class's properties); `dir` also lists the
    # ones a backend keeps elsewhere (torch modules hold sublayers in a table).
    for name in sorted(set(dir(layer)) - set(dir(type(layer)))):
        if not name.startswith("_"):
            value = getattr(layer, name, None)
            values = (value.values() if isinstance(value, dict) else
                      value if isinstance(value, (list, tuple)) else (value,))
            children += [v for v in values if isinstance(v, keras.layers.Layer)]
    for child in children:
        yield from _walk(child, seen)


def find_blocks(model) -> dict[str, blocks._BlockBase]:
    """Every enl_keras ENL / NonLocal (Keras 3 or tf_keras) inside ``model``, by layer name.

    Raises:
        ValueError: two different blocks share a layer name.
    """
    found: dict[str, blocks._BlockBase] = {}
    for layer in _walk(model, set()):
        if isinstance(layer, blocks._BlockBase):
            if found.get(layer.name, layer) is not layer:
                raise ValueError(f"two blocks of `model` share the layer name {layer.name!r}; "
                                 f"give them unique names")
            found[layer.name] = layer
    return found


def model_to_npz(model, directory: str | os.PathLike) -> dict[str, str]:
    """Writes ``<directory>/<layer name>.npz`` for every block of a Keras 3 or
    tf_keras model.

    Returns:
        layer name -> file path.
    """
    os.makedirs(directory, exist_ok=True)
    files = {}
    for name, layer in find_blocks(model).items():
        path = os.path.join(os.fspath(directory), f"{name}.npz")
        layer.save_npz(path)
        files[name] = path
    return files


def npz_to_model(model, files: Mapping[str, str | os.PathLike]) -> None:
    """Loads ``.npz`` files into the model's blocks by layer name.

    Raises:
        KeyError: a name in ``files`` is not a block of the model.
    """
    found = find_blocks(model)
    for name, path in files.items():
        if name not in found:
            raise KeyError(f"`files` names {name!r}, which is not an enl_keras block of "
                           f"`model`; blocks: {sorted(found)}")
        found[name].load_npz(path)


def keras_file_to_npz(path: str | os.PathLike, directory: str | os.PathLike) -> dict[str, str]:
    """Reads a Keras 3 ``.keras`` file and writes one ``.npz`` per block.

    Returns:
        layer name -> file path.
    """
    model = keras.saving.load_model(path, compile=False)
    return model_to_npz(model, directory)


def npz_to_keras_file(path: str | os.PathLike, files: Mapping[str, str | os.PathLike],
                      out_path: str | os.PathLike) -> None:
    """Loads a ``.keras`` file, replaces the named blocks' weights from ``.npz``
    files and saves the result to ``out_path``."""
    model = keras.saving.load_model(path, compile=False)
    npz_to_model(model, files)
    model.save(out_path)


def _block_from_variables(variables: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One block's checkpointed variables -> the shared layout, through a layer.

    A layer with the variables' shapes and dtype is filled with them and asked
    for ``get_block_weights``, so the fused layout is read by its one owner.
    """
    kernel = np.asarray(variables["projection_kernel"])
    dct = variables.get("dct_weights")
    layer = ENL(inter_channels=kernel.shape[1] // 3, use_bias="projection_bias" in variables,
                dct_size=DEFAULT_DCT_SIZE if dct is None else np.shape(dct),
                dct_weights=None if dct is None else "learnable", dtype=kernel.dtype.name)
    layer.build((None, None, None, kernel.shape[0]))
    for name, value in variables.items():
        getattr(layer, name).assign(np.asarray(value))
    return layer.get_block_weights()


def tf_checkpoint_to_npz(checkpoint: str | os.PathLike,
                         directory: str | os.PathLike) -> dict[str, str]:
    """Writes one ``.npz`` per block found in a TensorFlow checkpoint.

    Blocks are found by their variable names (``projection_kernel``, ...), so
    no model is needed; optimizer slots are skipped. The file name is the
    block's object path with ``/`` replaced by ``.``. A fixed (non-learnable)
    ``dct_weights`` is configuration, not a variable, and is not in the file.
    Needs TensorFlow.

    Returns:
        object path -> file path.
    """
    import tensorflow as tf

    reader = tf.train.load_checkpoint(os.fspath(checkpoint))
    pattern = re.compile(rf"^(.*)/({'|'.join(_VARIABLES)}){re.escape(_CHECKPOINT_SUFFIX)}$")
    groups: dict[str, dict[str, np.ndarray]] = {}
    for key in reader.get_variable_to_shape_map():
        match = pattern.match(key)
        if match and "optimizer" not in key.split("/")[0]:
            groups.setdefault(match.group(1), {})[match.group(2)] = reader.get_tensor(key)
    os.makedirs(directory, exist_ok=True)
    files = {}
    for prefix, variables in sorted(groups.items()):
        if "projection_kernel" not in variables or "output_kernel" not in variables:
            continue
        path = os.path.join(os.fspath(directory), prefix.replace("/", ".") + ".npz")
        core_params.save_npz(path, core_params.BlockParams.from_dict(
            _block_from_variables(variables)))
        files[prefix] = path
    return files


__all__ = ["find_blocks", "keras_file_to_npz", "model_to_npz", "npz_to_keras_file",
           "npz_to_model", "tf_checkpoint_to_npz"]

"""Exact weight transfer between the torch blocks, the Keras layers and ``.npz``.

Every route goes through the shared layout of :mod:`enl_core.params` (kernels
``(in, out)``), so a transfer is a copy and a transpose: bit-exact in float32.

* torch <-> Keras object: :func:`keras_to_torch`, :func:`torch_to_keras`. The
  Keras 3 layers (``enl_keras.ENL`` / ``NonLocal``) and their tf_keras twins
  (``enl_keras.garden.layers``) are duck-typed through their
  ``get_block_weights`` / ``set_block_weights`` / ``get_config``, so this module
  never imports keras or tensorflow at import time (importing torchvision after
  tensorflow segfaults; keep torch first in a process that needs both).
* torch ``state_dict`` <-> ``.npz``: :func:`find_blocks`,
  :func:`state_dict_to_block_weights`, :func:`block_weights_to_state_dict`,
  :func:`state_dict_to_npz`, :func:`npz_to_state_dict`. These work on a whole
  model's ``state_dict`` (e.g. a detector with three ENL blocks) by prefix.
* Keras files <-> ``.npz`` (these import keras / tensorflow when called):
  :func:`keras_model_to_npz`, :func:`npz_to_keras_model` (any Keras 3 or
  tf_keras model object, e.g. one restored from a tf_keras checkpoint),
  :func:`keras_file_to_npz`, :func:`npz_to_keras_file` (``.keras``) and
  :func:`tf_checkpoint_to_npz` (a tf_keras / Model Garden checkpoint read
  without building the model).

Example:
    >>> import enl_torch
    >>> block = enl_torch.ENL(64)
    >>> state = block.state_dict()
    >>> enl_torch.convert.state_dict_to_npz(state, "enl.npz")
    >>> twin = enl_torch.ENL(64); twin.load_npz("enl.npz")
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import numpy as np
import torch

from enl_core import params as core_params
from enl_torch.base import to_numpy
from enl_torch.enl import ENL
from enl_torch.nonlocal_block import NonLocal

# The Keras config keys each torch block takes (the same names in both packages).
_ENL_KEYS = ("inter_channels", "position_encoding", "dct_size", "dct_weights", "zero_init",
             "use_bias")
_NONLOCAL_KEYS = ("mode", "inter_channels", "scale", "sub_sample", "position_encoding",
                  "dct_size", "zero_init", "use_bias")
# Variables of one Keras block (enl_keras.blocks): fused theta|phi|g kernel and bias.
_KERAS_VARIABLES = ("projection_kernel", "projection_bias", "output_kernel", "output_bias",
                    "dct_weights")


def _check_block(module) -> None:
    if not isinstance(module, (ENL, NonLocal)):
        raise TypeError(f"`module` must be an enl_torch.ENL or enl_torch.NonLocal, received "
                        f"{type(module).__name__}")


def _check_keras_layer(layer) -> None:
    for method in ("get_block_weights", "set_block_weights", "get_config"):
        if not callable(getattr(layer, method, None)):
            raise TypeError(f"`layer` must be an enl_keras ENL / NonLocal layer (Keras 3 or the "
                            f"tf_keras twin), received {type(layer).__name__} without "
                            f"{method}()")


# ---------------------------------------------------------------- torch <-> Keras object

def torch_kwargs_from_keras(layer) -> tuple[type, dict]:
    """The torch class and constructor arguments matching a Keras block's config.

    Raises:
        TypeError: ``layer`` is not an enl_keras block.
        ValueError: the layer is channels_last/first-agnostic but not built
            (its channel count is unknown).
    """
    _check_keras_layer(layer)
    config = layer.get_config()
    channels = getattr(layer, "channels", None)
    if channels is None:
        raise ValueError(f"`layer` {config.get('name')!r} is not built: call it on an input "
                         f"(or build it) so that its channel count is known")
    is_nonlocal = "mode" in config
    keys = _NONLOCAL_KEYS if is_nonlocal else _ENL_KEYS
    kwargs = {key: config[key] for key in keys if key in config}
    if "dct_size" in kwargs:
        kwargs["dct_size"] = tuple(kwargs["dct_size"])
    return (NonLocal if is_nonlocal else ENL), {"in_channels": int(channels), **kwargs}


def keras_config_from_torch(module) -> dict:
    """Keyword arguments that build the Keras twin of ``module``
    (``enl_keras.ENL(**config)``; channels-last unless you add ``data_format``)."""
    _check_block(module)
    config = {"inter_channels": module.inter_channels, "dct_size": list(module.dct_size),
              "zero_init": module.zero_init, "use_bias": module.use_bias,
              "position_encoding": module.position_encoding}
    if isinstance(module, NonLocal):
        config.update(mode=module.mode, scale=module.scale, sub_sample=module.sub_sample)
    else:
        config["dct_weights"] = ("learnable" if module.learnable_dct_weights else
                                 None if module.dct_weights is None else
                                 module.dct_weights.detach().double().cpu().numpy().tolist())
    return config


def keras_to_torch(layer, module=None):
    """Copies a built Keras block's weights into a torch block, exactly.

    Args:
        layer: ``enl_keras.ENL`` / ``NonLocal`` or a tf_keras twin (built).
        module: the torch block to fill; None builds one from the layer's config.

    Returns:
        The torch block (``module`` or the new one), float32 unless ``module``
        had another dtype.
    """
    _check_keras_layer(layer)
    if module is None:
        cls, kwargs = torch_kwargs_from_keras(layer)
        module = cls(**kwargs)
    _check_block(module)
    module.set_block_weights(layer.get_block_weights())
    return module


def torch_to_keras(module, layer):
    """Copies a torch block's weights into a Keras block (built or not), exactly.

    Build the layer with :func:`keras_config_from_torch` arguments so that the
    two compute the same function. Returns ``layer``.
    """
    _check_block(module)
    _check_keras_layer(layer)
    layer.set_block_weights(module.get_block_weights())
    return layer


# ---------------------------------------------------------------- state_dict <-> npz

def find_blocks(state_dict: Mapping) -> list[str]:
    """Prefixes (``"fpn.blocks.0."``, or ``""`` for a bare block) of every
    ENL / NonLocal in a ``state_dict``, found by their four projections."""
    prefixes = []
    for key in state_dict:
        if key.endswith("theta.weight"):
            prefix = key[: -len("theta.weight")]
            if all(f"{prefix}{name}.weight" in state_dict for name in core_params.PROJECTIONS):
                prefixes.append(prefix)
    return prefixes


def state_dict_to_block_weights(state_dict: Mapping, prefix: str = "") -> dict[str, np.ndarray]:
    """One block of a ``state_dict`` in the shared layout (float64-safe numpy copies).

    Raises:
        KeyError: a projection weight is missing under ``prefix``.
    """
    weights = {}
    for name in core_params.PROJECTIONS:
        key = f"{prefix}{name}.weight"
        if key not in state_dict:
            raise KeyError(f"`state_dict` has no {key!r}; blocks found: {find_blocks(state_dict)}")
        kernel = _numpy(state_dict[key])[:, :, 0, 0].T
        weights[f"{name}.kernel"] = np.ascontiguousarray(kernel)
        bias = state_dict.get(f"{prefix}{name}.bias")
        weights[f"{name}.bias"] = (np.zeros(kernel.shape[1], kernel.dtype) if bias is None
                                   else _numpy(bias))
    if state_dict.get(f"{prefix}dct_weights") is not None:
        weights["dct_weights"] = _numpy(state_dict[f"{prefix}dct_weights"])
    return weights


def block_weights_to_state_dict(weights, prefix: str = "",
                                use_bias: bool = True) -> dict[str, torch.Tensor]:
    """The ``state_dict`` entries of one block from shared-layout weights."""
    block = (weights if isinstance(weights, core_params.BlockParams)
             else core_params.BlockParams.from_dict(dict(weights)))
    state = {}
    for name in core_params.PROJECTIONS:
        kernel = getattr(block, f"{name}_kernel")
        state[f"{prefix}{name}.weight"] = torch.from_numpy(
            np.ascontiguousarray(kernel.T))[:, :, None, None]
        if use_bias:
            state[f"{prefix}{name}.bias"] = torch.from_numpy(
                np.array(getattr(block, f"{name}_bias")))
    if block.dct_weights is not None:
        state[f"{prefix}dct_weights"] = torch.from_numpy(np.array(block.dct_weights))
    return state


def state_dict_to_npz(state_dict, path: str | os.PathLike, prefix: str = "") -> None:
    """Writes one block of a ``state_dict`` (or a ``torch.save`` file of one) as ``.npz``."""
    if isinstance(state_dict, (str, os.PathLike)):
        state_dict = torch.load(state_dict, map_location="cpu", weights_only=True)
    core_params.save_npz(path, core_params.BlockParams.from_dict(
        state_dict_to_block_weights(state_dict, prefix)))


def npz_to_state_dict(path: str | os.PathLike, prefix: str = "",
                      use_bias: bool = True) -> dict[str, torch.Tensor]:
    """The ``state_dict`` entries of the block in an ``.npz`` (load with ``strict=False``
    into a model, or ``strict=True`` into a bare block)."""
    return block_weights_to_state_dict(core_params.load_npz(path), prefix, use_bias)


def _numpy(tensor) -> np.ndarray:
    return to_numpy(torch.as_tensor(tensor))


# ---------------------------------------------------------------- Keras files <-> npz

def _keras_blocks(model) -> dict[str, object]:
    """Every enl_keras block inside a Keras 3 or tf_keras model, by layer name."""
    if hasattr(model, "_flatten_layers"):
        layers = list(model._flatten_layers(include_self=True, recursive=True))
    else:
        layers = [model, *getattr(model, "submodules", ())]
    blocks = {}
    for layer in layers:
        if callable(getattr(layer, "get_block_weights", None)):
            if layer.name in blocks and blocks[layer.name] is not layer:
                raise ValueError(f"two blocks share the layer name {layer.name!r}; give them "
                                 f"unique names")
            blocks[layer.name] = layer
    return blocks


def keras_model_to_npz(model, directory: str | os.PathLike) -> dict[str, str]:
    """Writes ``<directory>/<layer name>.npz`` for every enl_keras block of a
    Keras 3 or tf_keras model (e.g. restored from a tf_keras checkpoint).

    Returns:
        layer name -> file path.
    """
    os.makedirs(directory, exist_ok=True)
    files = {}
    for name, layer in _keras_blocks(model).items():
        path = os.path.join(os.fspath(directory), f"{name}.npz")
        layer.save_npz(path)
        files[name] = path
    return files


def npz_to_keras_model(model, files: Mapping[str, str | os.PathLike]) -> None:
    """Loads ``.npz`` files into the model's blocks by layer name.

    Raises:
        KeyError: a name in ``files`` is not a block of the model.
    """
    blocks = _keras_blocks(model)
    for name, path in files.items():
        if name not in blocks:
            raise KeyError(f"`files` names {name!r}, which is not an enl_keras block of the "
                           f"model; blocks: {sorted(blocks)}")
        blocks[name].load_npz(path)


def keras_file_to_npz(path: str | os.PathLike, directory: str | os.PathLike) -> dict[str, str]:
    """Reads a Keras 3 ``.keras`` file and writes one ``.npz`` per block.

    Imports keras and enl_keras (which registers the layers) when called.
    """
    import keras

    import enl_keras  # noqa: F401  (registers ENL / NonLocal for deserialisation)

    model = keras.saving.load_model(path, compile=False)
    return keras_model_to_npz(model, directory)


def npz_to_keras_file(path: str | os.PathLike, files: Mapping[str, str | os.PathLike],
                      out_path: str | os.PathLike) -> None:
    """Loads a ``.keras`` file, replaces the named blocks' weights from ``.npz``
    files and saves the result to ``out_path``."""
    import keras

    import enl_keras  # noqa: F401

    model = keras.saving.load_model(path, compile=False)
    npz_to_keras_model(model, files)
    model.save(out_path)


def tf_checkpoint_to_npz(checkpoint: str | os.PathLike,
                         directory: str | os.PathLike) -> dict[str, str]:
    """Writes one ``.npz`` per enl_keras block found in a TensorFlow checkpoint
    (tf_keras ``save_weights`` / ``tf.train.Checkpoint``, e.g. Model Garden's).

    Blocks are found by their variable names (``projection_kernel``, ...); the
    file name is the block's object path with ``/`` replaced by ``.``. Needs
    no model. Imports tensorflow when called.

    Returns:
        object path -> file path.
    """
    import tensorflow as tf

    reader = tf.train.load_checkpoint(os.fspath(checkpoint))
    suffix = "/.ATTRIBUTES/VARIABLE_VALUE"
    groups: dict[str, dict[str, np.ndarray]] = {}
    pattern = re.compile(rf"^(.*)/({'|'.join(_KERAS_VARIABLES)}){re.escape(suffix)}$")
    for key in reader.get_variable_to_shape_map():
        match = pattern.match(key)
        if match and "optimizer" not in key.split("/")[0]:
            groups.setdefault(match.group(1), {})[match.group(2)] = reader.get_tensor(key)
    os.makedirs(directory, exist_ok=True)
    files = {}
    for prefix, variables in sorted(groups.items()):
        if "projection_kernel" not in variables or "output_kernel" not in variables:
            continue
        weights = _from_keras_variables(variables)
        path = os.path.join(os.fspath(directory), prefix.replace("/", ".") + ".npz")
        core_params.save_npz(path, core_params.BlockParams.from_dict(weights))
        files[prefix] = path
    return files


def _from_keras_variables(variables: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """enl_keras variables (fused theta|phi|g, see enl_keras.blocks) -> shared layout."""
    kernel = np.asarray(variables["projection_kernel"])
    out_kernel = np.asarray(variables["output_kernel"])
    inter = kernel.shape[1] // 3
    bias = variables.get("projection_bias")
    bias = np.zeros(3 * inter, kernel.dtype) if bias is None else np.asarray(bias)
    out_bias = variables.get("output_bias")
    weights = {}
    for number, name in enumerate(("theta", "phi", "g")):
        weights[f"{name}.kernel"] = kernel[:, number * inter:(number + 1) * inter]
        weights[f"{name}.bias"] = bias[number * inter:(number + 1) * inter]
    weights["out.kernel"] = out_kernel
    weights["out.bias"] = (np.zeros(out_kernel.shape[1], kernel.dtype) if out_bias is None
                           else np.asarray(out_bias))
    if "dct_weights" in variables:
        weights["dct_weights"] = np.asarray(variables["dct_weights"])
    return weights


__all__ = [
    "block_weights_to_state_dict",
    "find_blocks",
    "keras_config_from_torch",
    "keras_file_to_npz",
    "keras_model_to_npz",
    "keras_to_torch",
    "npz_to_keras_file",
    "npz_to_keras_model",
    "npz_to_state_dict",
    "state_dict_to_block_weights",
    "state_dict_to_npz",
    "tf_checkpoint_to_npz",
    "torch_kwargs_from_keras",
    "torch_to_keras",
]

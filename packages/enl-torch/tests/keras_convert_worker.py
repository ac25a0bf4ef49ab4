"""Run by test_convert.py in its own process: torch first, then Keras 3 (TF
backend) and tf_keras, the one import order that is safe (importing
torchvision after tensorflow segfaults). The Keras files and the TF
checkpoint are converted by ``enl_keras.interchange``, the torch side reads
and writes the ``.npz`` layout only. Writes WORK_DIR/results.json (exact
weight equality per transfer) and WORK_DIR/outputs.npz (``<check>.torch`` and
``<check>.keras`` outputs on the same input) for the test to judge.

Usage: python keras_convert_worker.py WORK_DIR
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch  # noqa: I001  (torch before tensorflow, on purpose)

import enl_core
import enl_torch

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
import keras  # noqa: E402
import tf_keras  # noqa: E402

import enl_keras  # noqa: E402
from enl_keras import interchange  # noqa: E402
from enl_keras.garden import layers as garden  # noqa: E402

WORK = sys.argv[1]
results: dict[str, bool | int] = {}
recorded: dict[str, np.ndarray] = {}
rng = np.random.default_rng(0)
x_nhwc = rng.normal(size=(2, 11, 13, 12)).astype(np.float32)
x_nchw = torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))


def torch_out(module) -> np.ndarray:
    with torch.no_grad():
        return module(x_nchw).permute(0, 2, 3, 1).numpy()


def record(check: str, torch_value, keras_value) -> None:
    recorded[f"{check}.torch"] = np.asarray(torch_value)
    recorded[f"{check}.keras"] = np.asarray(keras_value)


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


cases = {
    "enl": (dict(inter_channels=6, dct_size=(5, 4), dct_weights="learnable", zero_init=False),
            "ENL"),
    "enl_fixed_d": (dict(dct_size=(3, 3), dct_weights=np.full((3, 3), 0.5).tolist(),
                         zero_init=False), "ENL"),
    "enl_nobias": (dict(position_encoding=False, use_bias=False, zero_init=False), "ENL"),
    "nl": (dict(mode="embedded_gaussian", sub_sample=True, zero_init=False), "NonLocal"),
    "nl_dot": (dict(mode="dot_product", position_encoding=True, zero_init=False), "NonLocal"),
}
for family, module in (("keras", enl_keras), ("tf_keras", garden)):
    for case, (kwargs, name) in cases.items():
        params = enl_core.init_params(12, kwargs.get("inter_channels"), seed=len(case),
                                      dct_size=kwargs.get("dct_size"),
                                      dct_weights="random" if kwargs.get("dct_weights")
                                      == "learnable" else None)
        if case == "enl_fixed_d":  # a fixed d is configuration: the weights must carry it
            params.dct_weights = np.asarray(kwargs["dct_weights"])
        if not kwargs.get("use_bias", True):
            params = enl_core.BlockParams.from_dict({
                k: (np.zeros_like(v) if k.endswith("bias") else v)
                for k, v in params.as_dict().items()})
        layer = getattr(module, name)(**kwargs)
        layer(x_nhwc)
        layer.set_block_weights(params.astype(np.float32))
        # Keras -> torch (a torch block with the same arguments)
        torch_kwargs = {**kwargs, "dct_size": tuple(kwargs.get("dct_size", (9, 9)))}
        block = getattr(enl_torch, name)(12, **torch_kwargs)
        block.set_block_weights(layer.get_block_weights())
        tag = f"{family}.{case}"
        results[f"{tag}.to_torch.exact"] = same_weights(block.get_block_weights(),
                                                        layer.get_block_weights())
        record(f"{tag}.to_torch", torch_out(block), layer(x_nhwc))
        # torch -> Keras (a fresh, unbuilt layer)
        twin = getattr(module, name)(**kwargs)
        twin.set_block_weights(block.get_block_weights())
        results[f"{tag}.to_keras.exact"] = same_weights(twin.get_block_weights(),
                                                        block.get_block_weights())
        record(f"{tag}.to_keras", torch_out(block), twin(x_nhwc))

# .keras file -> npz -> torch, and torch -> npz -> .keras file
inputs = keras.Input((None, None, 12))
hidden = enl_keras.ENL(dct_weights="learnable", zero_init=False, name="enl_a")(inputs)
outputs = enl_keras.NonLocal(zero_init=False, name="nl_b")(hidden)
model = keras.Model(inputs, outputs)
model_path = os.path.join(WORK, "model.keras")
model.save(model_path)
files = interchange.keras_file_to_npz(model_path, os.path.join(WORK, "from_keras"))
torch_model = torch.nn.Sequential(enl_torch.ENL(12, dct_weights="learnable"),
                                  enl_torch.NonLocal(12))
torch_model[0].load_npz(files["enl_a"])
torch_model[1].load_npz(files["nl_b"])
record("keras_file.to_torch", torch_out(torch_model), model(x_nhwc))
for block in torch_model:  # new weights on the torch side, then back into the file
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))
torch_model[0].save_npz(os.path.join(WORK, "enl_a.npz"))
torch_model[1].save_npz(os.path.join(WORK, "nl_b.npz"))
out_path = os.path.join(WORK, "model_from_torch.keras")
interchange.npz_to_keras_file(model_path, {"enl_a": os.path.join(WORK, "enl_a.npz"),
                                           "nl_b": os.path.join(WORK, "nl_b.npz")}, out_path)
reloaded = keras.saving.load_model(out_path, compile=False)
record("keras_file.from_torch", torch_out(torch_model), reloaded(x_nhwc))

# tf_keras checkpoint -> npz (no model needed) -> torch
inputs = tf_keras.Input((None, None, 12))
hidden = garden.ENL(dct_weights="learnable", zero_init=False, name="enl_c")(inputs)
outputs = garden.ENL(position_encoding=False, zero_init=False, name="enl_d")(hidden)
tf_model = tf_keras.Model(inputs, outputs)
for number, layer in enumerate(tf_model.layers[1:]):
    layer.set_block_weights(enl_core.init_params(
        12, seed=10 + number, dct_size=(9, 9) if number == 0 else None,
        dct_weights="random" if number == 0 else None).astype(np.float32))
checkpoint = os.path.join(WORK, "ckpt", "weights")
tf_model.save_weights(checkpoint)
found = interchange.tf_checkpoint_to_npz(checkpoint, os.path.join(WORK, "from_ckpt"))
results["tf_checkpoint.blocks"] = len(found)
chain = torch.nn.Sequential(enl_torch.ENL(12, dct_weights="learnable"),
                            enl_torch.ENL(12, position_encoding=False))
for block, (_, path) in zip(chain, sorted(found.items()), strict=True):
    block.load_npz(path)
record("tf_checkpoint.to_torch", torch_out(chain), tf_model(x_nhwc))
# and the same blocks through a model object (what a Model Garden user restores)
files = interchange.model_to_npz(tf_model, os.path.join(WORK, "from_tf_model"))
results["tf_model.names"] = sorted(files) == ["enl_c", "enl_d"]

np.savez(os.path.join(WORK, "outputs.npz"), **recorded)
with open(os.path.join(WORK, "results.json"), "w") as file:
    json.dump(results, file)

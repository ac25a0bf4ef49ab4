"""Weight transfer: torch state_dict <-> .npz <-> Keras 3 / tf_keras, exact.

The Keras leg runs in a subprocess (keras_convert_worker.py, which converts
the Keras files with enl_keras.interchange) that imports torch before
tensorflow; this process never imports keras or tensorflow.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

import enl_core
import enl_torch
from enl_core.testing import assert_close
from enl_torch import convert

HERE = pathlib.Path(__file__).resolve().parent


def _random_block(cls=enl_torch.ENL, **kwargs):
    torch.manual_seed(0)
    module = cls(12, zero_init=False, **kwargs)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_()
    return module


def test_state_dict_layout_is_documented():
    """The state_dict keys and shapes of enl_torch.base's table."""
    state = enl_torch.ENL(12, 4, dct_weights="learnable").state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == {
        "dct_weights": (9, 9),
        "theta.weight": (4, 12, 1, 1), "theta.bias": (4,),
        "phi.weight": (4, 12, 1, 1), "phi.bias": (4,),
        "g.weight": (4, 12, 1, 1), "g.bias": (4,),
        "out.weight": (12, 4, 1, 1), "out.bias": (12,),
    }
    assert "dct_weights" not in enl_torch.ENL(12).state_dict()


@pytest.mark.parametrize("kwargs", [dict(dct_weights="learnable"), dict(use_bias=False),
                                    dict(dct_weights=np.full((9, 9), 0.5))])
def test_state_dict_npz_round_trip_is_exact(tmp_path, kwargs):
    module = _random_block(**kwargs)
    path = tmp_path / "block.npz"
    torch.save(module.state_dict(), tmp_path / "block.pt")
    convert.state_dict_to_npz(tmp_path / "block.pt", path)
    with np.load(path) as data:
        assert set(data.files) >= set(enl_core.params.WEIGHT_NAMES)
        assert_close(data["theta.kernel"], module.theta.weight[:, :, 0, 0].t().detach(),
                     "float64")
    state = convert.npz_to_state_dict(path, use_bias=module.use_bias)
    twin = enl_torch.ENL(12, **kwargs)
    twin.load_state_dict(state, strict=True)
    for key, value in module.state_dict().items():
        assert torch.equal(twin.state_dict()[key], value), key


def test_blocks_found_inside_a_model(tmp_path):
    """A model's state_dict holds several blocks; each converts by its prefix."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 12, 1), _random_block(),
                                _random_block(enl_torch.NonLocal, sub_sample=True))
    state = model.state_dict()
    assert convert.find_blocks(state) == ["1.", "2."]
    convert.state_dict_to_npz(state, tmp_path / "nl.npz", prefix="2.")
    fresh = torch.nn.Sequential(torch.nn.Conv2d(3, 12, 1), enl_torch.ENL(12),
                                enl_torch.NonLocal(12, sub_sample=True))
    missing, unexpected = fresh.load_state_dict(
        convert.npz_to_state_dict(tmp_path / "nl.npz", prefix="2."), strict=False)
    assert not unexpected and all(not k.startswith("2.") for k in missing)
    x = torch.randn(1, 12, 6, 8)
    assert torch.equal(fresh[2](x), model[2](x))
    with pytest.raises(KeyError, match="blocks found"):
        convert.state_dict_to_block_weights(state, prefix="0.")


def test_npz_from_reference_reproduces_reference(tmp_path):
    """enl_core writes the .npz, torch reads it and computes the same numbers."""
    params = enl_core.init_params(12, 5, seed=4, dct_size=(4, 6), dct_weights="random")
    enl_core.save_npz(tmp_path / "ref.npz", params)
    module = enl_torch.ENL(12, 5, dct_size=(4, 6), dct_weights="learnable").double()
    module.load_npz(tmp_path / "ref.npz")
    x = np.random.default_rng(1).normal(size=(2, 7, 9, 12))
    z = module(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).permute(0, 2, 3, 1)
    assert_close(z.detach().numpy(), enl_core.enl_block(x, params, True, (4, 6)), "float64")
    module.save_npz(tmp_path / "back.npz")
    back = enl_core.load_npz(tmp_path / "back.npz")
    for key, value in params.as_dict().items():
        np.testing.assert_array_equal(back.as_dict()[key], value)


@pytest.mark.skipif(importlib.util.find_spec("enl_keras") is None
                    or importlib.util.find_spec("tf_keras") is None,
                    reason="needs enl-keras with tensorflow and tf_keras installed")
def test_keras_and_tf_keras_transfers_are_exact(tmp_path):
    """Keras 3 and tf_keras blocks -> torch and back through the shared layout
    (weights bit-exact, outputs within float32 tolerance), .keras files and a
    tf_keras checkpoint -> .npz (enl_keras.interchange) -> torch."""
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
    run = subprocess.run([sys.executable, str(HERE / "keras_convert_worker.py"), str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    results = json.loads((tmp_path / "results.json").read_text())
    exact = {k: v for k, v in results.items() if k.endswith(".exact")}
    assert len(exact) == 20 and all(exact.values()), exact
    assert results["tf_checkpoint.blocks"] == 2 and results["tf_model.names"]
    with np.load(tmp_path / "outputs.npz") as outputs:
        checks = sorted({name.rsplit(".", 1)[0] for name in outputs.files})
        assert len(checks) == 23
        for check in checks:
            assert_close(outputs[f"{check}.torch"], outputs[f"{check}.keras"], "float32",
                         err_msg=check)

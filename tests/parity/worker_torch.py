"""Parity worker: PyTorch ``enl_torch.ENL`` / ``NonLocal`` (NCHW).

The driver speaks channels-last; this worker transposes x to (B, C, H, W) and
z back, which is the layout contract of ENL-SPEC ("Shapes and names").
Native weight file: a ``state_dict`` saved with ``torch.save``.
"""

from __future__ import annotations

import numpy as np
import parity_worker

torch = enl_torch = None  # imported by setup(), inside the worker only


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


def _nhwc(z):
    return np.transpose(z.detach().numpy(), (0, 2, 3, 1))


class TorchAdapter(parity_worker.Adapter):
    name = "torch"

    def setup(self):
        global torch, enl_torch
        import torch

        import enl_torch
        torch.set_num_threads(1)

    def _construct(self, spec, weights):
        layer_name, kwargs = parity_worker.block_arguments(spec, weights)
        return getattr(enl_torch, layer_name)(spec["channels"], **kwargs)

    def build(self, spec, weights):
        block = self._construct(spec, weights)
        block.set_block_weights(weights)
        return block

    def forward(self, block, x):
        with torch.no_grad():
            return _nhwc(block(_nchw(x)))

    def forward_and_gradients(self, block, x, r):
        x = _nchw(x).requires_grad_(True)
        z = block(x)
        (z * _nchw(r)).sum().backward()
        grads = {"x": _nhwc(x.grad)}
        # Map the parameter gradients to interchange names with the module's
        # own exporter: overwrite each parameter with its gradient, export.
        with torch.no_grad():
            for parameter in block.parameters():
                if parameter.grad is None:
                    parameter.zero_()
                else:
                    parameter.copy_(parameter.grad)
        return _nhwc(z), {**block.get_block_weights(), **grads}

    def save_native(self, block, spec, x, prefix):
        path = prefix + ".pt"
        torch.save(block.state_dict(), path)
        return path

    def load_native(self, spec, path, x, template):
        block = self._construct(spec, template)
        block.load_state_dict(torch.load(path, weights_only=True), strict=True)
        return block


if __name__ == "__main__":
    parity_worker.run(TorchAdapter())

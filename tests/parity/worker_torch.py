"""Parity worker: PyTorch ``enl_torch.ENL`` / ``NonLocal`` (NCHW).

The driver speaks channels-last; this worker transposes x to (B, C, H, W) and
z back, which is the layout contract of docs/ENL-SPEC.md ("Shapes and names").
Native weight file: a ``state_dict`` saved with ``torch.save``.
"""

from __future__ import annotations

import collections

import numpy as np
import parity_protocol as protocol
import parity_worker

from enl_core import params as enl_params

torch = enl_torch = interchange = None  # imported by setup(), inside the worker only


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


def _nhwc(z):
    return np.transpose(z.detach().numpy(), (0, 2, 3, 1))


class TorchAdapter(parity_worker.Adapter):
    name = "torch"

    def setup(self):
        global torch, enl_torch
        import torch
        import torchvision  # noqa: F401 - before tensorflow: the other order segfaults

        import enl_torch

        torch.set_num_threads(1)
        # A torch user converts TF checkpoints and .keras files to .npz with
        # enl_keras.interchange (Keras 3 on TensorFlow, imported after torch);
        # importing it here overlaps its seconds with the other workers' start-up.
        global interchange
        from enl_keras import interchange

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

    def top_down_forward_and_gradients(self, spec, weights, laterals, cotangents):
        from enl_torch.detection.fpn import ENLFeaturePyramidNetwork

        levels, channels = protocol.TOP_DOWN_LEVELS, spec["channels"]
        kwargs = {"inter_channels": spec["inter_channels"]}
        if spec["block"] == "enl":
            kwargs.update(dct_size=tuple(spec["dct_size"]),
                          position_encoding=spec["position_encoding"])
        fpn = ENLFeaturePyramidNetwork([channels] * len(levels), channels, levels=levels,
                                       block_levels=spec["block_levels"], block=spec["block"],
                                       block_kwargs=kwargs)
        # Identity lateral (1x1) and output (3x3) convolutions: the FPN's
        # outputs are then its top-down stream fed with `laterals`.
        identity = torch.eye(channels)
        with torch.no_grad():
            for lateral, output in zip(fpn.inner_blocks, fpn.layer_blocks, strict=True):
                lateral[0].weight.copy_(identity[:, :, None, None])
                lateral[0].bias.zero_()
                output[0].weight.zero_()
                output[0].weight[:, :, 1, 1] = identity
                output[0].bias.zero_()
        blocks = {level: fpn.top_down_blocks[levels.index(level)]
                  for level in spec["block_levels"]}
        for level, block in blocks.items():
            block.set_block_weights(weights[level])

        inputs = collections.OrderedDict(
            (str(level), _nchw(laterals[level]).requires_grad_(True)) for level in levels)
        outputs = fpn(inputs)
        sum((outputs[str(level)] * _nchw(cotangents[level])).sum()
            for level in levels).backward()
        named = {f"lat.{level}": _nhwc(inputs[str(level)].grad) for level in levels}
        for level, block in blocks.items():
            with torch.no_grad():
                for parameter in block.parameters():
                    parameter.copy_(parameter.grad)
            named.update({f"{level}.{name}": value
                          for name, value in block.get_block_weights().items()})
        return {level: _nhwc(outputs[str(level)]) for level in levels}, named

    def load_foreign(self, spec, source, x, directory, config):
        if "tf_checkpoint" in source:
            files = interchange.tf_checkpoint_to_npz(source["tf_checkpoint"], directory)
        elif "keras_file" in source:
            files = interchange.keras_file_to_npz(source["keras_file"], directory)
        else:
            raise ValueError(f"{self.name} converts TF checkpoints and .keras files, "
                             f"received {source}")
        if len(files) != 1:
            raise ValueError(f"expected one block in {source}, the converter found {files}")
        path = next(iter(files.values()))
        weights = enl_params.load_npz(path).as_dict()
        if spec.get("dct_weights") == "fixed" and "dct_weights" not in weights:
            # A fixed d is configuration: a TF checkpoint holds variables only.
            weights["dct_weights"] = config["dct_weights"]
        block = self._construct(spec, weights)
        block.set_block_weights(weights)
        return block


if __name__ == "__main__":
    parity_worker.run(TorchAdapter())

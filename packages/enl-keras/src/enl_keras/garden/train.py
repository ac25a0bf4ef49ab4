"""Model Garden's vision train entry, with the ENL registrations imported.

Usage (all of ``official/vision/train.py``'s flags work)::

    python -m enl_keras.garden.train --experiment maskrcnn_resnetfpn_enl_coco \\
        --config_file experiments/src/enl_experiments/configs/garden/maskrcnn_r50_enl.yaml \\
        --mode train_and_eval --model_dir /tmp/enl_r50 \\
        --params_override 'runtime.distribution_strategy=mirrored,runtime.num_gpus=8'

This module adds nothing to the training loop: it imports
:mod:`enl_keras.garden.registry_imports` and runs Model Garden's own
``official.vision.train.main`` (orbit checkpoints, TensorBoard summaries,
COCO evaluation, distribution strategies, preemption recovery).
"""

from absl import app, flags
from official.common import flags as tfm_flags
from official.vision import train as vision_train

from enl_keras.garden import registry_imports  # noqa: F401  (registers the ENL parts)


def run(argv=None) -> None:
    """Defines Model Garden's flags and runs its ``main`` (``argv`` as for absl)."""
    tfm_flags.define_flags()
    flags.mark_flags_as_required(["experiment", "mode", "model_dir"])
    app.run(vision_train.main, argv=argv)


if __name__ == "__main__":
    run()

"""The pieces of :mod:`enl_torch.train`: distributed set-up, batch plan and
train step, LR schedule, exact-resume checkpoints, COCO evaluation."""

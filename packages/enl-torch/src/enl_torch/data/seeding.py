"""Seeds derived from tuples of ints, so that randomness depends on *what* is
drawn (seed, epoch, index, step) and not on which process or worker draws it."""

from __future__ import annotations

import numpy as np


def derived_seed(*entropy: int) -> int:
    """A 64-bit seed from a tuple of non-negative ints (``numpy.random.SeedSequence``)."""
    return int(np.random.SeedSequence([int(v) for v in entropy]).generate_state(
        1, dtype=np.uint64)[0])

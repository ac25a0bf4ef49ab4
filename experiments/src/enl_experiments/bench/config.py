"""What ``make bench`` measures and how hard it tries: one frozen config.

The default run is sized to finish in about 25 minutes on the 2-core CPU the
project is developed on; ``BENCH_QUICK=1`` (or ``--quick``) shrinks every axis
for a run of a few minutes. Every field can be overridden from the command line
(:mod:`enl_experiments.bench.cli`), and the whole config is written into the
JSON results so a report always says what produced it.
"""

from __future__ import annotations

import dataclasses
import os

from enl_core.validation import positive_int

# The paper's block (Sec. 4.1): FPN width C = 256, C' = C / 2.
CHANNELS = 256
INTER_CHANNELS = 128

# Square grids: N = side^2 from 1,024 to 65,536.
DEFAULT_SIDES = (32, 48, 64, 96, 128, 192, 256)
QUICK_SIDES = (32, 64, 128)

BLOCK_MODES = ("forward", "forward_backward")
FRAMEWORKS = ("torch", "keras")
SECTIONS = ("torch", "keras", "detectors", "training", "training_garden")
DETECTORS = ("fasterrcnn", "maskrcnn")
GIB = 1024**3


def parse_image_size(text: str) -> tuple[int, int]:
    """``"800x1088"`` -> ``(800, 1088)``.

    Raises:
        ValueError: not two positive integers joined by ``x``.
    """
    parts = str(text).lower().replace(",", "x").split("x")
    try:
        if len(parts) != 2:
            raise ValueError
        height, width = (int(p) for p in parts)
        return positive_int("image height", height), positive_int("image width", width)
    except (ValueError, TypeError):
        raise ValueError(f"`image_size` must look like 800x1088, received {text!r}") from None


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """Everything a bench run depends on.

    Attributes:
        quick: the small mode (recorded in the report).
        sides: grid sides of the block-scaling section; N = side^2.
        channels / inter_channels: C and C' of every block.
        batch: images per block call.
        warmup_s: minimum warm-up time per entry (at least one call).
        entry_budget_s: target timed seconds per entry; sets the repeat count.
        min_repeats / max_repeats: bounds on timed calls per entry.
        max_call_s: an entry whose predicted single call is slower is not run
            ("skipped", with the prediction) to keep the run within budget...
        always_run_n: ...unless its N is at most this: the targets compare ENL
            with NL and attention at N = 16,384, so those entries always run
            (when they fit in memory), unless predicted slower than
            ``hard_max_call_s`` per call (CPU SDPA's backward can be).
        memory_limit_gib: memory of the device being modelled; an entry whose
            predicted peak exceeds it is "infeasible" (24 GiB).
        keras_xla: also time ENL under ``tf.function(jit_compile=True)``.
        torch_compile: also time ENL under ``torch.compile`` (slow to compile).
        image_size: detector input (H, W) before padding to a multiple of 64.
        detectors: which detectors the cost table builds.
        train_steps: timed training steps per variant of the training table
            (after the first step, which measures the memory and warms up; each
            from the same weights and seed, so their spread is the machine's).
        sections: which sections run.
        implementations: scaling-section implementations to run; empty means all.
        device: "auto" (CUDA when present), "cpu" or "cuda".
        reuse_heap: scaling section on CPU: keep freed memory for the next
            call, as a GPU's caching allocator does: torch's heap (glibc) keeps freed blocks
            (:func:`enl_experiments.bench.measure.reuse_freed_heap`) and
            TensorFlow uses its BFC allocator. False times the defaults, which
            map fresh pages for every large tensor of every call.
    """

    quick: bool = False
    sides: tuple[int, ...] = DEFAULT_SIDES
    channels: int = CHANNELS
    inter_channels: int = INTER_CHANNELS
    batch: int = 1
    warmup_s: float = 0.3
    entry_budget_s: float = 2.0
    min_repeats: int = 3
    max_repeats: int = 15
    max_call_s: float = 3.0
    always_run_n: int = 16384
    hard_max_call_s: float = 30.0
    memory_limit_gib: float = 24.0
    keras_xla: bool = True
    torch_compile: bool = False
    image_size: tuple[int, int] = (800, 1088)
    detectors: tuple[str, ...] = DETECTORS
    train_steps: int = 4
    sections: tuple[str, ...] = SECTIONS
    implementations: tuple[str, ...] = ()
    device: str = "auto"
    reuse_heap: bool = True

    def __post_init__(self):
        if not self.sides:
            raise ValueError(f"`sides` must name at least one grid side, received {self.sides!r}")
        for side in self.sides:
            positive_int("sides", side)
        for name in ("channels", "inter_channels", "batch", "min_repeats", "max_repeats",
                     "train_steps"):
            positive_int(name, getattr(self, name))
        if self.max_repeats < self.min_repeats:
            raise ValueError(f"`max_repeats` ({self.max_repeats}) must be >= `min_repeats` "
                             f"({self.min_repeats})")
        for name in ("warmup_s", "entry_budget_s", "max_call_s", "hard_max_call_s",
                     "memory_limit_gib"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"`{name}` must be a positive number, received {value!r}")
        unknown = [s for s in self.sections if s not in SECTIONS]
        if unknown or not self.sections:
            raise ValueError(f"`sections` must be a non-empty subset of {SECTIONS}, "
                             f"received {self.sections!r}")
        unknown = [d for d in self.detectors if d not in DETECTORS]
        if unknown:
            raise ValueError(f"`detectors` must be a subset of {DETECTORS}, "
                             f"received {self.detectors!r}")
        for name in ("quick", "keras_xla", "torch_compile", "reuse_heap"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"`{name}` must be True or False, received "
                                 f"{getattr(self, name)!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"`device` must be 'auto', 'cpu' or 'cuda', received {self.device!r}")
        parse_image_size(f"{self.image_size[0]}x{self.image_size[1]}")

    @property
    def padded_image_size(self) -> tuple[int, int]:
        """The detector input: Model Garden needs multiples of 2^max_level = 64."""
        return tuple(-(-s // 64) * 64 for s in self.image_size)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> BenchConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise ValueError(f"unknown bench config fields {sorted(unknown)}")
        data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**data)


def quick_config(**overrides) -> BenchConfig:
    """The ``BENCH_QUICK=1`` mode: N <= 16,384, fewer repeats, Faster R-CNN only at 256 x 384
    (and the training table's Mask R-CNN at 256 x 384, one timed step).

    Building and tracing a detector costs about the same at any input size, so
    quick mode builds one detector's four variants instead of two detectors'.
    """
    base = dict(quick=True, sides=QUICK_SIDES, warmup_s=0.2, entry_budget_s=1.0, min_repeats=3,
                max_repeats=5, max_call_s=3.0, keras_xla=False, image_size=(256, 384),
                detectors=("fasterrcnn",), train_steps=1)
    base.update(overrides)
    return BenchConfig(**base)


def from_environment(**overrides) -> BenchConfig:
    """The default config, or the quick one when ``BENCH_QUICK`` is set to 1 / true."""
    quick = os.environ.get("BENCH_QUICK", "").strip().lower() in ("1", "true", "yes")
    return quick_config(**overrides) if quick else BenchConfig(**overrides)

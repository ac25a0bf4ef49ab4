"""Log-log plots of the scaling section (PNG, matplotlib's Agg backend)."""

from __future__ import annotations

import os

from enl_experiments.bench.config import BLOCK_MODES
from enl_experiments.bench.report import MODE_TITLES


def _series(entries: list[dict], implementation: str, mode: str, key: str):
    points = sorted((e["n"], e[key]) for e in entries
                    if e["implementation"] == implementation and e["mode"] == mode
                    and e["status"] == "ok" and e.get(key) is not None)
    return [n for n, _ in points], [v for _, v in points]


def scaling_plots(results: dict, out_dir: str) -> list[str]:
    """Time and peak memory against N, log-log, one PNG per framework and quantity.

    Returns:
        the PNG file names written (relative to ``out_dir``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for framework, section in results.get("sections", {}).items():
        entries = section.get("entries")
        if not entries:
            continue
        implementations = list(dict.fromkeys(e["implementation"] for e in entries))
        for key, label, stem in (("median_s", "median time (s)", "time"),
                                 ("peak_bytes", "peak memory above input (bytes)", "memory")):
            figure, axes = plt.subplots(1, len(BLOCK_MODES), figsize=(11, 4.2))
            for axis, mode in zip(axes, BLOCK_MODES, strict=True):
                for implementation in implementations:
                    sizes, values = _series(entries, implementation, mode, key)
                    if sizes:
                        axis.loglog(sizes, values, marker="o", label=implementation)
                axis.set_xscale("log", base=2)
                axis.set_xlabel("N = H x W")
                axis.set_ylabel(label)
                axis.set_title(f"{framework}: {MODE_TITLES[mode]}")
                axis.grid(True, which="both", alpha=0.3)
                axis.legend(fontsize=7)
            figure.tight_layout()
            name = f"{framework}_{stem}.png"
            figure.savefig(os.path.join(out_dir, name), dpi=110)
            plt.close(figure)
            written.append(name)
    return written

"""What machine the numbers come from: CPU, cores, memory, load, GPUs."""

from __future__ import annotations

import os
import platform
import subprocess

import psutil


def _cpu_model() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return model


def _gpus() -> list[str]:
    """GPU names from ``nvidia-smi``; empty where there is none (or no driver)."""
    try:
        names = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [name.strip() for name in names.splitlines() if name.strip()]


def machine_info() -> dict:
    """CPU model, core count, memory, load and GPUs, for a report's header.

    Returns:
        ``{"cpu", "logical_cores", "memory_bytes", "available_bytes",
        "load_average", "platform", "python", "gpus"}``.
    """
    memory = psutil.virtual_memory()
    return {"cpu": _cpu_model(), "logical_cores": os.cpu_count(), "memory_bytes": memory.total,
            "available_bytes": memory.available, "load_average": list(os.getloadavg()),
            "platform": platform.platform(), "python": platform.python_version(),
            "gpus": _gpus()}


def describe(info: dict) -> str:
    """:func:`machine_info` in one line: ``"<cpu>, 2 cores, 24 GiB RAM, no GPU"``."""
    gpus = info.get("gpus") or []
    return (f"{info['cpu']}, {info['logical_cores']} cores, "
            f"{info['memory_bytes'] / 2 ** 30:.0f} GiB RAM, "
            + (f"GPUs: {', '.join(gpus)}" if gpus else "no GPU"))

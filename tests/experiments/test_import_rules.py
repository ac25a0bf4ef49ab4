"""Only the framework children of enl_experiments import a framework.

The main job's and the bench's own processes start TensorFlow, torch or Keras
only in child processes (torchvision imported after TensorFlow segfaults, and
Keras picks its backend once per process), so every other module must import
without loading one. Each module is imported in a fresh interpreter and the
frameworks it pulled into ``sys.modules`` are reported by name.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import enl_experiments

FRAMEWORKS = ("tensorflow", "tf_keras", "keras", "torch", "torchvision", "official", "jax")
# The modules that run in a child process and may import their framework at import time.
FRAMEWORK_CHILDREN = {
    "enl_experiments.main.garden_job",  # Model Garden (TensorFlow, tf_keras)
    "enl_experiments.main.torch_job",  # torchvision
    "enl_experiments.bench.keras_backend",  # Keras 3 on TensorFlow
    "enl_experiments.bench.torch_backend",  # torch
}

PROBE = """
import importlib, json, sys
frameworks = {frameworks!r}
found = {{}}
for name in {modules!r}:
    before = set(sys.modules)
    importlib.import_module(name)
    loaded = sorted(m for m in set(sys.modules) - before if m.split(".")[0] in frameworks)
    if loaded:
        found[name] = sorted({{m.split(".")[0] for m in loaded}})
print(json.dumps(found))
"""


def neutral_modules() -> list[str]:
    names = [info.name for info in pkgutil.walk_packages(enl_experiments.__path__,
                                                         "enl_experiments.")]
    # __main__ modules run their program when imported.
    return sorted(n for n in names if n not in FRAMEWORK_CHILDREN
                  and not n.endswith(".__main__"))


def frameworks_imported_by(modules: list[str]) -> dict[str, list[str]]:
    probe = PROBE.format(frameworks=FRAMEWORKS, modules=modules)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=300, check=True)
    return json.loads(result.stdout.splitlines()[-1])


def test_the_listed_children_exist():
    names = {info.name for info in pkgutil.walk_packages(enl_experiments.__path__,
                                                         "enl_experiments.")}
    assert FRAMEWORK_CHILDREN <= names


def test_framework_neutral_modules_import_no_framework():
    modules = neutral_modules()
    assert "enl_experiments.main.cli" in modules and "enl_experiments.bench.cli" in modules
    assert frameworks_imported_by(modules) == {}


def test_the_probe_sees_a_framework_import():
    # The check can fail: a framework child does import its framework.
    assert frameworks_imported_by(["enl_experiments.bench.torch_backend"]) == {
        "enl_experiments.bench.torch_backend": ["torch"]}

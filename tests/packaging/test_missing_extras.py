"""A missing optional part is named with its ``pip install`` line, not a deep ModuleNotFoundError.

Each case runs in a fresh interpreter where an import hook makes the listed
top-level modules uninstallable (``ModuleNotFoundError``, as when they are not
installed).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

HIDE = """
import sys

class Hide:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {hidden!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Hide())
import {module}
"""


def _import_without(module: str, hidden: set[str], backend: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    if backend:
        env["KERAS_BACKEND"] = backend
    result = subprocess.run([sys.executable, "-c", HIDE.format(hidden=hidden, module=module)],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode != 0, f"import {module} worked without {hidden}"
    return result.stderr.strip().splitlines()[-1]


def test_garden_without_its_extra_names_it():
    last = _import_without("enl_keras.garden", {"tf_keras"}, "jax")
    assert last == ("ImportError: enl_keras.garden needs `pip install enl-keras[garden]` "
                    "(missing: tf_keras)")


@pytest.mark.parametrize(("backend", "hidden"), [(None, {"tensorflow"}),
                                                 ("jax", {"jax", "jaxlib"}),
                                                 ("torch", {"torch"})])
def test_enl_keras_without_a_backend_names_the_extras(backend, hidden):
    last = _import_without("enl_keras", hidden, backend)
    assert last.startswith("ImportError: enl_keras needs a Keras 3 backend")
    for extra in ("enl-keras[tensorflow]", "enl-keras[torch]", "enl-keras[jax]"):
        assert extra in last
    assert f"KERAS_BACKEND={backend or '<unset: tensorflow>'}" in last

"""The repository's four distributions (shared by the packaging tests)."""

from __future__ import annotations

import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = {  # distribution name -> (folder, import name)
    "enl-core": ("packages/enl-core", "enl_core"),
    "enl-keras": ("packages/enl-keras", "enl_keras"),
    "enl-torch": ("packages/enl-torch", "enl_torch"),
    "enl-experiments": ("experiments", "enl_experiments"),
}

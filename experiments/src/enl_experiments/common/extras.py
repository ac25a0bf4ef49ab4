"""Optional parts of enl-experiments: each framework comes with an extra.

The main job and the bench import a framework only in their child processes,
so the parent checks, before any work starts, that what a child will import is
installed, and names the ``pip install`` line when it is not.
"""

from __future__ import annotations

import importlib.util


class MissingExtra(ImportError):
    """A framework the run needs is not installed; the message names the extra."""


def require_modules(what: str, modules: tuple[str, ...], extra: str) -> None:
    """Checks, without importing them, that the top-level ``modules`` are installed.

    Args:
        what: what needs them, for the message ("the garden framework").
        modules: top-level module names (:func:`importlib.util.find_spec` of a
            submodule would import its parent, a framework).
        extra: the extra of enl-experiments that installs them.

    Raises:
        MissingExtra: naming the missing modules and ``pip install enl-experiments[<extra>]``.
        ValueError: naming `modules` when one is not a top-level name.
    """
    dotted = [name for name in modules if "." in name]
    if dotted:
        raise ValueError(f"`modules` must be top-level names, received {dotted!r}")
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtra(f"{what} needs `pip install enl-experiments[{extra}]` "
                           f"(missing: {', '.join(missing)})")

"""Markdown tables for the reports (``summary.md``, ``report.md``, the README)."""

from __future__ import annotations


def table(header: list[str], rows: list[list]) -> str:
    """A GitHub Markdown table; cells are written with ``str``.

    Args:
        header: column titles.
        rows: one list of cells per row, as long as ``header``.

    Returns:
        The table as text, no trailing newline.

    Raises:
        ValueError: a row whose length differs from the header's (names the row).

    Example:
        >>> print(table(["a", "b"], [["1", "2"]]))
        | a | b |
        |---|---|
        | 1 | 2 |
    """
    for index, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(f"`rows[{index}]` must have {len(header)} cells (as the header), "
                             f"received {len(row)}: {row!r}")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)

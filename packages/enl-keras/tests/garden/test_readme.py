"""The README's Model Garden example runs as written."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.garden


def test_garden_quickstart(readme_example):
    exec(compile(readme_example("garden-quickstart"), "README:garden-quickstart", "exec"), {})

"""Golden-file scenarios: readable timelines of what every node saw. ``REWRITE=1`` regenerates."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .scenario_runner import run_file

DATA = Path(__file__).parent / "testdata"


@pytest.mark.parametrize("path", sorted(DATA.glob("*.txt")), ids=lambda p: p.stem)
def test_scenario(path: Path) -> None:
    expected, actual = run_file(path)
    if os.environ.get("REWRITE"):
        path.write_text(actual)
        return
    assert actual == expected

"""``python -m benchmarks.trace_cost``: traced and untraced requests through the real relay, side by side."""

from __future__ import annotations

import re

import pytest

from benchmarks import trace_cost
from broker import metadata as md
from broker import tracing


def test_traced_requests_carry_a_checked_entry_with_their_own_parent() -> None:
    first, other = trace_cost.traced(1), trace_cost.traced(3)
    assert md.route_of(first, md.COMPOSITE_MIME) == md.route_of(trace_cost.route_only(1), md.COMPOSITE_MIME)
    content = md.find_entry(first, tracing.TRACE_MIME)
    assert content is not None and tracing.ENTRY.fullmatch(content)
    assert content != md.find_entry(other, tracing.TRACE_MIME)


def test_one_run_prints_both_costs_and_their_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    trace_cost.main(["--requests", "640", "--rounds", "2"])
    out = capsys.readouterr().out
    untraced = float(re.search(r"\| untraced, best \| ([\d.]+) \|", out).group(1))  # type: ignore[union-attr]
    traced = float(re.search(r"\| traced, best \| ([\d.]+) \|", out).group(1))  # type: ignore[union-attr]
    ratio = float(re.search(r"\| traced / untraced, median of rounds \| ×([\d.]+) \|", out).group(1))  # type: ignore[union-attr]
    assert untraced > 0 and traced > 0 and ratio > 0, out

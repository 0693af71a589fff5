"""``LogBudget``: lines of one kind past the budget are counted and told in one line, so a
storm of registrations does not cost a formatted line each (issue 13)."""

from __future__ import annotations

import logging

import pytest

from broker.logformat import LogBudget


def test_lines_past_the_budget_are_counted_and_told_once(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("rsbroker.test.budget")
    budget = LogBudget(logger, "registrations", per_s=3)
    with caplog.at_level(logging.INFO, logger="rsbroker.test.budget"):
        allowed = [budget.allow(10.0 + i / 100) for i in range(10)]  # ten in one second
        assert allowed == [True] * 3 + [False] * 7
        assert caplog.records == []
        assert budget.allow(11.2)  # a new second: the count of the last one comes first
    assert [r.getMessage() for r in caplog.records] == ["7 more registrations not logged one by one (over 3 a second)"]


def test_a_quiet_second_tells_nothing(caplog: pytest.LogCaptureFixture) -> None:
    budget = LogBudget(logging.getLogger("rsbroker.test.budget"), "registrations", per_s=3)
    with caplog.at_level(logging.INFO, logger="rsbroker.test.budget"):
        assert all(budget.allow(t) for t in (1.0, 1.5, 2.0, 3.9))
    assert caplog.records == []

"""The command line: profiles, and names checked against the issue's lists before anything starts."""

from __future__ import annotations

import pytest

from benchmarks.__main__ import parser


@pytest.mark.parametrize(("argv", "plan"), [([], "full"), (["--quick"], "quick"), (["--plan", "tiny"], "tiny")])
def test_profile_defaults_to_full(argv: list[str], plan: str) -> None:
    assert parser().parse_args(["run", *argv]).plan == plan


def test_quick_and_plan_exclude_each_other() -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["run", "--quick", "--plan", "tiny"])


def test_only_and_scenario_accept_the_issue_names() -> None:
    args = parser().parse_args(["run", "--only", "broker-1,nats", "--scenario", "fire-and-forget"])
    assert args.only == {"broker-1", "nats"}
    assert args.scenario == {"fire-and-forget"}


def test_unknown_system_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["run", "--only", "kafka"])
    assert "unknown system kafka" in capsys.readouterr().err


def test_only_selects_single_lineups_and_the_suite_filters_by_them() -> None:
    from benchmarks.suite import select

    args = parser().parse_args(["run", "--only", "broker-1[pyclient],nats[nats-py]"])
    assert args.only == {"broker-1[pyclient]", "nats[nats-py]"}
    assert [l.key for l in select(args.only)] == ["nats[nats-py]", "broker-1[pyclient]"]
    assert {l.key for l in select({"nats"})} == {"nats[nats-py]", "nats[nats-py-callback]"}
    with pytest.raises(SystemExit):
        parser().parse_args(["run", "--only", "broker-1[kafka]"])

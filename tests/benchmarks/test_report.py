"""Ratios and the table are computed from rows of one run; a missing row is said, not guessed."""

from __future__ import annotations

from benchmarks import ratios, report
from benchmarks.suite import Outcome


def row(system: str, client: str, inflight: int, ops: float, **extra: object) -> dict:
    return {"system": system, "client": client, "scenario": "request-response", "inflight": inflight,
            "payload_bytes": 100, "ops_per_s": ops, "p50_ms": 1.0, "p99_ms": 2.0, **extra}  # fmt: skip


def test_ratio_uses_the_best_denominator_and_judges_the_goal() -> None:
    rows = [row("broker-1", "frames", 64, 90_000.0), row("nats", "nats-py", 64, 30_000.0),
            row("nats", "nats-py-callback", 64, 50_000.0)]  # fmt: skip
    vs_nats = ratios.ratios(rows)["vs_nats"]
    assert vs_nats["value"] == 1.8
    assert vs_nats["met"] is False
    assert "nats-py-callback" in vs_nats["denominator"]


def test_ratio_without_its_rows_is_marked_missing() -> None:
    capacity = ratios.ratios([row("broker-1", "frames", 256, 1.0)])["issue3_capacity"]
    assert capacity["value"] is None and capacity["met"] is None and "not measured" in capacity["missing"]


def test_cpu_per_million_comes_from_the_broker_pid_over_the_window() -> None:
    rows = [row("broker-1", "frames", 64, 50_000.0, window_s=2.0, cpu_s={"broker": 1.5, "loadgen": 0.4})]
    (figure,) = report.cpu_per_million(rows)
    assert figure["broker_cpu_s_per_million"] == 15.0  # 1.5 s for 100,000 requests
    assert figure["broker_cores_busy"] == 0.75


def test_markdown_lists_unavailable_lineups_with_their_reason() -> None:
    outcome = Outcome(results=[row("raw-asyncio", "frames", 64, 1000.0)],
                      unavailable={"broker-3-cross[frames]": "not available: no forwarding"})  # fmt: skip
    text = report.markdown(report.document(outcome, "python -m benchmarks run", "tiny"))
    assert "| raw-asyncio | frames | request-response | 100 B | 64 | 1,000 |" in text
    assert "broker-3-cross[frames] | | | | | not available: no forwarding" in text


def test_cpu_model_ratio_follows_the_costs_per_request() -> None:
    # Direct: generator and responder 1 µs each -> 1 M/s on two cores (each on its own core).
    # Relayed: broker 3 µs -> at most 333 k/s on its own core; ratio 1/3.
    rows = [
        row("raw-asyncio", "frames", 256, 100_000.0, window_s=1.0, cpu_s={"loadgen": 0.1, "server": 0.1}),
        row("broker-1", "frames", 256, 100_000.0, window_s=1.0, cpu_s={"loadgen": 0.1, "broker": 0.3, "provider": 0.1}),
    ]
    model = ratios.cpu_model(rows, "issue3_capacity")
    assert model["value"] == 0.333
    assert model["met"] is False
    assert model["us_per_request"]["broker"] == 3.0
    assert ratios.cpu_model(rows, "issue3_rsocketpy_hop")["value"] is None  # its rows were not measured


def test_paired_rounds_decide_the_goal_by_their_median() -> None:
    rows = [row("broker-1", "frames", 64, 90_000.0), row("nats", "nats-py", 64, 100_000.0)]
    vs_nats = ratios.ratios(rows, {"vs_nats": [1.0, 3.0, 2.5]})["vs_nats"]
    assert vs_nats["value"] == 0.9  # the matrix rows alone miss the goal ...
    assert vs_nats["paired_value"] == 2.5 and vs_nats["met"] is True  # ... the paired median meets it


def test_a_round_ratio_takes_the_best_denominator_of_that_round() -> None:
    (vs_nats,) = [r for r in ratios.RATIOS if r.name == "vs_nats"]
    ops = {("broker-1", "frames"): 60.0, ("nats", "nats-py"): 20.0, ("nats", "nats-py-callback"): 30.0}
    assert ratios.round_ratio(vs_nats, ops) == 2.0
    assert ratios.round_ratio(vs_nats, {("broker-1", "frames"): 60.0}) is None

"""The simulator in the default run: a few hundred seeded schedules with zero violations,
plus proof that it catches bugs (mutants) and replays exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest

from cluster.raft import core, simcli
from cluster.raft import log as raft_log
from cluster.raft.messages import ReadState
from cluster.raft.sim import SimOptions, simulate
from cluster.raft.statemachine import ConfigStateMachine

DEFAULT_RUNS = 300


def test_seeded_runs_have_no_violations() -> None:
    failing = {}
    ops = 0
    for seed in range(DEFAULT_RUNS):
        result = simulate(seed)
        ops += result.ops_checked
        if result.violations:
            failing[seed] = result.violations
    assert failing == {}
    assert ops > DEFAULT_RUNS * 10  # the clients really did something


def test_three_node_runs_without_membership_changes() -> None:
    opts = replace(SimOptions(), nodes=3, membership_changes=False)
    assert all(not simulate(seed, opts).violations for seed in range(100))


def test_a_seed_replays_exactly() -> None:
    assert simulate(1234) == simulate(1234)


def test_a_seed_replays_in_another_process_with_other_hash_seeds() -> None:
    code = "from cluster.raft.sim import simulate; print(simulate(77))"
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": hs},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for hs in ("1", "2")
    }
    assert len(outputs) == 1


def test_catches_a_node_that_votes_for_stale_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(raft_log.RaftLog, "is_up_to_date", lambda self, index, term: True)
    assert any(simulate(seed).violations for seed in range(100))


def test_catches_reads_without_read_index(monkeypatch: pytest.MonkeyPatch) -> None:
    def stale_read(self: core.Raft, ctx: bytes) -> None:
        self.read_states.append(ReadState(self.log.committed, ctx))

    monkeypatch.setattr(core.Raft, "read_index", stale_read)
    failing = [seed for seed in range(50) if simulate(seed).violations]
    assert failing
    assert any("linearizability" in v for v in simulate(failing[0]).violations)


def test_cli_prints_the_contract_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert simcli.main(["--nodes", "3", "--runs", "5", "--seed", "7", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"runs", "violations", "failing_seeds", "ops_checked"} <= report.keys()
    assert report["runs"] == 5 and report["violations"] == 0 and report["failing_seeds"] == []


@pytest.mark.slow
def test_ten_thousand_runs() -> None:
    failing = [seed for seed in range(10_000) if simulate(seed).violations]
    assert failing == []


def test_catches_retried_writes_applied_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ConfigStateMachine, "_remember", lambda self, origin, rid: True)
    assert any(simulate(seed).violations for seed in range(300))


def test_the_core_and_the_simulator_import_no_asyncio_shell() -> None:
    """``cluster.raft`` imports nothing itself: the sans-IO core, the simulator and the
    validators load without the node, its transports or the cluster's crypto."""
    code = (
        "import sys, cluster.raft.core, cluster.raft.sim, cluster.raft.validation; "
        "print(sorted(m for m in sys.modules if m in ('cluster.raft.node', 'cluster.raft.transport', 'cluster.crypto')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr

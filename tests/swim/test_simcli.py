"""``rsbroker sim gossip``: the JSON contract and determinism."""

from __future__ import annotations

import json

from rsbroker.cli import main as rsbroker

ARGS = ["sim", "gossip", "--nodes", "5", "--loss", "0.1", "--seed", "7", "--steady", "20", "--trials", "2", "--json"]


def test_json_has_the_stable_keys_and_is_deterministic(capsys) -> None:
    assert rsbroker(ARGS) == 0
    first = json.loads(capsys.readouterr().out)
    for key in ("nodes", "loss", "seed", "false_dead_per_node_hour", "bytes_per_node_s"):
        assert key in first
    for key in ("detection_s", "convergence_s"):
        assert set(first[key]) >= {"median", "p99"}
        assert first[key]["median"] > 0 and first[key]["p99"] >= first[key]["median"]
    assert (first["nodes"], first["loss"], first["seed"]) == (5, 0.1, 7)
    assert first["formed"] is True and first["bytes_per_node_s"] > 0
    assert rsbroker(ARGS) == 0
    assert json.loads(capsys.readouterr().out) == first


def test_bad_arguments_exit_2(capsys) -> None:
    assert rsbroker(["sim", "gossip", "--loss", "1.5"]) == 2
    assert "--loss" in capsys.readouterr().err


def test_fleet_scenario_reports_convergence_bytes_cpu_and_memory(capsys) -> None:
    assert rsbroker(["sim", "gossip", "--nodes", "3", "--routes", "600", "--seed", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["converged"] is True and (out["nodes"], out["routes"]) == (3, 600)
    assert out["converge_s"] > 0 and out["bytes_per_node_s_converging"] > out["bytes_per_node_s_steady"] > 0
    assert out["cpu_s"] >= 0 and out["bytes_per_route"]["table"] > 0
    assert out["one_change"]["moved"] is True
    assert rsbroker(["sim", "gossip", "--nodes", "5", "--routes", "3"]) == 2
    assert "--routes" in capsys.readouterr().err

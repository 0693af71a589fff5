"""``rsbroker status --admin HOST:PORT``: a node's view of the cluster, as a table.

It reads ``GET /api/v1/topology`` (and ``/api/v1/raft``) and prints one row per node:
state, addresses, connections, services, and whether this node's link to it is up.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from admin.ctl import ADMIN_ENV, DEFAULT_ADMIN, TOKEN_ENV, AdminError, call, table



def render(topology: dict[str, Any], raft: dict[str, Any] | None) -> str:
    rows = [("NODE", "STATE", "TCP", "WS", "CONNS", "LINK", "SERVICES")]
    for node in topology["nodes"]:
        rows.append(
            (
                node["node_id"] + (" *" if node["node_id"] == topology.get("self") else ""),
                node.get("state", "?"),
                node.get("tcp") or "-",
                node.get("ws") or "-",
                str(node.get("connections", "-")),
                node.get("link") or "-",
                ", ".join(node.get("services") or []) or "-",
            )
        )
    lines = [table(rows)]
    if raft is not None:
        lines.append("")
        lines.append(
            f"raft: leader {raft.get('leader') or 'none'}, term {raft.get('term')}, "
            f"commit {raft.get('commit_index')}, applied {raft.get('applied_index')}"
        )
    lines.append("(* = the node answering)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rsbroker status", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--admin",
        default=os.environ.get(ADMIN_ENV, DEFAULT_ADMIN),
        help=f"admin address of any node (default: {DEFAULT_ADMIN}; env {ADMIN_ENV})",
    )
    parser.add_argument(
        "--token", default=os.environ.get(TOKEN_ENV), help=f"bearer token when the admin API requires one (env {TOKEN_ENV})"
    )
    parser.add_argument("--json", action="store_true", help="print the raw topology JSON")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each answer (default: %(default)s)")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        topology = call(args.admin, "/api/v1/topology", args.token, args.timeout)
    except AdminError as exc:
        print(f"rsbroker status: {exc}", file=sys.stderr)
        return 1
    try:
        raft = call(args.admin, "/api/v1/raft", args.token, args.timeout)
    except AdminError:
        raft = None
    print(json.dumps(topology, indent=2) if args.json else render(topology, raft))
    return 0

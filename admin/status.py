"""``rsbroker status --admin HOST:PORT``: a node's view of the cluster, as a table.

It reads ``GET /api/v1/topology`` (and ``/api/v1/raft``) and prints one row per node:
state, addresses, connections, services, and whether this node's link to it is up.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any


def fetch(admin: str, path: str, token: str | None, timeout: float) -> Any:
    request = urllib.request.Request(f"http://{admin}{path}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def _reason(exc: urllib.error.HTTPError) -> str:
    """The admin API's JSON ``error`` text, or the HTTP reason phrase."""
    try:
        return str(json.load(exc)["error"])
    except (ValueError, KeyError, TypeError, OSError):
        return str(exc.reason)


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
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    if raft is not None:
        lines.append("")
        lines.append(
            f"raft: leader {raft.get('leader') or 'none'}, term {raft.get('term')}, "
            f"commit {raft.get('commit_index')}, applied {raft.get('applied_index')}"
        )
    lines.append("(* = the node answering)")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rsbroker status", description=__doc__.split("\n\n")[0])
    parser.add_argument("--admin", default="127.0.0.1:7002", help="admin address of any node (default: %(default)s)")
    parser.add_argument("--token", help="bearer token when the admin API requires one")
    parser.add_argument("--json", action="store_true", help="print the raw topology JSON")
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    try:
        topology = fetch(args.admin, "/api/v1/topology", args.token, args.timeout)
        try:
            raft = fetch(args.admin, "/api/v1/raft", args.token, args.timeout)
        except urllib.error.HTTPError:
            raft = None
    except urllib.error.HTTPError as exc:
        print(f"rsbroker status: http://{args.admin}/api/v1/topology answered {exc.code}: {_reason(exc)}", file=sys.stderr)
        if exc.code in (401, 403):
            print("  (this node authenticates: pass --token with a JWT of role admin)", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"rsbroker status: cannot read http://{args.admin}/api/v1/topology: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(topology, indent=2) if args.json else render(topology, raft))
    return 0

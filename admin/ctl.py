"""``rsbroker config|services|connections|members``: the admin API from a shell.

Tables for people by default, ``--json`` (the API's own JSON) for scripts. The admin token
comes from ``--token`` or ``RSBROKER_TOKEN`` and is sent as ``Authorization: Bearer``; the
URL names the admin address itself, so the Host header is the one the node listens on.
Exit codes: 0 done, 1 the node refused or could not be reached (its error is printed),
2 usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any, Callable, Sequence

#: where the admin address and the token come from when no flag gives them
ADMIN_ENV = "RSBROKER_ADMIN"
TOKEN_ENV = "RSBROKER_TOKEN"
DEFAULT_ADMIN = "127.0.0.1:7002"


class AdminError(Exception):
    """The node answered with an error status, or could not be reached."""


def base_url(admin: str) -> str:
    """``HOST:PORT`` → ``http://HOST:PORT``; an address with a scheme (https://...) is kept."""
    return admin.rstrip("/") if "://" in admin else f"http://{admin}"


def call(admin: str, path: str, token: str | None, timeout: float, method: str = "GET", body: Any = None) -> Any:
    """One admin API request; the decoded JSON answer, or AdminError with the node's reason."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base_url(admin) + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        try:
            reason = json.load(exc).get("error", exc.reason)
        except (ValueError, AttributeError):
            reason = exc.reason
        hint = (
            f" (this node authenticates: pass --token or set {TOKEN_ENV} to a JWT with role admin)"
            if exc.code in (401, 403)
            else ""
        )
        raise AdminError(f"{method} {path}: HTTP {exc.code}: {reason}{hint}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise AdminError(f"cannot reach {base_url(admin)}{path}: {exc}") from None


def table(rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, the first row being the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows)


def _cell(value: Any) -> str:
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return value if isinstance(value, str) else json.dumps(value)


# -- renderers: the API's JSON → a table ------------------------------------------------------


def render_services(body: dict[str, Any]) -> str:
    rows = [("SERVICE", "POLICY", "INSTANCE", "NODE", "REMOTE", "WEIGHT", "OUTSTANDING")]
    for service, entry in sorted(body["services"].items()):
        for p in entry["providers"] or [{}]:
            rows.append((service, entry.get("policy", "-"), *(_cell(p.get(k)) for k in ("instance", "node", "remote", "weight", "outstanding"))))
    return table(rows)


def render_connections(body: dict[str, Any]) -> str:
    rows: list[tuple[str, ...]] = [("ID", "TRANSPORT", "PEER", "STATE", "PRINCIPAL", "INSTANCE", "SERVICES", "STREAMS", "AGE_S")]
    for c in body["connections"]:
        rows.append(tuple(_cell(c.get(k)) for k in ("id", "transport", "peer", "state", "principal", "instance", "services", "streams", "connected_s")))
    return table(rows)


def render_members(body: dict[str, Any]) -> str:
    rows: list[tuple[str, ...]] = [("NODE", "STATE", "INCARNATION", "GOSSIP", "TCP", "ADMIN", "SERVICES")]
    for m in body["members"]:
        meta = m.get("meta") or {}
        rows.append(tuple(_cell(v) for v in (m["node_id"], m["state"], m.get("incarnation"), m.get("address"), meta.get("tcp"), meta.get("admin"), m.get("services"))))
    return table(rows)


def render_config(body: dict[str, Any]) -> str:
    if "items" in body:
        rows = [("KEY", "VALUE")] + [(key, json.dumps(value)) for key, value in sorted(body["items"].items())]
        return table(rows)
    if body.get("deleted"):
        return f"deleted {body['key']}"
    suffix = f" (raft index {body['index']})" if "index" in body else ""
    return f"{body['key']} = {json.dumps(body['value'])}{suffix}"


# -- the command line --------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--admin",
        default=os.environ.get(ADMIN_ENV, DEFAULT_ADMIN),
        help=f"admin address of the node, HOST:PORT or https://HOST:PORT (default: {DEFAULT_ADMIN}; env {ADMIN_ENV})",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"admin bearer JWT (role admin) when the API requires one (default: none; env {TOKEN_ENV})",
    )
    parser.add_argument("--json", action="store_true", help="print the API's JSON instead of a table (for scripts)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the node's answer (default: %(default)s)")


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not JSON: {text!r} (quote strings: '\"text\"')") from None


def build_parser(command: str) -> argparse.ArgumentParser:
    """The parser of one command: ``config``, ``services``, ``connections`` or ``members``."""
    parser = argparse.ArgumentParser(prog=f"rsbroker {command}", description=COMMANDS[command][0])
    if command != "config":
        _common(parser)
        return parser
    sub = parser.add_subparsers(dest="action", required=True)
    list_p = sub.add_parser("list", help="keys and values, optionally under a prefix")
    list_p.add_argument("--prefix", default="", help="only keys starting with this (default: all keys)")
    get_p = sub.add_parser("get", help="one key's value")
    get_p.add_argument("key", help="config key, e.g. services/orders or acl/ops")
    put_p = sub.add_parser("put", help="set a key; the leader validates the value and answers with the error if refused")
    put_p.add_argument("key", help="config key, e.g. services/orders")
    put_p.add_argument("value", type=_value, help='the value as JSON, e.g. \'{"policy": "weighted"}\'')
    delete_p = sub.add_parser("delete", help="remove a key")
    delete_p.add_argument("key", help="config key to remove")
    for p in (list_p, get_p):
        p.add_argument("--stale", action="store_true", help="read this node's copy without a Raft read barrier")
    for p in (list_p, get_p, put_p, delete_p):
        _common(p)
    return parser


def _config_request(args: argparse.Namespace) -> tuple[str, str, Any]:
    from urllib.parse import quote, urlencode

    stale = {"stale": "true"} if getattr(args, "stale", False) else {}
    if args.action == "list":
        query = urlencode({**({"prefix": args.prefix} if args.prefix else {}), **stale})
        return "GET", "/api/v1/config" + (f"?{query}" if query else ""), None
    path = "/api/v1/config/" + quote(args.key, safe="/")
    if args.action == "get":
        return "GET", path + (f"?{urlencode(stale)}" if stale else ""), None
    if args.action == "put":
        return "PUT", path, args.value
    return "DELETE", path, None


#: command → (description, (method, path, body) of the request, renderer)
COMMANDS: dict[str, tuple[str, Callable[[argparse.Namespace], tuple[str, str, Any]], Callable[[dict[str, Any]], str]]] = {
    "config": ("Read and change the cluster's config store (Raft).", _config_request, render_config),
    "services": ("Services and their providers as one node sees them.", lambda a: ("GET", "/api/v1/services", None), render_services),
    "connections": ("Client and link connections of one node.", lambda a: ("GET", "/api/v1/connections", None), render_connections),
    "members": ("Cluster members and their gossip state.", lambda a: ("GET", "/api/v1/members", None), render_members),
}


def run(command: str, argv: list[str]) -> int:
    args = build_parser(command).parse_args(argv)
    _, request, render = COMMANDS[command]
    method, path, body = request(args)
    try:
        answer = call(args.admin, path, args.token, args.timeout, method, body)
    except AdminError as exc:
        print(f"rsbroker {command}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2) if args.json else render(answer))
    return 0


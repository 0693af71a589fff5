"""The ``rsbroker`` command line: one entry point, one sub-command per job.

Sub-commands whose code lives in other packages are imported lazily so that
``rsbroker serve`` starts without loading the simulators or the certificate tools.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from typing import Any

from broker.server import Node, raise_open_file_limit
from broker.settings import Settings, SettingsError, add_arguments, load

#: sub-command -> "module:function"; each function takes argv (list[str]) and returns an exit code.
_DELEGATED = {
    ("sim", "gossip"): "cluster.swim.simcli:main",
    ("sim", "raft"): "cluster.raft.simcli:main",
    ("token",): "broker.auth.tools:token_main",
    ("certs",): "broker.auth.tools:certs_main",
    ("cluster",): "cluster.local:main",
    ("status",): "admin.status:main",
    ("demo-provider",): "broker.demo:provider_main",
    ("devices",): "broker.devices.cli:main",
}


def _delegate(target: str, argv: list[str]) -> int:
    module_name, func_name = target.split(":")
    return int(getattr(importlib.import_module(module_name), func_name)(argv) or 0)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    for prefix, target in _DELEGATED.items():
        if tuple(args[: len(prefix)]) == prefix:
            return _delegate(target, args[len(prefix) :])
    if args[:1] == ["serve"]:
        return serve_main(args[1:])
    if args[:1] == ["demo"]:
        return demo_main(args[1:])
    parser = argparse.ArgumentParser(prog="rsbroker", description="A clustered RSocket broker.")
    parser.add_argument(
        "command",
        choices=["serve", "demo", "cluster", "status", "demo-provider", "devices", "sim", "token", "certs"],
        help="serve: run a node; demo: a node with a demo provider; cluster up|down: a local cluster; "
        "status: a node's view of the cluster; demo-provider: the demo service; devices: a simulated device fleet; sim gossip|raft: simulators; "
        "token: mint a development JWT; certs: make a CA and certificates",
    )
    parser.parse_args(args[:1] or ["--help"])
    return 2


def _run(coro: Any) -> Any:
    """Run on uvloop where it is installed (it is a dependency on Linux and macOS)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return asyncio.run(coro)
    return uvloop.run(coro)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _load_settings(parser: argparse.ArgumentParser, argv: list[str]) -> Settings:
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return load(args)
    except SettingsError as exc:
        parser.exit(2, f"rsbroker: {exc}\n")
        raise  # unreachable: parser.exit raises SystemExit


def serve_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rsbroker serve", description="Run one broker node.")
    settings = _load_settings(parser, argv)
    _setup_logging(settings.log_level)
    raise_open_file_limit()

    async def run() -> None:
        node = Node(settings)
        await node.start()
        print(node.ready_line(), flush=True)
        await node.run_until_signalled()

    _run(run())
    return 0


def demo_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="rsbroker demo", description="Run a broker node with the demo provider connected to it."
    )
    parser.set_defaults()
    settings = _load_settings(parser, argv or ["--tcp", "127.0.0.1:7000", "--ws", "127.0.0.1:7001", "--admin", "127.0.0.1:7002"])
    _setup_logging(settings.log_level)

    async def run() -> None:
        from broker.client import connect
        from broker.demo import SERVICE, demo_router

        node = Node(settings)
        await node.start()
        print(node.ready_line(), flush=True)
        tcp = node.addresses["tcp"]
        assert tcp is not None, "the demo needs a --tcp listener for its provider"
        async with connect(tcp, services=[SERVICE], router=demo_router(), instance="demo-1"):
            print(
                f"\nrsbroker demo: node '{settings.node_id}' with provider '{SERVICE}'\n"
                f"  RSocket TCP   {tcp}\n"
                f"  WebSocket     ws://{node.addresses['ws']}/rsocket\n"
                f"  admin API     http://{node.addresses['admin']}/api/v1/services\n"
                f"  try:          python examples/requester.py --tcp {tcp}\n"
                "  Ctrl-C stops it.",
                flush=True,
            )
            await node.run_until_signalled()

    _run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())

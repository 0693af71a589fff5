"""``rsbroker serve`` and ``rsbroker demo``: settings from every door, then one node until a signal.

Separate from :mod:`rsbroker.cli` so that the other sub-commands (``token``, ``status``, the
simulators) start without importing the node and everything it wires together.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from broker.fdlimit import raise_open_file_limit
from broker.logformat import setup_logging
from broker.settings import Settings, SettingsError, add_arguments, load
from rsbroker.node import Node, validate_cluster_settings


def _run(coro: Any) -> Any:
    """Run on uvloop where it is installed (it is a dependency on Linux and macOS)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return asyncio.run(coro)
    return uvloop.run(coro)


def _load_settings(parser: argparse.ArgumentParser, argv: list[str]) -> Settings:
    args = parser.parse_args(argv)
    try:
        settings = load(args)
        validate_cluster_settings(settings)
        return settings
    except SettingsError as exc:
        parser.exit(2, f"rsbroker: {exc}\n")
        raise  # unreachable: parser.exit raises SystemExit


def serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rsbroker serve",
        description="Run one broker node. Every flag is also a config-file key (--config) and an RSBROKER_* variable; "
        "flags win over the environment, which wins over the file.",
    )
    add_arguments(parser)
    return parser


def demo_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rsbroker demo",
        description="Run a broker node with the demo provider connected to it (default listeners 127.0.0.1:7000-7002).",
    )
    add_arguments(parser)
    return parser


def serve_main(argv: list[str]) -> int:
    settings = _load_settings(serve_parser(), argv)
    setup_logging(settings.log_level, settings.log_format, settings.node_id)
    raise_open_file_limit()

    async def run() -> None:
        node = Node(settings)
        await node.start()
        print(node.ready_line(), flush=True)
        await node.run_until_signalled()

    _run(run())
    return 0


def demo_main(argv: list[str]) -> int:
    settings = _load_settings(demo_parser(), argv or ["--tcp", "127.0.0.1:7000", "--ws", "127.0.0.1:7001", "--admin", "127.0.0.1:7002"])
    setup_logging(settings.log_level, settings.log_format, settings.node_id)

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

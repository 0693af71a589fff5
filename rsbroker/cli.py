"""The ``rsbroker`` command line: one entry point, one sub-command per job.

Sub-commands whose code lives in other packages are imported lazily so that
``rsbroker serve`` starts without loading the simulators or the certificate tools.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import sys
from typing import Any, Callable

from broker.logformat import setup_logging
from broker.settings import Settings, SettingsError, add_arguments, load
from rsbroker.node import Node, validate_cluster_settings

#: sub-command -> (its main, its parser builder, what it does). Targets are "module:function"
#: or "module:function:argument"; mains take argv (list[str]) and return an exit code.
COMMANDS: dict[tuple[str, ...], tuple[str, str, str]] = {
    ("serve",): ("rsbroker.cli:serve_main", "rsbroker.cli:serve_parser", "run a broker node"),
    ("demo",): ("rsbroker.cli:demo_main", "rsbroker.cli:demo_parser", "a node with the demo provider attached"),
    ("cluster",): ("cluster.local:main", "cluster.local:build_parser", "up|down: a local cluster of processes"),
    ("status",): ("admin.status:main", "admin.status:build_parser", "a node's view of the cluster"),
    ("members",): ("admin.ctl:run:members", "admin.ctl:build_parser:members", "cluster members and their gossip state"),
    ("services",): ("admin.ctl:run:services", "admin.ctl:build_parser:services", "services and their providers"),
    ("connections",): ("admin.ctl:run:connections", "admin.ctl:build_parser:connections", "a node's connections"),
    ("config",): ("admin.ctl:run:config", "admin.ctl:build_parser:config", "get|put|delete|list the config store"),
    ("demo-provider",): ("broker.demo:provider_main", "broker.demo:provider_parser", "serve the demo service"),
    ("sim", "gossip"): ("cluster.swim.simcli:main", "cluster.swim.simcli:build_parser", "SWIM simulator"),
    ("sim", "raft"): ("cluster.raft.simcli:main", "cluster.raft.simcli:build_parser", "Raft simulator"),
    ("token",): ("broker.auth.tools:token_main", "broker.auth.tools:token_parser", "mint a development JWT"),
    ("certs",): ("broker.auth.tools:certs_main", "broker.auth.tools:certs_parser", "make a CA, certificates, JWT keys"),
}


def resolve(target: str) -> Callable[..., Any]:
    """The function a ``module:function[:argument]`` target names (the argument bound first)."""
    module_name, func_name, *bound = target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return functools.partial(func, *bound) if bound else func


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    for prefix, (target, _, _) in COMMANDS.items():
        if tuple(args[: len(prefix)]) == prefix:
            return int(resolve(target)(args[len(prefix) :]) or 0)
    listing = "\n".join(f"  {' '.join(prefix):<14} {text}" for prefix, (_, _, text) in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="rsbroker",
        description="A clustered RSocket broker.",
        epilog="commands:\n" + listing + "\n\n'rsbroker COMMAND --help' explains each command's flags.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=sorted({prefix[0] for prefix in COMMANDS}), help="what to do (see below)")
    parser.parse_args(args[:1] or ["--help"])
    return 2


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


if __name__ == "__main__":
    sys.exit(main())

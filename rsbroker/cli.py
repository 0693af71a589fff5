"""The ``rsbroker`` command line: one entry point, one sub-command per job.

Every sub-command is imported only when it runs (``serve`` and ``demo`` from
:mod:`rsbroker.serve`), so that ``rsbroker serve`` starts without loading the simulators or
the certificate tools, and ``rsbroker token`` without loading a node.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import sys
from typing import Any, Callable

#: sub-command -> (its main, its parser builder, what it does). Targets are "module:function"
#: or "module:function:argument"; mains take argv (list[str]) and return an exit code.
COMMANDS: dict[tuple[str, ...], tuple[str, str, str]] = {
    ("serve",): ("rsbroker.serve:serve_main", "rsbroker.serve:serve_parser", "run a broker node"),
    ("demo",): ("rsbroker.serve:demo_main", "rsbroker.serve:demo_parser", "a node with the demo provider attached"),
    ("cluster",): ("cluster.local:main", "cluster.local:build_parser", "up|down: a local cluster of processes"),
    ("status",): ("admin.status:main", "admin.status:build_parser", "a node's view of the cluster"),
    ("members",): ("admin.ctl:run:members", "admin.ctl:build_parser:members", "cluster members and their gossip state"),
    ("services",): ("admin.ctl:run:services", "admin.ctl:build_parser:services", "services and their providers"),
    ("connections",): ("admin.ctl:run:connections", "admin.ctl:build_parser:connections", "a node's connections"),
    ("config",): ("admin.ctl:run:config", "admin.ctl:build_parser:config", "get|put|delete|list the config store"),
    ("demo-provider",): ("broker.demo:provider_main", "broker.demo:provider_parser", "serve the demo service"),
    ("devices",): ("broker.devices.cli:main", "broker.devices.cli:build_parser", "a simulated device fleet (connect storms, telemetry, fail-over)"),
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


if __name__ == "__main__":
    sys.exit(main())

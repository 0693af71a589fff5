"""The ``rsbroker`` command line: one entry point, one sub-command per job.

Sub-commands whose code lives in other packages are imported lazily so that
``rsbroker serve`` starts without loading the simulators or the certificate tools.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: sub-command -> "module:function"; each function takes argv (list[str]) and returns an exit code.
_DELEGATED = {
    ("sim", "gossip"): "cluster.swim.simcli:main",
    ("sim", "raft"): "cluster.raft.simcli:main",
    ("token",): "broker.auth.tools:token_main",
    ("certs",): "broker.auth.tools:certs_main",
}


def _delegate(target: str, argv: list[str]) -> int:
    module_name, func_name = target.split(":")
    return int(getattr(importlib.import_module(module_name), func_name)(argv) or 0)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    for prefix, target in _DELEGATED.items():
        if tuple(args[: len(prefix)]) == prefix:
            return _delegate(target, args[len(prefix) :])
    parser = argparse.ArgumentParser(prog="rsbroker", description="A clustered RSocket broker.")
    parser.add_argument("command", choices=["serve", "demo", "sim", "token", "certs"])
    parser.parse_args(args[:1])
    return 2


if __name__ == "__main__":
    sys.exit(main())

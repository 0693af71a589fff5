"""One load-generator process: ``python -m benchmarks.loadgen SPEC_JSON``.

SPEC_JSON: ``{"client": NAME, "target": "host:port", "cells": [Cell fields, ...],
"watch": {"broker": pid, ...}}``. Each cell runs on a fresh connection, one after the other,
and prints one JSON line on stdout as soon as it is done (the suite shows progress from
them). The generator runs in its own process so that it never shares a core's time slice
with the suite's bookkeeping.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks.stats import Cell, Measurement, cell_dict

#: client name -> "module:function" under benchmarks.clients, the function being a RunCell
CLIENTS = {
    "frames": "frames_client:run_cell",
    "rsocket-py": "rsocketpy_client:run_cell",
    "raw-http": "http_client:run_cell",
    "aiohttp-client": "http_client:run_cell_aiohttp",
    "pyclient": "pyclient_client:run_cell",
    "nats-py": "nats_client:run_cell",
    "nats-py-callback": "nats_client:run_cell_callback",
}

RunCell = Callable[[str, Cell, dict[str, int]], Awaitable[Measurement]]


def load_client(name: str) -> RunCell:
    if name not in CLIENTS:
        raise SystemExit(f"unknown client {name!r}; known: {', '.join(CLIENTS)}")
    module, function = CLIENTS[name].split(":")
    return getattr(importlib.import_module(f"benchmarks.clients.{module}"), function)


async def run_spec(spec: dict[str, Any]) -> None:
    run_cell = load_client(spec["client"])
    watch = {name: int(pid) for name, pid in spec.get("watch", {}).items()}
    for fields in spec["cells"]:
        cell = Cell(**fields)
        result: dict[str, Any] = {"cell": cell_dict(cell)}
        try:
            result.update((await run_cell(spec["target"], cell, watch)).summary())
        except (OSError, ConnectionError, TimeoutError) as exc:
            result["failed"] = f"{type(exc).__name__}: {exc}"
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    import uvloop

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit(__doc__)
    uvloop.run(run_spec(json.loads(args[0])))


if __name__ == "__main__":
    main()

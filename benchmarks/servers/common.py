"""What every benchmark server process shares: uvloop, the ready line, stopping on a signal."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any


def announce(**fields: Any) -> None:
    """Print the one ``ready {json}`` line the suite waits for."""
    sys.stdout.write("ready " + json.dumps(fields) + "\n")
    sys.stdout.flush()


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


async def until_signalled() -> None:
    """Return on SIGTERM or SIGINT (the suite stops its servers with SIGTERM)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``main`` on uvloop: every server of the suite uses the same loop as the broker."""
    import uvloop

    uvloop.run(main())

"""Run a real ``rsbroker serve`` as a subprocess and learn where it listens.

The broker prints exactly one ``rsbroker ready {json}`` line on stdout once its listeners are
bound (ports of 0 become real ports there). Everything else it prints is kept, last lines
only, so that a broker that dies or never gets ready explains itself in the test failure.
The process is stopped by its PID: SIGTERM (graceful drain), then SIGKILL if it hangs.

Test helper for now; meant to move to a shared test package once other suites need it.
"""

import asyncio
import collections
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

READY_PREFIX = "rsbroker ready "
#: Generous: the broker starts in well under a second, but this machine is shared and busy.
READY_TIMEOUT_S = 60.0
#: How long a SIGTERM drain may take before the process is killed.
STOP_TIMEOUT_S = 15.0
_TAIL_LINES = 200


@dataclass(frozen=True)
class BrokerNode:
    """Addresses from the ready line, each ``"host:port"`` or ``None`` when not configured."""

    pid: int
    node_id: str
    tcp: str | None
    ws: str | None
    admin: str | None
    cluster: str | None

    @property
    def ws_url(self) -> str:
        """The WebSocket endpoint clients use (one RSocket frame per binary message)."""
        if self.ws is None:
            raise ValueError(f"broker {self.node_id} has no WebSocket listener")
        return f"ws://{self.ws}/rsocket"

    @property
    def admin_url(self) -> str:
        if self.admin is None:
            raise ValueError(f"broker {self.node_id} has no admin listener")
        return f"http://{self.admin}"


def rsbroker_command() -> list[str]:
    """The installed console script of this virtualenv, so tests run the code under test."""
    script = Path(sys.executable).with_name("rsbroker")
    if not script.exists():
        raise FileNotFoundError(f"{script} missing: install the project with pip install -e .")
    return [str(script)]


async def _watch_output(
    stream: asyncio.StreamReader, ready: asyncio.Future[dict[str, object]], tail: collections.deque[str]
) -> None:
    """Keeps reading so the broker never blocks on a full pipe; resolves ``ready`` once."""
    while line_bytes := await stream.readline():
        line = line_bytes.decode(errors="replace").rstrip("\n")
        tail.append(line)
        if not ready.done() and line.startswith(READY_PREFIX):
            try:
                ready.set_result(json.loads(line[len(READY_PREFIX) :]))
            except json.JSONDecodeError as exc:
                ready.set_exception(RuntimeError(f"unparsable ready line {line!r}: {exc}"))
    if not ready.done():
        ready.set_exception(RuntimeError("broker output ended before its ready line"))


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()


@contextlib.asynccontextmanager
async def running_broker(node_id: str, *extra_args: str) -> AsyncIterator[BrokerNode]:
    """Starts ``rsbroker serve`` on loopback with every listener on port 0 and yields its addresses.

    ``extra_args`` are appended to the command line (``--cluster``, ``--jwt-keys`` ...).
    """
    command = [
        *rsbroker_command(),
        "serve",
        "--node-id",
        node_id,
        "--tcp",
        "127.0.0.1:0",
        "--ws",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        *extra_args,
    ]
    process = await asyncio.create_subprocess_exec(
        *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    assert process.stdout is not None
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
    ready: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
    watcher = asyncio.create_task(_watch_output(process.stdout, ready, tail))
    try:
        try:
            info = await asyncio.wait_for(ready, READY_TIMEOUT_S)
        except (TimeoutError, RuntimeError) as exc:
            output = "\n".join(tail)
            raise RuntimeError(f"{' '.join(command)} did not get ready ({exc}); output:\n{output}") from exc
        yield BrokerNode(
            pid=process.pid,
            node_id=str(info["node_id"]),
            tcp=_address(info.get("tcp")),
            ws=_address(info.get("ws")),
            admin=_address(info.get("admin")),
            cluster=_address(info.get("cluster")),
        )
    finally:
        await _stop(process)
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


def _address(value: object) -> str | None:
    return None if value is None else str(value)

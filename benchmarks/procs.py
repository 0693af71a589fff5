"""Subprocesses of a benchmark run: started with their output in log files, stopped by PID.

Rules: every process the suite starts is registered here before anything can fail, and
:meth:`Processes.close` stops each one by its PID (SIGTERM, then SIGKILL after a grace
period) on every way out, Ctrl-C included. Children also get SIGTERM from the kernel if the
suite itself dies (PR_SET_PDEATHSIG), so a killed run leaves no server behind.
Output goes to files, never to an unread pipe that could fill and stall a server.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

_PR_SET_PDEATHSIG = 1
_STOP_GRACE_S = 8.0
_POLL_S = 0.05


class StartError(RuntimeError):
    """A process exited or stayed silent instead of printing its ready line."""


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Started:
    name: str
    process: subprocess.Popen[bytes]
    match: re.Match[str]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid


class Processes:
    """The processes of one part of a run; use as a context manager so they always stop."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._running: list[subprocess.Popen[bytes]] = []
        log_dir.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def python(self, name: str, module: str, *args: str, ready: str = r"^ready (\{.*\})$", timeout_s: float = 30.0) -> Started:
        """Start ``python -m module args`` and wait for a line matching ``ready`` in its output."""
        return self.start(name, [sys.executable, "-m", module, *args], ready=ready, timeout_s=timeout_s)

    def start(self, name: str, argv: list[str], ready: str, timeout_s: float = 30.0) -> Started:
        log = self.log_dir / f"{name}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 (the suite starts no threads)
            )
        self._running.append(process)
        pattern = re.compile(ready, re.MULTILINE)
        deadline = time.monotonic() + timeout_s
        while True:
            match = pattern.search(log.read_text(errors="replace"))
            if match:
                return Started(name, process, match, log)
            if process.poll() is not None:
                raise StartError(f"{name} exited with {process.returncode} before it was ready: {_tail(log)}")
            if time.monotonic() > deadline:
                raise StartError(f"{name} printed no ready line within {timeout_s:.0f} s: {_tail(log)}")
            time.sleep(_POLL_S)

    def spawn_reader(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        """Start a process whose stdout the caller reads line by line (stderr goes to a log file)."""
        with open(self.log_dir / f"{name}.log", "wb") as err:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 (the suite starts no threads)
            )
        self._running.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        """SIGTERM by PID, SIGKILL if it has not exited after the grace period."""
        self._stop_all([process])

    def close(self) -> None:
        """Stop everything still running: SIGTERM to all at once, so their drains overlap."""
        self._stop_all(list(self._running))

    def _stop_all(self, processes: list[subprocess.Popen[bytes]]) -> None:
        for process in processes:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE_S
        for process in processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
            if process in self._running:
                self._running.remove(process)


def _tail(log: Path, lines: int = 5) -> str:
    text = log.read_text(errors="replace").strip().splitlines()
    return " | ".join(text[-lines:]) if text else "(no output)"

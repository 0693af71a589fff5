"""Real ``rsbroker serve`` subprocesses for tests: start, learn addresses, always stop.

Usage (most tests get a :class:`BrokerFactory` from the ``broker_factory`` or
``module_broker_factory`` fixture of ``tests/conftest.py``)::

    node = broker_factory.start("--max-streams", "4", config='default_policy = "weighted"')
    host, port = node.tcp_address          # also node.ws_url, node.admin_url
    node.signal(signal.SIGTERM); assert node.wait(30) == 0

* Every listener binds port 0 on 127.0.0.1 (``--tcp``, ``--ws`` and ``--admin`` are always
  given); the real addresses come from the one ``rsbroker ready {json}`` line the broker
  prints once it listens.
* The child's stdout and stderr are read by a thread into a bounded tail, so the broker
  never blocks on a full pipe and a broker that dies explains itself in the failure.
* ``RSBROKER_*`` variables of the test runner's environment are not inherited, so a
  developer's shell cannot change what a test starts; pass ``env=`` to set some.
* Processes are stopped by PID only: SIGTERM (the broker drains), then SIGKILL after
  :data:`STOP_TIMEOUT_S`. Temporary directories the factory made are removed.

The API is synchronous on purpose: it works from fixtures of any scope and any event
loop. From inside a coroutine, use ``await asyncio.to_thread(factory.start, ...)`` when
other tasks must keep running while the broker starts.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Mapping, Sequence

__all__ = [
    "READY_PREFIX",
    "READY_TIMEOUT_S",
    "STOP_TIMEOUT_S",
    "BrokerFactory",
    "BrokerProcess",
    "BrokerStartError",
    "rsbroker_command",
    "run_rsbroker",
    "split_hostport",
]

READY_PREFIX = "rsbroker ready "
#: The broker starts in about a second, but this machine is shared by several test runs.
READY_TIMEOUT_S = 60.0
#: How long a SIGTERM drain may take before the process is killed.
STOP_TIMEOUT_S = 15.0
_TAIL_LINES = 400


class BrokerStartError(RuntimeError):
    """The broker exited or stayed silent before printing its ready line."""


def rsbroker_command() -> list[str]:
    """The console script of the running virtualenv, so tests run the code under test."""
    script = Path(sys.executable).with_name("rsbroker")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "rsbroker"]


def _child_env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RSBROKER_")}
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


def run_rsbroker(*args: str, env: Mapping[str, str] | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``rsbroker ARGS`` to completion (for commands that exit, e.g. refused settings)."""
    return subprocess.run(
        [*rsbroker_command(), *args],
        env=_child_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class BrokerProcess:
    """One running ``rsbroker serve`` and the addresses from its ready line."""

    def __init__(self, command: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self.command = list(command)
        self._tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self._ready = threading.Event()
        self.info: dict[str, object] = {}
        #: a bearer JWT with role admin for this node's admin API (needed when authentication is on)
        self.admin_token: str | None = None
        #: for an ``--admin-tls`` admin API: the client context (with a certificate of role admin
        #: when the node authenticates by mTLS alone)
        self.admin_ssl: ssl.SSLContext | None = None
        self.process = subprocess.Popen(
            self.command,
            env=_child_env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,  # a Ctrl-C on the test run reaches pytest, which stops us cleanly
        )
        self._reader = threading.Thread(target=self._read_output, name=f"rsbroker-{self.process.pid}", daemon=True)
        self._reader.start()

    def _read_output(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            line = line.rstrip("\n")
            self._tail.append(line)
            if not self._ready.is_set() and line.startswith(READY_PREFIX):
                try:
                    self.info = json.loads(line[len(READY_PREFIX) :])
                except json.JSONDecodeError:
                    self.info = {"unparsable": line}
                self._ready.set()
        self._ready.set()  # EOF: wake the waiter, who sees the process is gone

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> "BrokerProcess":
        """Block until the ready line; raise :class:`BrokerStartError` with the output if it never comes."""
        self._ready.wait(timeout)
        if not self.info or "unparsable" in self.info:
            self.stop()
            raise BrokerStartError(
                f"{' '.join(self.command)} did not get ready (exit code {self.process.poll()}); output:\n{self.output()}"
            )
        return self

    # -- addresses ----------------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self.process.pid

    def _address(self, key: str) -> str | None:
        value = self.info.get(key)
        return None if value is None else str(value)

    @property
    def node_id(self) -> str:
        return str(self.info.get("node_id"))

    @property
    def tcp(self) -> str | None:
        return self._address("tcp")

    @property
    def ws(self) -> str | None:
        return self._address("ws")

    @property
    def admin(self) -> str | None:
        return self._address("admin")

    @property
    def cluster(self) -> str | None:
        return self._address("cluster")

    @property
    def tcp_address(self) -> tuple[str, int]:
        """``(host, port)`` of the RSocket TCP listener."""
        return split_hostport(self._required("tcp"))

    @property
    def ws_address(self) -> tuple[str, int]:
        return split_hostport(self._required("ws"))

    @property
    def ws_url(self) -> str:
        """The WebSocket endpoint (path ``/rsocket``, one frame per binary message)."""
        return f"ws://{self._required('ws')}/rsocket"

    @property
    def admin_url(self) -> str:
        scheme = "https" if self.admin_ssl is not None else "http"
        return f"{scheme}://{self._required('admin')}"

    def _required(self, key: str) -> str:
        value = self._address(key)
        if value is None:
            raise ValueError(f"broker {self.node_id} has no {key} listener")
        return value

    # -- life ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        """The last lines the broker printed (stdout and stderr interleaved)."""
        return "\n".join(self._tail)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to this broker (by PID) if it still runs."""
        if self.running:
            self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Exit code once the process ends; raises ``subprocess.TimeoutExpired`` after ``timeout``."""
        return self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: a crash, no drain."""
        self.signal(signal.SIGKILL)
        self.process.wait()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, then SIGKILL if the drain takes longer than ``timeout``. Returns the exit code."""
        if self.running:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode

    def __repr__(self) -> str:
        return f"<BrokerProcess {self.node_id} pid={self.pid} tcp={self.tcp} ws={self.ws} admin={self.admin}>"


def split_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


class BrokerFactory:
    """Starts brokers, hands out temporary directories, and cleans both up in :meth:`close`."""

    def __init__(self) -> None:
        self.processes: list[BrokerProcess] = []
        self._dirs: list[Path] = []
        self._count = 0

    def tmpdir(self, prefix: str = "rsbroker-test-") -> Path:
        """A fresh directory removed at teardown (data dirs, config files, keys)."""
        path = Path(tempfile.mkdtemp(prefix=prefix))
        self._dirs.append(path)
        return path

    def start(
        self,
        *extra_args: str,
        node_id: str | None = None,
        config: str | None = None,
        env: Mapping[str, str] | None = None,
        listeners: bool = True,
        admin_token: str | None = None,
        admin_ssl: ssl.SSLContext | None = None,
    ) -> BrokerProcess:
        """Start ``rsbroker serve`` and wait for its ready line.

        ``config`` is TOML text, written to a temporary file passed as ``--config``.
        ``admin_token`` is kept on the process for ``tests.support.admin`` (a JWT with role
        admin: the admin API requires one whenever authentication is on); ``admin_ssl`` the
        client TLS context for an ``--admin-tls`` admin API.
        ``listeners=False`` leaves out the default ``--tcp/--ws/--admin 127.0.0.1:0`` flags
        (for tests of settings precedence that give them another way).
        """
        self._count += 1
        args = ["serve", "--node-id", node_id or f"n{self._count}"]
        if listeners:
            args += ["--tcp", "127.0.0.1:0", "--ws", "127.0.0.1:0", "--admin", "127.0.0.1:0"]
        if config is not None:
            path = self.tmpdir() / "rsbroker.toml"
            path.write_text(config)
            args += ["--config", str(path)]
        process = BrokerProcess([*rsbroker_command(), *args, *extra_args], env)
        process.admin_token = admin_token
        process.admin_ssl = admin_ssl
        self.processes.append(process)
        return process.wait_ready()

    def close(self) -> None:
        """Stop every broker still running (by PID) and remove the temporary directories."""
        for process in self.processes:
            process.stop()
        self.processes.clear()
        for path in self._dirs:
            shutil.rmtree(path, ignore_errors=True)
        self._dirs.clear()

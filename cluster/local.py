"""``rsbroker cluster up|down``: a whole cluster on this machine, for trying things out.

``up`` starts N ``rsbroker serve`` processes on 127.0.0.1 (node i listens on
``base + 10·(i-1)`` for TCP, +1 WebSocket, +2 admin, +3 gossip), sharing a fresh cluster
key, each with its data directory under ``--dir``, plus the demo provider; it waits until
every node is ready, records the PIDs in ``DIR/cluster.json`` and returns. ``down`` stops
exactly those processes (SIGTERM, so they drain; SIGKILL for any that outlive the grace
period) — it never looks processes up by name.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cluster.crypto import new_key

STATE_FILE = "cluster.json"
READY_PREFIX = "rsbroker ready "


def _ports(base: int, index: int) -> dict[str, int]:
    first = base + 10 * index
    return {"tcp": first, "ws": first + 1, "admin": first + 2, "cluster": first + 3}


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_ready(log_path: Path, proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"node exited with {proc.returncode}; see {log_path}")
        for line in log_path.read_text(errors="replace").splitlines():
            if line.startswith(READY_PREFIX):
                return json.loads(line[len(READY_PREFIX) :])
        time.sleep(0.05)
    raise RuntimeError(f"node not ready after {timeout:.0f} s; see {log_path}")


def _is_ours(pid: int) -> bool:
    """The PID still belongs to a process we started (not a recycled PID)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"broker" in cmdline


def up(args: argparse.Namespace) -> int:
    root = Path(args.dir).resolve()
    state_path = root / STATE_FILE
    if state_path.exists():
        print(f"a cluster is already up in {root} (run 'rsbroker cluster down --dir {args.dir}' first)", file=sys.stderr)
        return 1
    ports = [_ports(args.base_port, i) for i in range(args.nodes)]
    busy = [p for node in ports for p in node.values() if not _port_free(p)]
    if busy:
        print(f"ports in use: {', '.join(map(str, busy))}; pick another --base-port", file=sys.stderr)
        return 1
    root.mkdir(parents=True, exist_ok=True)
    key_file = root / "cluster.key"
    key_file.write_text(new_key() + "\n")
    key_file.chmod(0o600)
    state: dict[str, Any] = {"dir": str(root), "nodes": [], "provider": None}
    seed = f"127.0.0.1:{ports[0]['cluster']}"
    try:
        for i, p in enumerate(ports):
            node_id = f"n{i + 1}"
            cmd = [
                sys.executable, "-m", "rsbroker", "serve",
                "--node-id", node_id,
                "--tcp", f"127.0.0.1:{p['tcp']}",
                "--ws", f"127.0.0.1:{p['ws']}",
                "--admin", f"127.0.0.1:{p['admin']}",
                "--cluster", f"127.0.0.1:{p['cluster']}",
                "--data-dir", str(root / node_id),
                "--cluster-key", str(key_file),
            ]  # fmt: skip
            if i > 0:
                cmd += ["--join", seed]
            log_path = root / f"{node_id}.log"
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            state["nodes"].append({"node_id": node_id, "pid": proc.pid, "log": str(log_path)})
            state_path.write_text(json.dumps(state, indent=2))
            info = _wait_ready(log_path, proc, args.timeout)
            state["nodes"][-1].update(info)
        tcp_list = ",".join(n["tcp"] for n in state["nodes"])
        log_path = root / "provider.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "rsbroker", "demo-provider", "--nodes", tcp_list],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        state["provider"] = {"pid": proc.pid, "log": str(log_path)}
        state_path.write_text(json.dumps(state, indent=2))
    except (RuntimeError, OSError) as exc:
        print(f"cluster up failed: {exc}", file=sys.stderr)
        down(argparse.Namespace(dir=args.dir, grace=5.0))
        return 1
    print(f"rsbroker cluster up: {args.nodes} nodes, state in {root}")
    print(f"{'node':6} {'RSocket TCP':18} {'WebSocket':18} {'admin':18} gossip")
    for n in state["nodes"]:
        print(f"{n['node_id']:6} {n['tcp']:18} {n['ws']:18} {n['admin']:18} {n['cluster']}")
    first = state["nodes"][0]
    python = os.path.relpath(sys.executable) if not os.path.relpath(sys.executable).startswith("..") else sys.executable
    print(
        f"\ndemo provider 'demo-1' serves demo.greeter (log: {state['provider']['log']})\n"
        f"try:   {python} examples/requester.py --tcp {state['nodes'][-1]['tcp']}\n"
        f"       {python} -m broker status --admin {first['admin']}\n"
        f"       open http://{first['admin']}/ for the dashboard\n"
        f"stop:  {python} -m broker cluster down --dir {args.dir}"
    )
    return 0


def down(args: argparse.Namespace) -> int:
    root = Path(args.dir).resolve()
    state_path = root / STATE_FILE
    if not state_path.exists():
        print(f"no cluster is up in {root}", file=sys.stderr)
        return 1
    state = json.loads(state_path.read_text())
    procs = ([state["provider"]] if state.get("provider") else []) + state["nodes"]
    pids = [p["pid"] for p in procs if _is_ours(p["pid"])]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + args.grace
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.05)
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    state_path.unlink()
    print(f"rsbroker cluster down: stopped {len(pids)} processes")
    return 0


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z" and _is_ours(pid)
    except OSError:
        return False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rsbroker cluster", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    p_up = sub.add_parser("up", help="start a local cluster with the demo provider")
    p_up.add_argument("--nodes", type=int, default=3, help="number of nodes, 1..50 (default: %(default)s)")
    p_up.add_argument("--dir", default=".rsbroker-cluster", help="state, logs and data (default: %(default)s)")
    p_up.add_argument(
        "--base-port", type=int, default=7000, help="first port; each node takes the next few (default: %(default)s)"
    )
    p_up.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each node (default: %(default)s)")
    p_down = sub.add_parser("down", help="stop the cluster started by 'up'")
    p_down.add_argument("--dir", default=".rsbroker-cluster", help="directory given to 'up' (default: %(default)s)")
    p_down.add_argument(
        "--grace", type=float, default=35.0, help="seconds to let nodes drain before SIGKILL (default: %(default)s)"
    )
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.action == "up":
        if not 1 <= args.nodes <= 50:
            parser.error("--nodes must be from 1 to 50")
        return up(args)
    return down(args)

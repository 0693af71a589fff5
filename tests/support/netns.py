"""A multi-host test bed: each host a Linux network namespace on one bridge, with its own name.

::

    bed = TestBed(3)                          # the ``hosts`` fixture of tests/conftest.py does this
    node1, node2, node3 = bed.hosts           # names node1..node3, addresses 198.18.X.11..13
    node1.start(node1.serve_args())           # ``rsbroker serve`` inside node1's namespace
    node2.start(node2.serve_args(join=["node1:7946"]))
    status, body = node2.http("GET", "/api/v1/members")   # from inside node2, admin token attached
    node3.cut(); ...; node3.heal()            # its link down, then up again
    bed.close()                               # processes, namespaces, bridge, /etc/netns files

Rules of this module (it runs as root on a machine other test runs share):

* Every name (namespaces, bridge, veth ends) carries a tag made of this process's PID and a
  counter, so concurrent runs never collide; the subnet (one /24 of 198.18.0.0/15, the
  benchmarking range) is chosen so that no interface of the machine already uses it.
* Nothing touches the machine's real interfaces and no default route is ever added: the only
  route is the bridge's own /24 in the root namespace, so the test process reaches the hosts
  and the hosts reach nothing but each other and the bridge address.
* Host names resolve through ``/etc/netns/<ns>/hosts`` (``ip netns exec`` mounts it over
  ``/etc/hosts``); :meth:`Host.move` rewrites those files in place so that a running process
  sees the new address, as a Kubernetes pod keeps its name and changes its address.
* Nodes are real ``rsbroker serve`` processes (:class:`tests.support.brokerproc.BrokerProcess`,
  on uvloop as in production) with a cluster key, JWT authentication and an admin token
  required on the admin API: a non-loopback peer exercises the protections loopback skips.
* :meth:`TestBed.close` removes everything even after a failed test; it is safe to call twice.
  What a test run killed outright (SIGKILL, a crash) left behind is swept by the next bed:
  names carry the owner's PID, and leftovers of PIDs that no longer run are removed.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Mapping

from broker.auth.tokens import load_private_key, mint_token
from cluster.crypto import new_key
from tests.support.brokerproc import BrokerProcess, rsbroker_command, run_rsbroker

__all__ = [
    "ADMIN_PORT",
    "GOSSIP_PORT",
    "TCP_PORT",
    "WS_PORT",
    "Host",
    "TestBed",
    "unavailable_reason",
]

#: Every host has its own address, so every node uses the same well-known ports.
TCP_PORT = 7000
WS_PORT = 7001
ADMIN_PORT = 7002
GOSSIP_PORT = 7946
#: The benchmarking range (RFC 2544): never routed anywhere.
BED_RANGE = ipaddress.ip_network("198.18.0.0/15")
_counter = itertools.count(1)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def unavailable_reason() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if sys.platform != "linux":
        return f"network namespaces need Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root; run the suite as root to include the test bed)"
    if shutil.which("ip") is None:
        return "the 'ip' command (iproute2) is not installed"
    probe = f"rsbprobe{os.getpid():x}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"'ip netns add' failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def sweep_stale() -> None:
    """Remove namespaces, links and hosts files of beds whose test process is gone."""
    listed = _ip("netns", "list", check=False).stdout
    for tag, pid in set(re.findall(r"^rsb-(([0-9a-f]+)x[0-9a-f]+)-\d+", listed, re.M)):
        if Path(f"/proc/{int(pid, 16)}").exists():
            continue
        for line in listed.splitlines():
            namespace = line.split()[0] if line.split() else ""
            if namespace.startswith(f"rsb-{tag}-"):
                _ip("netns", "del", namespace, check=False)
                shutil.rmtree(Path("/etc/netns") / namespace, ignore_errors=True)
        for link in re.findall(rf"^\d+: (rb{tag}\w+)[@:]", _ip("-o", "link", "show").stdout, re.M):
            _ip("link", "del", link, check=False)


def _free_subnet(seed: int) -> ipaddress.IPv4Network:
    """A /24 of the bed range that no interface of this machine uses yet."""
    used = _ip("-o", "-4", "addr", "show").stdout
    subnets = list(BED_RANGE.subnets(new_prefix=24))
    for step in range(len(subnets)):
        candidate = subnets[(seed + step) % len(subnets)]
        if candidate.network_address.exploded.rsplit(".", 1)[0] + "." not in used:
            return candidate
    raise RuntimeError("every /24 of 198.18.0.0/15 is in use on this machine")


class Host:
    """One host of the bed: a namespace, its link to the bridge, its name and its node."""

    def __init__(self, bed: "TestBed", index: int, name: str) -> None:
        self.bed = bed
        self.index = index
        self.name = name
        self.namespace = f"rsb-{bed.tag}-{index}"
        self.link = f"rb{bed.tag}h{index}"  # the root namespace's end of the veth pair
        self.address = str(bed.subnet.network_address + 10 + index)
        self.data_dir = bed.root / self.name
        self.process: BrokerProcess | None = None

    # -- the network ------------------------------------------------------------------------

    def _create(self) -> None:
        _ip("netns", "add", self.namespace)
        peer = f"{self.link}p"
        _ip("link", "add", self.link, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", self.namespace)
        _ip("-n", self.namespace, "link", "set", peer, "name", "eth0")
        _ip("-n", self.namespace, "addr", "add", f"{self.address}/{self.bed.subnet.prefixlen}", "dev", "eth0")
        _ip("-n", self.namespace, "link", "set", "eth0", "up")
        _ip("-n", self.namespace, "link", "set", "lo", "up")
        _ip("link", "set", self.link, "master", self.bed.bridge)
        _ip("link", "set", self.link, "up")

    def cut(self) -> None:
        """Take this host's link down: it reaches nobody and nobody reaches it."""
        _ip("link", "set", self.link, "down")

    def heal(self) -> None:
        """Bring the link back up."""
        _ip("link", "set", self.link, "up")

    def move(self, address: str) -> None:
        """Give this host a new address (its name stays); every host's hosts file follows."""
        prefix = self.bed.subnet.prefixlen
        _ip("-n", self.namespace, "addr", "del", f"{self.address}/{prefix}", "dev", "eth0")
        _ip("-n", self.namespace, "addr", "add", f"{address}/{prefix}", "dev", "eth0")
        self.address = address
        self.bed.write_hosts_files()

    # -- processes --------------------------------------------------------------------------

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def run(self, argv: Sequence[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` to completion inside the namespace."""
        return subprocess.run(self.command(argv), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def serve_args(self, *extra: str, join: Sequence[str] = ()) -> list[str]:
        """The production-like command line: every listener on the wildcard address, advertised
        by host name, cluster key, JWT authentication, admin token required."""
        return [
            "serve", "--node-id", self.name,
            "--tcp", f"0.0.0.0:{TCP_PORT}", "--ws", f"0.0.0.0:{WS_PORT}", "--admin", f"0.0.0.0:{ADMIN_PORT}",
            "--cluster", f"0.0.0.0:{GOSSIP_PORT}", "--advertise", f"{self.name}:{TCP_PORT}",
            "--data-dir", str(self.data_dir),
            "--cluster-key", str(self.bed.cluster_key), "--jwt-keys", str(self.bed.jwt_public),
            "--admin-require-token",
            *(["--join", ",".join(join)] if join else []),
            *extra,
        ]  # fmt: skip

    @staticmethod
    def rsbroker(argv: Sequence[str]) -> list[str]:
        """``rsbroker ARGV`` with the virtualenv's script (to wrap in another command)."""
        return [*rsbroker_command(), *argv]

    def start(self, argv: Sequence[str], env: Mapping[str, str] | None = None, wait: bool = True,
              raw: bool = False) -> BrokerProcess:
        """Start ``rsbroker ARGV`` in this host's namespace (``wait``: until its ready line).
        ``raw=True``: ARGV is the whole command (a wrapper that execs ``rsbroker``)."""
        if self.process is not None and self.process.running:
            raise RuntimeError(f"{self.name} already runs a node (pid {self.process.pid})")
        # ``ip netns exec`` execs the command (and gives it a private mount namespace): with
        # wrappers that exec too, the PID is the broker's own.
        self.process = BrokerProcess(self.command(list(argv) if raw else self.rsbroker(argv)), env)
        self.bed.processes.append(self.process)
        return self.process.wait_ready() if wait else self.process

    def kill(self) -> None:
        """SIGKILL the node: a crash."""
        if self.process is not None:
            self.process.kill()

    def stop(self) -> int:
        """SIGTERM the node (it drains and leaves); returns its exit code."""
        assert self.process is not None, f"{self.name} never started"
        return self.process.stop()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    # -- the admin API, from inside the host ------------------------------------------------

    def http(self, method: str, path: str, body: Any = None, *, token: bool = True,
             timeout: float = 10.0) -> tuple[int, Any]:
        """``(status, JSON body)`` of an admin API call made from inside this host, so that it
        works while the host is cut off; ``(0, reason)`` when nothing answers."""
        script = (
            "import json,sys,urllib.request,urllib.error\n"
            "a=json.loads(sys.argv[1])\n"
            "r=urllib.request.Request(a['url'],method=a['method'],data=a['data'] and a['data'].encode(),headers=a['headers'])\n"
            "try:\n"
            " with urllib.request.urlopen(r,timeout=a['timeout']) as x: s,b=x.status,x.read()\n"
            "except urllib.error.HTTPError as e: s,b=e.code,e.read()\n"
            "except OSError as e: s,b=0,json.dumps(repr(e)).encode()\n"
            "print(json.dumps([s,b.decode('utf-8','replace')]))\n"
        )
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {self.bed.admin_token}"
        request = {
            "url": f"http://127.0.0.1:{ADMIN_PORT}{path}",
            "method": method,
            "data": None if body is None else json.dumps(body),
            "headers": headers,
            "timeout": timeout,
        }
        done = self.run([sys.executable, "-c", script, json.dumps(request)], timeout=timeout + 30)
        if done.returncode != 0:
            return 0, done.stderr.strip()
        status, text = json.loads(done.stdout)
        try:
            return status, json.loads(text)
        except json.JSONDecodeError:
            return status, text

    def __repr__(self) -> str:
        return f"<Host {self.name} {self.address} ns={self.namespace} node={self.process!r}>"


class TestBed:
    """``count`` hosts on one bridge, with the keys their nodes share."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    def __init__(self, count: int, names: Sequence[str] | None = None, domain: str | None = None) -> None:
        """``names``: host names (default node1..nodeN); ``domain``: each host also answers to
        ``<name>.<domain>`` (a Kubernetes headless Service's pod names)."""
        seq = next(_counter)
        self.names = list(names) if names else [f"node{i}" for i in range(1, count + 1)]
        self.domain = domain
        self.tag = f"{os.getpid():x}x{seq:x}"  # ≤ 10 characters: interface names stay ≤ 15
        self.bridge = f"rb{self.tag}br"
        self.root = Path(tempfile.mkdtemp(prefix=f"rsbroker-bed-{self.tag}-"))
        self.processes: list[BrokerProcess] = []
        self.hosts: list[Host] = []
        self._closed = False
        sweep_stale()
        try:
            self.subnet = _free_subnet(os.getpid() + seq * 7)
            self._make_keys()
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.subnet.network_address + 1}/{self.subnet.prefixlen}", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for index, name in enumerate(self.names, 1):
                host = Host(self, index, name)
                self.hosts.append(host)
                host._create()
            self.write_hosts_files()
        except BaseException:
            self.close()
            raise

    def _make_keys(self) -> None:
        self.cluster_key = self.root / "cluster.key"
        self.cluster_key.write_text(new_key() + "\n")
        keys = self.root / "jwt"
        made = run_rsbroker("certs", "keypair", "--type", "ed25519", "--out", str(keys))
        if made.returncode != 0:
            raise RuntimeError(f"rsbroker certs keypair failed: {made.stderr}")
        self.jwt_public = keys / "jwt-public.pem"
        private = load_private_key(keys / "jwt-private.pem")
        # valid for an hour: beds live minutes, and nodes refuse tokens past --jwt-max-ttl-s (24 h)
        self.admin_token = mint_token(private, sub="bed-admin", roles=["admin"], ttl=3600)
        self.client_token = mint_token(private, sub="bed-client", roles=["client"], ttl=3600)

    def _netns_dir(self, host: Host) -> Path:
        return Path("/etc/netns") / host.namespace

    def write_hosts_files(self) -> None:
        """Every host knows every host by name. Written in place: ``ip netns exec`` bind-mounts
        the file, so a running process only sees a change made to the same inode."""
        suffix = (lambda h: f" {h.name}.{self.domain}") if self.domain else (lambda h: "")
        lines = ["127.0.0.1 localhost", *(f"{h.address} {h.name}{suffix(h)}" for h in self.hosts)]
        for host in self.hosts:
            directory = self._netns_dir(host)
            directory.mkdir(parents=True, exist_ok=True)
            with open(directory / "hosts", "w") as out:
                out.write("\n".join(lines) + "\n")
            # no resolver beyond the hosts file: an unknown name fails at once
            (directory / "resolv.conf").write_text("options timeout:1 attempts:1\n")

    def __getitem__(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    def close(self) -> None:
        """Stop every process (SIGTERM together, then SIGKILL), remove namespaces, links, files."""
        if self._closed:
            return
        self._closed = True
        for process in self.processes:
            if process.running:
                process.signal(15)
        for process in self.processes:
            process.stop(timeout=10)
        for host in self.hosts:
            _ip("link", "del", host.link, check=False)
            _ip("netns", "del", host.namespace, check=False)
            shutil.rmtree(self._netns_dir(host), ignore_errors=True)
        _ip("link", "del", self.bridge, check=False)
        shutil.rmtree(self.root, ignore_errors=True)

"""Leader-elected, replicated cluster configuration: our own Raft.

Layers, innermost first (each module states its own rules):
- ``messages``, ``config``, ``log``, ``progress``, ``core``: the sans-IO Raft state machine
  (``Raft.tick``/``step``/``ready``/``advance``), after etcd-io/raft.
- ``storage``: durable log, hard state and snapshots (``FileStorage``), or ``MemoryStorage``.
- ``validation``, ``statemachine``: the typed config key-value store that Raft replicates.
- ``transport``, ``node``: the asyncio shell ``RaftNode`` and its transports.
- ``sim``, ``checker``, ``simcli``: the deterministic simulator and its checks.

Wiring it into a broker node::

    transport = TcpTransport(node_id, resolver, keyring)      # resolver: node id -> (host, port)
    gossip.add_tcp_channel(CHANNEL_RAFT, transport.handle_connection)
    node = RaftNode(node_id, data_dir / "raft", transport)
    await node.start(bootstrap=first_node_of_a_new_cluster)
"""

from .config import RaftConfig
from .errors import MembershipError, NotLeader, RaftError, Timeout, ValidationError
from .node import NodeOptions, RaftNode
from .statemachine import Change
from .transport import CHANNEL_RAFT, InMemoryNetwork, InMemoryTransport, TcpTransport, Transport
from .validation import Validators, validate_acl_rule

__all__ = [
    "CHANNEL_RAFT",
    "Change",
    "InMemoryNetwork",
    "InMemoryTransport",
    "MembershipError",
    "NodeOptions",
    "NotLeader",
    "RaftConfig",
    "RaftError",
    "RaftNode",
    "TcpTransport",
    "Timeout",
    "Transport",
    "ValidationError",
    "Validators",
    "validate_acl_rule",
]

"""Leader-elected, replicated cluster configuration: our own Raft.

Layers, innermost first (each module states its own rules):
- ``messages``, ``config``, ``log``, ``progress``, ``core``: the sans-IO Raft state machine
  (``Raft.tick``/``step``/``ready``/``advance``), after etcd-io/raft.
- ``storage``: durable log, hard state and snapshots (``FileStorage``), or ``MemoryStorage``.
- ``validation``, ``statemachine``: the typed config key-value store that Raft replicates.
- ``transport``, ``node``: the asyncio shell ``RaftNode`` and its transports.
- ``sim``, ``checker``, ``simcli``: the deterministic simulator and its checks.

This package's ``__init__`` imports nothing (as ``cluster.swim``'s), so that the core, the
simulator or the validators can be imported without the asyncio shell; import what you
use from its module.

Wiring it into a broker node::

    from cluster.raft.node import RaftNode
    from cluster.raft.transport import CHANNEL_RAFT, TcpTransport

    transport = TcpTransport(node_id, resolver, keyring)      # resolver: node id -> (host, port)
    gossip.add_tcp_channel(CHANNEL_RAFT, transport.handle_connection)
    node = RaftNode(node_id, data_dir / "raft", transport)
    await node.start(bootstrap=first_node_of_a_new_cluster)
"""

"""Leader-elected, replicated cluster configuration: our own Raft.

Layers, innermost first (each module states its own rules):
- ``messages``, ``config``, ``log``, ``progress``, ``core``: the sans-IO Raft state machine
  (``Raft.tick``/``step``/``ready``/``advance``), after etcd-io/raft.
- ``storage``: durable log, hard state and snapshots (``FileStorage``), or ``MemoryStorage``.
- ``validation``, ``statemachine``: the typed config key-value store that Raft replicates.
- ``transport``, ``node``: the asyncio shell ``RaftNode`` and its transports.
- ``sim``, ``checker``, ``simcli``: the deterministic simulator and its checks.
"""

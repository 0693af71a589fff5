"""SWIM gossip membership with Lifeguard, as a sans-IO core and a thin asyncio shell.

Modules, from the wire up: ``messages`` (wire enums and strict decoding), ``wire``
(packet envelope, sealing, replay guard), ``broadcast`` (piggyback queue), ``awareness``
and ``suspicion`` (Lifeguard), ``core`` (the state machine), ``config`` (profiles),
``node`` (the asyncio shell, :class:`cluster.swim.node.GossipNode`), ``sim`` and
``simcli`` (the deterministic simulator). The routing table that rides on the gossip
lives in :mod:`cluster.routing_table`.

This package's ``__init__`` imports nothing, so that importing the routing table or the
simulator does not pull in asyncio networking.
"""

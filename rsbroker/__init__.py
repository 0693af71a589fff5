"""The composition root: assembles a node from its settings, above every other package.

``broker`` (the relay), ``cluster`` (gossip, links, Raft) and ``admin`` (the HTTP API) do
not import each other upwards; this package is where they meet. :mod:`rsbroker.node` wires
one node (relay, listeners, cluster runtime, admin API) and :mod:`rsbroker.cli` is the
``rsbroker`` command line.
"""

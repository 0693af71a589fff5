"""Shared test helpers for every suite that talks to real broker processes.

* :mod:`tests.support.brokerproc` — start ``rsbroker serve`` subprocesses on loopback with
  every listener on port 0, learn their addresses from the ``rsbroker ready {json}`` line,
  and always stop them by PID (SIGTERM, then SIGKILL after a timeout).
* :mod:`tests.support.rawclient` — a raw RSocket frame client over TCP or WebSocket, built
  on ``broker.frames`` builders: sends arbitrary bytes, reads frames back.
* :mod:`tests.support.peers` — raw providers (registered), raw requesters, a responder
  task, and ``assert_serves`` (a node still relays after some abuse).
* :mod:`tests.support.admin` — JSON calls to a node's admin API and a ``wait_for`` that
  polls a condition (tests wait on conditions, never on timing).

``tests/conftest.py`` turns these into fixtures (``broker_factory``,
``module_broker_factory``); see its docstring.
"""

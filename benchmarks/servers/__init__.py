"""Server-side processes of the suite, each run as ``python -m benchmarks.servers.<name>``.

Every one prints exactly one line ``ready {json}`` on stdout once it listens or is connected
(json holds at least ``address``), then serves until SIGTERM or SIGINT.
"""

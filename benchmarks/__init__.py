"""The rsbroker benchmark suite: this broker against the systems users would pick instead.

Every figure comes from one run on one machine, with every server started as a subprocess
and every load generator built the same way (one asyncio process on uvloop, pre-built
requests, batched writes, a fixed number of requests in flight). Absolute numbers on a
shared machine drift between runs; the ratios printed beside them are what a run proves.

Entry point: ``python -m benchmarks run [--quick] [--json FILE] [--plot FILE]``.
"""

"""Load generators, one module per protocol, all of one design.

Each module exposes ``async def run_cell(target: str, cell: Cell, watch: dict[str, int]) -> Measurement``:
connect afresh, keep ``cell.inflight`` requests outstanding (or the stream credit, or the write
batch for fire-and-forget), warm up, then count completions in the measured window. They run
inside ``python -m benchmarks.loadgen``, one process per system, on uvloop.
"""

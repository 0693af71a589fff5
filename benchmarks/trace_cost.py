"""What tracing costs per request: traced against untraced request-responses, side by side in one run.

``python -m benchmarks.trace_cost [--requests 200000] [--rounds 7] [--e2e PAIRS [--quick]]``

In process (always): the relay of ``benchmarks.traffic_cost`` (a real ``Broker``, real relay
sessions over list transports, 64 request-responses in flight), once with the route alone and
once with a W3C trace entry beside it, each stream with its own parent id, as traced traffic
has. Twice: with sessions that take each relayed frame whole (``forward``, as WebSocket's, where
a traced request is stamped in a copy) and with sessions that coalesce into ``wire_out`` as
TCP's (the parent id written in place; the harness splits the frames again, in both runs). Process CPU time per request; the rounds alternate and the ratio is taken per round
(traced over the untraced run beside it), so a neighbour's load moves both sides of a ratio.

End to end (``--e2e N``): N pairs of ``python -m benchmarks run --only 'broker-1[frames]'
--scenario request-response --no-resources`` (the frame generator, through sockets, with
``BENCH_TRACE=0`` and ``1``, the order swapped every pair): the broker's CPU per request and
requests/s at 64 in flight, and the median of the per-pair ratios. ``--quick`` uses 0.3 s
windows, whose CPU figures are counted in 10 ms ticks; the full plan's 2 s windows are steadier.

``RSBROKER_NO_EXTENSIONS=1`` in the environment measures the pure-Python hot path (both parts).
"""

from __future__ import annotations

import argparse
import statistics

from benchmarks import frames
from benchmarks.clients.frames_client import TRACE_ENV
from benchmarks.traffic_cost import IN_FLIGHT, cpu_per_request, end_to_end, route_only
from broker import hotpath
from broker import metadata as md
from broker import tracing

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def traced(sid: int) -> bytes:
    """The metadata of a traced request: the route and a trace entry whose parent id is the stream's."""
    return md.route_metadata(frames.ROUTE) + tracing.entry(f"00-{TRACE_ID}-{sid:016x}-01")


def in_process(requests: int, rounds: int, coalesce: bool) -> list[tuple[float, float]]:
    """``(untraced, traced)`` CPU seconds per request, one pair per round, order swapped every round."""
    pairs = []
    for i in range(rounds):
        if i % 2:
            on = cpu_per_request({}, requests, traced, coalesce)
            off = cpu_per_request({}, requests, route_only, coalesce)
        else:
            off = cpu_per_request({}, requests, route_only, coalesce)
            on = cpu_per_request({}, requests, traced, coalesce)
        pairs.append((off, on))
    return pairs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.trace_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--requests", type=int, default=200_000, help="requests per in-process measurement")
    parser.add_argument("--rounds", type=int, default=7, help="alternating in-process rounds")
    parser.add_argument("--e2e", type=int, default=0, metavar="PAIRS", help="end-to-end pairs through sockets (0: none)")
    parser.add_argument("--quick", action="store_true", help="end to end with the quick plan's 0.3 s windows")
    args = parser.parse_args(argv)
    build = "compiled" if hotpath.COMPILED else "pure Python"
    print(f"| relay CPU per request-response ({IN_FLIGHT} in flight, {build} hot path, {args.rounds} rounds) | µs, frames whole (as WebSocket) | µs, coalesced (as TCP) |")
    print("|---|---|---|")
    rows = [in_process(args.requests, args.rounds, coalesce) for coalesce in (False, True)]
    print("| untraced, best | " + " | ".join(f"{min(off for off, _ in pairs) * 1e6:.2f}" for pairs in rows) + " |")
    print("| traced, best | " + " | ".join(f"{min(on for _, on in pairs) * 1e6:.2f}" for pairs in rows) + " |")
    print("| traced / untraced, median of rounds | " + " | ".join(f"×{statistics.median(on / off for off, on in pairs):.3f}" for pairs in rows) + " |")
    if args.e2e:
        runs = []
        for i in range(args.e2e):
            order = (False, True) if i % 2 == 0 else (True, False)
            got = {trace: end_to_end({TRACE_ENV: "1" if trace else "0"}, args.quick) for trace in order}
            runs.append((got[False], got[True]))
        cpu = [on[0] / off[0] for off, on in runs]
        rate = [on[1] / off[1] for off, on in runs]
        print()
        print(f"| broker-1[frames], {IN_FLIGHT} in flight, {build} hot path, {args.e2e} pairs | untraced | traced | traced / untraced (median of pairs) |")
        print("|---|---|---|---|")
        print(f"| broker CPU per request, µs (medians) | {statistics.median(o[0] for o, _ in runs) * 1e6:.2f} | "
              f"{statistics.median(t[0] for _, t in runs) * 1e6:.2f} | ×{statistics.median(cpu):.3f} |")  # fmt: skip
        print(f"| requests/s (medians) | {statistics.median(o[1] for o, _ in runs):,.0f} | "
              f"{statistics.median(t[1] for _, t in runs):,.0f} | ×{statistics.median(rate):.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()

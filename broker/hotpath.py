"""The relay's hot path, compiled when it can be: the one import the rest of the broker uses.

As aiohttp and msgpack do, the compiled module (``broker/_hotpath_c.pyx``, built by
``pip install``) is used when it imports, and the pure-Python one (``broker/_hotpath.py``,
the source of truth) otherwise. ``RSBROKER_NO_EXTENSIONS=1`` forces pure Python, at build
time (nothing is compiled) and at import. :data:`COMPILED` says which one runs.
"""

from __future__ import annotations

import logging
import os

__all__ = [
    "COMPILED",
    "NO_EXTENSIONS",
    "OPEN_CACHE_SIZE",
    "TOO_LARGE",
    "Bucket",
    "RouteRules",
    "SpanRing",
    "Stream",
    "TrafficState",
    "forward",
    "keep",
    "read_frames",
    "relay_frame",
    "request_metadata",
    "seed_span_ids",
    "span_id",
    "spend",
    "stamp_parent",
    "sweep",
    "trace_entry",
    "trace_stream",
    "watch",
]

log = logging.getLogger("rsbroker.hotpath")

#: True when the environment asks for pure Python (any value but "", "0", "false", "no").
NO_EXTENSIONS = os.environ.get("RSBROKER_NO_EXTENSIONS", "").strip().lower() not in ("", "0", "false", "no")

COMPILED = False
if not NO_EXTENSIONS:
    try:
        from broker._hotpath_c import (  # type: ignore[no-redef]
            OPEN_CACHE_SIZE,
            TOO_LARGE,
            Bucket,
            RouteRules,
            SpanRing,
            Stream,
            TrafficState,
            forward,
            keep,
            read_frames,
            relay_frame,
            request_metadata,
            seed_span_ids,
            span_id,
            spend,
            stamp_parent,
            sweep,
            trace_entry,
            trace_stream,
            watch,
        )

        COMPILED = True
    except ImportError as exc:  # not built (no compiler when installed): same behaviour, slower
        log.debug("compiled hot path unavailable (%s): using pure Python", exc)
if not COMPILED:
    from broker._hotpath import (  # type: ignore[no-redef]
        OPEN_CACHE_SIZE,
        TOO_LARGE,
        Bucket,
        RouteRules,
        SpanRing,
        Stream,
        TrafficState,
        forward,
        keep,
        read_frames,
        relay_frame,
        request_metadata,
        seed_span_ids,
        span_id,
        spend,
        stamp_parent,
        sweep,
        trace_entry,
        trace_stream,
        watch,
    )

"""The client's per-frame codec, compiled when it can be: the one import ``broker.client`` uses.

As for the relay's hot path (:mod:`broker.hotpath`), the compiled module
(``broker/client/_codec_c.pyx``, built by ``pip install``) is used when it imports, and the
pure-Python one (``broker/client/_codec.py``, the source of truth) otherwise.
``RSBROKER_NO_EXTENSIONS=1`` forces pure Python, at build time and at import.
:data:`COMPILED` says which one runs.
"""

from __future__ import annotations

import logging

from broker.hotpath import NO_EXTENSIONS

__all__ = ["COMPILED", "encode_payload", "encode_request", "prefixed", "read_frames", "received", "request_parts"]

log = logging.getLogger("rsbroker.client")

COMPILED = False
if not NO_EXTENSIONS:
    try:
        from broker.client._codec_c import (  # type: ignore[import-not-found,no-redef]
            encode_payload,
            encode_request,
            prefixed,
            read_frames,
            received,
            request_parts,
        )

        COMPILED = True
    except ImportError as exc:  # not built (no compiler when installed): same behaviour, slower
        log.debug("compiled client codec unavailable (%s): using pure Python", exc)
if not COMPILED:
    from broker.client._codec import (  # type: ignore[no-redef]
        encode_payload,
        encode_request,
        prefixed,
        read_frames,
        received,
        request_parts,
    )

"""What the rsocket-py rows share: the one handler, and connection settings for both ends.

"Same handler" is the point of the issue-3 hop ratio: the direct server and the provider behind
the broker run this exact class, so the only difference between the two rows is the broker.
The handler echoes and ignores metadata (no RequestRouter), the cheapest a user of
rsocket-py can write, which makes the broker's share of the work the largest it can be.

Both ends read 64 KiB at a time: rsocket-py's TransportTCP default of 1 KiB would make the
library, not the broker or the server, the figure being measured.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from rsocket.extensions.mimetypes import WellKnownMimeTypes
from rsocket.helpers import create_future
from rsocket.payload import Payload
from rsocket.request_handler import BaseRequestHandler
from rsocket.streams.stream_from_generator import StreamFromGenerator

READ_BUFFER_BYTES = 65536

#: keyword arguments for RSocketClient/RSocketServer: composite metadata, octet-stream data,
#: keepalive slow enough that it never competes with the load.
CONNECTION_SETTINGS: dict[str, Any] = {
    "metadata_encoding": WellKnownMimeTypes.MESSAGE_RSOCKET_COMPOSITE_METADATA,
    "data_encoding": WellKnownMimeTypes.APPLICATION_OCTET_STREAM,
    "keep_alive_period": timedelta(seconds=20),
    "max_lifetime_period": timedelta(seconds=120),
}


def quiet_library_logs() -> None:
    """Keep rsocket-py's per-frame warnings (frames for streams a finished cell cancelled) off stderr."""
    logging.getLogger("rsocket").setLevel(logging.CRITICAL)


def _repeat(item: tuple[Payload, bool]) -> Iterator[tuple[Payload, bool]]:
    """An endless generator (StreamFromGenerator closes it on CANCEL, so a plain iterator will not do)."""
    while True:
        yield item


class EchoHandler(BaseRequestHandler):
    """request-response echoes the data; request-stream repeats it for as long as credit lasts."""

    async def request_response(self, payload: Payload):  # type: ignore[override]
        return create_future(Payload(payload.data))

    async def request_fire_and_forget(self, payload: Payload) -> None:
        return None

    async def request_stream(self, payload: Payload) -> StreamFromGenerator:  # type: ignore[override]
        item = (Payload(payload.data), False)
        return StreamFromGenerator(lambda: _repeat(item))

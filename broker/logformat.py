"""Log output for people (text) or for log shippers (one JSON object per line).

Structured fields come from ``extra=`` on the log call: ``connection_id`` and ``route``
where the caller knows them (``log.info(..., extra=conn_fields(session))``). Every JSON
line also names the node, so lines from many nodes can be merged and still told apart.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

#: record attributes copied into JSON lines when a log call supplied them through ``extra``
FIELDS = ("connection_id", "route", "peer")


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "node_id", "message", [connection_id, route, peer], [exception]}``."""

    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "node_id": self.node_id,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            if hasattr(record, name):
                line[name] = getattr(record, name)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def setup_logging(level: str, fmt: str = "text", node_id: str = "") -> None:
    """Send every log record (and Python warnings) to stderr in ``fmt``: text or json."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(node_id))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    logging.captureWarnings(True)


def conn_fields(session: Any, route: str | None = None) -> dict[str, Any]:
    """The ``extra=`` of a log call about one connection (and the route, when known)."""
    fields: dict[str, Any] = {"connection_id": session.id, "peer": session.peer_text}
    if route is not None:
        fields["route"] = route
    return fields


class LogBudget:
    """At most ``per_s`` lines of one kind a second; the rest counted and told in one line.

    For events that are worth a line each at human rates but come by the thousand in a storm
    (a fleet's registrations: formatting and writing the line was a sixth of a connect's CPU,
    and ten thousand lines tell an operator less than one count)."""

    def __init__(self, logger: logging.Logger, what: str, per_s: int = 20) -> None:
        self.logger = logger
        self.what = what
        self.per_s = per_s
        self._second = -1
        self._used = 0
        self._skipped = 0

    def allow(self, now: float) -> bool:
        """Whether a line may be written at ``now`` (seconds, any clock); counts it if not."""
        second = int(now)
        if second != self._second:
            if self._skipped:
                self.logger.info("%d more %s not logged one by one (over %d a second)", self._skipped, self.what, self.per_s)
            self._second, self._used, self._skipped = second, 0, 0
        if self._used < self.per_s:
            self._used += 1
            return True
        self._skipped += 1
        return False

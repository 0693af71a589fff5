"""The open-file limit: every connection, served or simulated, is a file descriptor."""

from __future__ import annotations

import logging

__all__ = ["raise_open_file_limit"]

log = logging.getLogger("rsbroker.fdlimit")


def raise_open_file_limit() -> int:
    """Raise this process's soft open-file limit to its hard limit; return the limit now in force.

    Every client connection is a file descriptor, and distributions start processes with a
    soft limit (often 1024) far below the hard one: a node holding a device fleet (or the
    simulator dialling one) would fail with EMFILE long before its memory or CPU ran out.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, exc)
    return soft

"""Query parameters shared by the list endpoints at fleet size: filters, counts, pages.

``/api/v1/services``, ``/connections``, ``/members`` and ``/topology`` take ``?prefix=``
(names starting with it), ``?node=`` (one node), ``?limit=`` and ``?cursor=`` (the last
key of the previous page; the answer's ``next_cursor``, null on the last page). Every
answer counts first: ``total`` is how many match the filters, whatever the page. Keys are
sorted, so a page costs one sort of the matching keys: tens of milliseconds at 50,000.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

from aiohttp import web

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "Page", "page_of", "page_params"]

#: Items per page when ``?limit=`` is not given: every list a small cluster has fits.
DEFAULT_LIMIT = 1000
#: Largest ``?limit=``: one answer stays well under a second and a few megabytes.
MAX_LIMIT = 10_000

K = TypeVar("K")


@dataclass(frozen=True)
class Page:
    prefix: str = ""
    node: str | None = None
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None


def page_params(request: web.Request) -> Page:
    """The paging and filter parameters; 400 with the parameter named when one is bad."""
    query = request.query
    text = query.get("limit")
    limit = DEFAULT_LIMIT
    if text is not None:
        if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
            raise web.HTTPBadRequest(
                text=f'{{"error": "limit must be an integer within 1..{MAX_LIMIT}", "parameter": "limit"}}',
                content_type="application/json",
            )
        limit = int(text)
    return Page(prefix=query.get("prefix", ""), node=query.get("node") or None, limit=limit,
                cursor=query.get("cursor") or None)


def page_of(keys: Sequence[K], page: Page, cursor_of: Callable[[str], K]) -> tuple[list[K], K | None]:
    """The page of sorted ``keys`` after ``page.cursor``, and the cursor of the next page."""
    start = bisect.bisect_right(keys, cursor_of(page.cursor)) if page.cursor is not None else 0  # type: ignore[arg-type, call-overload]
    chosen = list(keys[start:start + page.limit])
    more = start + page.limit < len(keys)
    return chosen, (chosen[-1] if more and chosen else None)

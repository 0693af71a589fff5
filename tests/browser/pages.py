"""Drive the example page (examples/browser) from a test: where it is, how to point it at a
broker, how to wait for its run and read its report.

The page publishes its outcome as ``window.rsbroker`` (see examples/browser/src/report.ts);
its ``state`` ends as ``"done"`` or ``"failed"``, so tests wait on that condition, not on time.
"""

from pathlib import Path
from urllib.parse import urlencode

from playwright.async_api import Page

from .greeter import SERVICE

EXAMPLE_DIR = Path(__file__).resolve().parents[2] / "examples" / "browser"
BUNDLE = EXAMPLE_DIR / "dist" / "app.js"
#: Flags that keep Chromium headless, sandbox-free (CI runs as root) and off the network.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: The route the page calls to show how a refused request looks (examples/browser/src/main.ts).
UNSERVED_ROUTE = "com.acme.unserved.ping"
#: RSocket error codes the page reports in ``error.code`` / ``unserved.code``.
REJECTED_SETUP = 0x003
REJECTED = 0x202
#: How long a page may take to finish its run (ms): far above the ~0.1 s it needs when idle.
PAGE_TIMEOUT_MS = 30_000
_FINISHED = "() => window.rsbroker !== undefined && ['done', 'failed'].includes(window.rsbroker.state)"


def page_url(site: str, ws_url: str, **params: str | int) -> str:
    """URL of the example page pointed at ``ws_url``; ``params`` are its other query settings
    (``token``, ``service``, ``name``, ``count``, ``batch``)."""
    return f"{site}/index.html?" + urlencode({"url": ws_url, **params})


def greeter_page(site: str, ws_url: str, **params: str | int) -> str:
    """The page pointed at ``ws_url`` and calling the tests' greeter service."""
    return page_url(site, ws_url, service=SERVICE, **params)


async def run_page(page: Page, url: str) -> dict[str, object]:
    """Opens ``url``, waits until the page's run ends and returns its ``window.rsbroker`` report."""
    await page.goto(url)
    await page.wait_for_function(_FINISHED, timeout=PAGE_TIMEOUT_MS)
    report: dict[str, object] = await page.evaluate("window.rsbroker")
    return report

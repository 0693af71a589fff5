"""aiohttp HTTP/1.1 request-response: ``POST /echo`` answers with the request body.

``python -m benchmarks.servers.http_echo --listen HOST:PORT``; aiohttp on uvloop, no access log
(logging every request would measure the logger).
"""

from __future__ import annotations

import argparse

from aiohttp import web

from benchmarks.servers.common import announce, run, split_address, until_signalled


async def echo(request: web.Request) -> web.Response:
    return web.Response(body=await request.read(), content_type="application/octet-stream")


async def _serve(listen: str) -> None:
    app = web.Application()
    app.router.add_post("/echo", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = split_address(listen)
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()  # type: ignore[union-attr]
    announce(address=f"{bound[0]}:{bound[1]}")
    try:
        await until_signalled()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.servers.http_echo", description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:0")
    args = parser.parse_args(argv)
    run(lambda: _serve(args.listen))


if __name__ == "__main__":
    main()

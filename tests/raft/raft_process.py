"""A RaftNode in its own process, driven by JSON lines on stdin (for the real-process test).

Prints ``{"port": N}`` once listening, then answers each request line with one line.
Requests: {"op": "peers", "addrs": {id: [host, port]}}, {"op": "put", "key", "value"},
{"op": "list"}, {"op": "status"}, {"op": "add", "node"}.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from cluster.raft.node import NodeOptions, RaftNode
from cluster.raft.transport import TcpTransport


async def serve(node_id: str, data_dir: str, bootstrap: bool) -> None:
    addrs: dict[str, tuple[str, int]] = {}
    transport = TcpTransport(node_id, addrs.get)
    _, port = await transport.listen("127.0.0.1", 0)
    node = RaftNode(node_id, data_dir, transport, options=NodeOptions(tick_interval=0.02, request_timeout=2.0))
    await node.start(bootstrap=bootstrap)
    print(json.dumps({"port": port}), flush=True)
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        req = json.loads(line)
        reply: dict[str, Any]
        try:
            if req["op"] == "peers":
                addrs.update({k: (v[0], v[1]) for k, v in req["addrs"].items()})
                reply = {"ok": True}
            elif req["op"] == "put":
                reply = {"ok": await node.put(req["key"], req["value"])}
            elif req["op"] == "list":
                reply = {"ok": node.list()}
            elif req["op"] == "status":
                reply = {"ok": node.status()}
            else:
                # generous: on a loaded machine catching a learner up can take seconds
                await node.add_member(req["node"], timeout=20.0)
                reply = {"ok": True}
        except Exception as exc:  # noqa: BLE001 - every failure is reported to the test
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(reply), flush=True)
    await node.stop()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], sys.argv[2], sys.argv[3] == "bootstrap"))

"""OTLP export of hop spans (``--otlp-endpoint``, the ``otlp`` extra) from a real ``rsbroker serve``.

The collector is a small aiohttp server on 127.0.0.1 that takes what a real OpenTelemetry
collector takes, ``POST /v1/traces`` with an OTLP protobuf body, and decodes it with
opentelemetry-proto's classes. Without the extra installed, the node must refuse the
setting rather than start without the export it was asked for.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from broker import frames as fr
from broker import metadata as md
from broker import otlp, tracing
from broker.frames import FrameType
from tests.support.admin import get_json, wait_for
from tests.support.brokerproc import BrokerFactory, run_rsbroker
from tests.support.rawclient import RawClient

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
needs_otlp = pytest.mark.skipif(otlp.missing(), reason="the otlp extra is not installed: pip install -e '.[otlp]'")


class Collector:
    """What an OTLP/HTTP collector received on ``POST /v1/traces``."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, bytes]] = []
        self.url = ""

    async def traces(self, request: web.Request) -> web.Response:
        self.requests.append((request.content_type, await request.read()))
        return web.Response(content_type="application/x-protobuf", body=b"")

    def spans(self) -> list:
        """Every span received so far, decoded."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        out = []
        for content_type, body in self.requests:
            assert content_type == "application/x-protobuf", content_type
            for resource_spans in ExportTraceServiceRequest.FromString(body).resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    out.extend(scope_spans.spans)
        return out


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    received = Collector()
    app = web.Application()
    app.router.add_post("/v1/traces", received.traces)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    received.url = f"http://127.0.0.1:{port}"
    try:
        yield received
    finally:
        await runner.cleanup()


@needs_otlp
async def test_hop_span_reaches_the_collector_between_the_requesters_and_the_providers_spans(
    broker_factory: BrokerFactory, collector: Collector
) -> None:
    # the collector URL without a path: the node posts to its /v1/traces, as OTLP/HTTP says
    node = await asyncio.to_thread(
        broker_factory.start, "--otlp-endpoint", collector.url
    )
    async with await RawClient.tcp(node.tcp) as provider, await RawClient.tcp(node.tcp) as requester:
        await provider.setup(["t.calc"], "calc-1")
        await requester.setup()
        sid = requester.next_stream_id()
        metadata = md.route_metadata("t.calc.add") + tracing.entry(f"00-{TRACE_ID}-{CLIENT_SPAN}-01", "vendor=abc")
        await requester.send(fr.request_frame(FrameType.REQUEST_RESPONSE, sid, metadata, b"x"))
        request = await provider.expect(FrameType.REQUEST_RESPONSE)
        await provider.send(fr.payload_frame(request.stream_id, b"y", next_=True, complete=True))
        await requester.expect(FrameType.PAYLOAD, stream_id=sid)
    [span] = await wait_for(collector.spans, timeout=30, message="the hop span at the collector")
    assert span.trace_id == bytes.fromhex(TRACE_ID) and span.parent_span_id == bytes.fromhex(CLIENT_SPAN)
    assert len(span.span_id) == 8 and span.span_id != bytes.fromhex(CLIENT_SPAN)
    # the provider got the hop span as its parent: its own spans nest under the exported one
    assert md.find_entry(request.metadata, tracing.TRACE_MIME) == f"00-{TRACE_ID}-{span.span_id.hex()}-01\nvendor=abc".encode()
    assert span.name == "t.calc.add" and span.trace_state == "vendor=abc"
    attributes = {a.key: a.value for a in span.attributes}
    assert attributes["rsbroker.node"].string_value == node.node_id
    assert attributes["rsbroker.route"].string_value == "t.calc.add"
    assert attributes["rsbroker.provider"].string_value == "calc-1"
    assert attributes["rsbroker.outcome"].string_value == "ok"
    assert 0 <= attributes["rsbroker.first_response_s"].double_value <= attributes["rsbroker.duration_s"].double_value
    assert span.end_time_unix_nano >= span.start_time_unix_nano > 0
    status, body = await get_json(node.admin, "/api/v1/traces")
    assert status == 200 and body["otlp_spans_dropped"] == 0, body


def test_without_the_extra_the_node_refuses_the_setting(tmp_path: Path) -> None:
    # an empty 'opentelemetry' package first on the path hides the installed SDK, as on a
    # node installed without the extra
    (tmp_path / "opentelemetry").mkdir()
    (tmp_path / "opentelemetry" / "__init__.py").write_text("")
    done = run_rsbroker(
        "serve", "--tcp", "127.0.0.1:0", "--otlp-endpoint", "http://127.0.0.1:4318", env={"PYTHONPATH": str(tmp_path)}
    )
    assert done.returncode != 0, done.stdout
    assert "--otlp-endpoint needs the OpenTelemetry packages" in done.stderr, done.stderr
    assert "pip install 'rsbroker[otlp]'" in done.stderr


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("--otlp-endpoint", "127.0.0.1:4318"), "--otlp-endpoint must be an http:// or https:// URL"),
        (("--otlp-endpoint", "http://127.0.0.1:4318", "--trace-spans-kept", "0"), "--otlp-endpoint needs tracing on"),
    ],
)
def test_an_endpoint_that_cannot_work_is_refused(args: tuple[str, ...], reason: str) -> None:
    done = run_rsbroker("serve", "--tcp", "127.0.0.1:0", *args)
    assert done.returncode != 0 and reason in done.stderr, done.stderr

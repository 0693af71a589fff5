"""Three nodes behave as one broker: any model from any node, load spread, policies from the store.

The providers sit on n1 (and n2), the requesters on n3, so every request crosses a broker
link (one hop). The tests share one cluster and keep apart by service name.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from rsocket.payload import Payload
from rsocket.streams.stream_from_generator import StreamFromGenerator

from broker.client import route
from broker.frames import FrameType, cancel_frame, request_n_frame
from tests.cluster.peers import ask_who, provider, requester
from tests.relay.rsocket_provider import Recorder
from tests.support.admin import get_json, wait_for
from tests.support.brokerproc import run_rsbroker
from tests.support.cluster import Cluster, put_config
from tests.support.peers import raw_requester


async def test_every_interaction_model_from_node3_to_a_provider_on_node1(cluster: Cluster, service: str) -> None:
    recorder = Recorder()
    async with provider(cluster["n1"], service, "p1", recorder):
        await cluster.wait_serves(service, {"p1"})
        async with requester(cluster["n3"]) as client:
            reply = await client.request_response(Payload(b"ada", route(f"{service}.hello")))
            assert reply.data == b"hello ada"

            items = await client.request_stream(Payload(b"5", route(f"{service}.count")))
            assert [p.data for p in items] == [b"1", b"2", b"3", b"4", b"5"]

            # rsocket-py asks for 2 at a time: the stream only ends if REQUEST_N crosses the link
            items = await client.request_stream(Payload(b"7", route(f"{service}.count")), limit_rate=2)
            assert [p.data for p in items] == [str(i).encode() for i in range(1, 8)]

            def words() -> Any:
                for i, word in enumerate([b"alpha", b"beta", b"gamma"]):
                    yield Payload(word), i == 2

            items = await client.request_channel(Payload(b"start", route(f"{service}.upper")), StreamFromGenerator(words))
            assert [p.data for p in items] == [b"START", b"ALPHA", b"BETA", b"GAMMA", b"<end>"]

            for i in range(3):
                await client.fire_and_forget(Payload(b"note %d" % i, route(f"{service}.log")))
            await wait_for(lambda: len(recorder.fire_and_forget) == 3, message="three fire-and-forget messages on n1")
            assert sorted(recorder.fire_and_forget) == [b"note 0", b"note 1", b"note 2"]


async def test_request_n_and_cancel_cross_the_link_frame_by_frame(cluster: Cluster, service: str) -> None:
    """An endless stream from n1 read from n3 with explicit credit: it yields what was asked,
    and after CANCEL the requester's connection still works."""
    async with provider(cluster["n1"], service, "p1"):
        await cluster.wait_serves(service, {"p1"})
        raw = await raw_requester(cluster["n3"])
        try:
            sid = await raw.request(FrameType.REQUEST_STREAM, f"{service}.ticks", b"", initial_n=2)
            got = [(await raw.expect(FrameType.PAYLOAD, stream_id=sid)).data for _ in range(2)]
            await raw.send(request_n_frame(sid, 3))
            got += [(await raw.expect(FrameType.PAYLOAD, stream_id=sid)).data for _ in range(3)]
            assert got == [b"0", b"1", b"2", b"3", b"4"]
            await raw.send(cancel_frame(sid))
            probe = await raw.request(FrameType.REQUEST_RESPONSE, f"{service}.hello", b"again")
            # ticks sent before the CANCEL arrived may still come; the probe's answer must too
            while (frame := await raw.recv()).stream_id != probe:
                assert frame.type == FrameType.KEEPALIVE or (frame.stream_id == sid and frame.type == FrameType.PAYLOAD), frame
            assert frame.type == FrameType.PAYLOAD and frame.data == b"hello again"
        finally:
            await raw.close()


async def test_load_is_spread_over_providers_on_two_nodes(cluster: Cluster, service: str) -> None:
    async with provider(cluster["n1"], service, "on-n1"), provider(cluster["n2"], service, "on-n2"):
        await cluster.wait_serves(service, {"on-n1", "on-n2"})
        async with requester(cluster["n3"]) as client:
            answers = [await ask_who(client, service) for _ in range(40)]
    counts = {name: answers.count(name) for name in ("on-n1", "on-n2")}
    assert counts["on-n1"] + counts["on-n2"] == 40
    assert counts["on-n1"] > 0 and counts["on-n2"] > 0, counts


async def test_a_weighted_service_policy_written_on_n1_changes_the_split_on_n3(cluster: Cluster, service: str) -> None:
    async with provider(cluster["n1"], service, "heavy"), provider(cluster["n2"], service, "light"):
        await cluster.wait_serves(service, {"heavy", "light"})
        await put_config(str(cluster["n1"].admin), f"services/{service}", {"policy": "weighted", "weights": {"heavy": 3, "light": 1}})

        async def applied_on_n3() -> bool:
            _, body = await get_json(str(cluster["n3"].admin), "/api/v1/services")
            return body["services"].get(service, {}).get("policy") == "weighted"

        await wait_for(applied_on_n3, message="the policy applied on n3")
        async with requester(cluster["n3"]) as client:
            answers = [await ask_who(client, service) for _ in range(40)]
    # smooth weighted round robin: exactly 3 of every 4 picks go to the weight-3 instance
    assert answers.count("heavy") == 30 and answers.count("light") == 10, answers


async def test_a_new_service_is_callable_from_every_node(cluster: Cluster, service: str) -> None:
    async with provider(cluster["n2"], service, "fresh"):
        await cluster.wait_serves(service, {"fresh"})
        for node in cluster:
            async with requester(node) as client:
                assert await ask_who(client, service) == "fresh", node.node_id


async def test_topology_lists_every_node_with_services_and_links_on_every_node(cluster: Cluster, service: str) -> None:
    async with provider(cluster["n1"], service, "topo"):
        await cluster.wait_serves(service, {"topo"})

        async def complete(admin: str) -> dict[str, Any] | None:
            status, body = await get_json(admin, "/api/v1/topology")
            assert status == 200, body
            nodes = {n["node_id"]: n for n in body["nodes"]}
            ready = (
                set(nodes) == {"n1", "n2", "n3"}
                and all(n["state"] == "alive" for n in nodes.values())
                and service in nodes["n1"]["services"]
                and all(n["link"] == ("self" if name == body["self"] else "up") for name, n in nodes.items())
            )
            return body if ready else None

        for node in cluster:
            body = await wait_for(functools.partial(complete, str(node.admin)), message=f"a complete topology on {node.node_id}")
            assert body["self"] == node.node_id
            own = next(n for n in body["nodes"] if n["node_id"] == node.node_id)
            assert own["tcp"] == node.tcp and isinstance(own["connections"], int)
        n1_view = await complete(str(cluster["n1"].admin))
        assert n1_view is not None
        assert next(n for n in n1_view["nodes"] if n["node_id"] == "n1")["connections"] >= 1  # the provider

        done = await asyncio.to_thread(run_rsbroker, "status", "--admin", str(cluster["n2"].admin))
        assert done.returncode == 0, done.stderr
        rows = {line.split()[0]: line for line in done.stdout.splitlines()[1:] if line.startswith("n")}
        assert set(rows) == {"n1", "n2", "n3"}, done.stdout
        assert "*" in rows["n2"] and "self" in rows["n2"]
        assert "alive" in rows["n1"] and "up" in rows["n1"] and service in rows["n1"], done.stdout
        assert "raft: leader n" in done.stdout

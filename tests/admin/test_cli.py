"""The command line as an operator meets it: every flag explained, the admin commands on a
real node (tables, ``--json``, the admin token from ``--token`` or ``RSBROKER_TOKEN``), and
``--log-format json`` lines that parse and carry the node and connection."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest

from broker import frames as fr
from rsbroker.cli import COMMANDS, resolve
from broker.settings import _FILE_ONLY, Settings
from broker.settings_help import HELP, TOPICS
from tests.e2e_security.pki import Pki, make_pki
from tests.support.admin import wait_for
from tests.support.brokerproc import BrokerFactory, BrokerProcess, run_rsbroker
from tests.support.rawclient import RawClient


def _parsers(parser: argparse.ArgumentParser, name: str) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_option_of_every_command_has_help() -> None:
    missing = []
    walked = 0
    for prefix, (_, build, _) in COMMANDS.items():
        for name, parser in _parsers(resolve(build)(), "rsbroker " + " ".join(prefix)):
            walked += 1
            for action in parser._actions:
                if action.option_strings and not (action.help or "").strip():
                    missing.append(f"{name} {'/'.join(action.option_strings)}")
    assert walked >= len(COMMANDS) + 6  # cluster up|down, certs init|node|client|keypair, config ...
    assert missing == []


def test_every_setting_is_documented_under_a_topic() -> None:
    settings = {f.name for f in dataclasses.fields(Settings)} - _FILE_ONLY
    assert set(HELP) == settings
    assert {topic for topic, _ in HELP.values()} <= set(TOPICS)


def test_serve_help_groups_flags_and_names_defaults_and_env() -> None:
    result = run_rsbroker("serve", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for title in TOPICS.values():
        assert " ".join(title.split()) + ":" in text
    assert "concurrent streams a connection may open, count (default: 100000; env RSBROKER_MAX_STREAMS)" in text
    assert "time a new connection has to send SETUP, seconds (default: 10.0" in text


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("cli-pki"))


@pytest.fixture(scope="module")
def node(module_broker_factory: BrokerFactory) -> BrokerProcess:
    return module_broker_factory.start("--log-format", "json")


@pytest.fixture(scope="module")
def guarded(module_broker_factory: BrokerFactory, pki: Pki) -> BrokerProcess:
    return module_broker_factory.start(*pki.jwt_args(), "--admin-require-token")


def rsbroker(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = run_rsbroker(*args, env=env)
    return result.returncode, result.stdout, result.stderr


async def test_config_get_put_delete_list_with_tables_and_json(node: BrokerProcess) -> None:
    admin = ["--admin", str(node.admin)]
    code, out, err = await asyncio.to_thread(rsbroker, "config", "put", "services/orders", '{"policy": "weighted"}', *admin)
    assert code == 0, err
    assert out.startswith('services/orders = {"policy": "weighted"} (raft index ')
    code, out, err = await asyncio.to_thread(rsbroker, "config", "get", "services/orders", *admin, "--json")
    assert code == 0 and json.loads(out) == {"key": "services/orders", "value": {"policy": "weighted"}}, err
    code, out, err = await asyncio.to_thread(rsbroker, "config", "list", "--prefix", "services/", *admin)
    assert code == 0, err
    assert out.splitlines()[0].split() == ["KEY", "VALUE"]
    assert out.splitlines()[1].split(maxsplit=1) == ["services/orders", '{"policy": "weighted"}']
    code, out, err = await asyncio.to_thread(rsbroker, "config", "put", "services/orders", '{"policy": "fastest"}', *admin)
    assert code == 1 and "HTTP 400" in err and "'policy' must be one of" in err
    code, out, err = await asyncio.to_thread(rsbroker, "config", "delete", "services/orders", *admin)
    assert code == 0 and out.strip() == "deleted services/orders", err
    code, out, err = await asyncio.to_thread(rsbroker, "config", "get", "services/orders", *admin)
    assert code == 1 and "HTTP 404" in err and "no config key 'services/orders'" in err
    code, _, err = await asyncio.to_thread(rsbroker, "config", "put", "services/x", "{not json", *admin)
    assert code == 2 and "not JSON" in err


async def test_services_connections_members_tables_and_json(node: BrokerProcess) -> None:
    admin = ["--admin", str(node.admin)]
    async with await RawClient.tcp(node.tcp) as provider:
        await provider.setup(["cli.greeter"], "greeter-7")
        for _ in range(100):  # the registration is processed as soon as the SETUP is read
            code, out, err = await asyncio.to_thread(rsbroker, "services", *admin, "--json")
            if "cli.greeter" in json.loads(out)["services"]:
                break
        code, out, err = await asyncio.to_thread(rsbroker, "services", *admin)
        assert code == 0, err
        header, *rows = out.splitlines()
        assert header.split()[:3] == ["SERVICE", "POLICY", "INSTANCE"]
        assert any(row.split()[:3] == ["cli.greeter", "round_robin", "greeter-7"] for row in rows)
        code, out, err = await asyncio.to_thread(rsbroker, "connections", *admin)
        assert code == 0, err
        assert any("greeter-7" in row and "cli.greeter" in row for row in out.splitlines()[1:])
        code, out, err = await asyncio.to_thread(rsbroker, "connections", *admin, "--json")
        assert any(c["instance"] == "greeter-7" for c in json.loads(out)["connections"])
    code, out, err = await asyncio.to_thread(rsbroker, "members", *admin)
    assert code == 0, err
    assert out.splitlines()[1].split()[:2] == [node.node_id, "alive"]


async def test_admin_token_from_flag_or_environment(guarded: BrokerProcess, pki: Pki) -> None:
    admin = ["--admin", str(guarded.admin)]
    code, _, err = await asyncio.to_thread(rsbroker, "members", *admin)
    assert code == 1 and "HTTP 401" in err and "Bearer" in err
    viewer = pki.token("viewer", ("greeter",))
    code, _, err = await asyncio.to_thread(rsbroker, "members", *admin, "--token", viewer)
    assert code == 1 and "HTTP 403" in err and "lacks the admin role" in err
    operator = pki.token("operator", ("admin",))
    code, out, err = await asyncio.to_thread(rsbroker, "members", *admin, "--token", operator)
    assert code == 0 and out.startswith("NODE"), err
    code, out, err = await asyncio.to_thread(rsbroker, "config", "list", *admin, "--json", env={"RSBROKER_TOKEN": operator})
    assert code == 0 and "items" in json.loads(out), err


async def test_json_logs_parse_and_carry_node_and_connection(node: BrokerProcess) -> None:
    async with await RawClient.tcp(node.tcp) as client:
        await client.send(fr.request_n_frame(1, 1))  # REQUEST_N before SETUP: refused, logged
        await client.wait_closed()
    async with await RawClient.tcp(node.tcp) as provider:
        await provider.setup(["cli.logged"], "logged-1")
        await provider.send(fr.request_n_frame(0, 1))  # REQUEST_N on stream 0: a protocol error
        await provider.wait_closed()

    def records() -> list[dict[str, Any]]:
        lines = [line for line in node.output().splitlines() if not line.startswith("rsbroker ready ")]
        return [json.loads(line) for line in lines]  # every line must be one JSON object

    def closing() -> list[dict[str, Any]]:  # the broker's stderr is read by a thread: wait for it
        return [r for r in records() if r["message"].startswith("closing connection")]

    closed = await wait_for(lambda: len(closing()) >= 2 and closing(), message="two 'closing connection' log lines")
    assert all(isinstance(r["connection_id"], int) and r["peer"].startswith("127.0.0.1:") for r in closed)
    assert all({"ts", "level", "logger", "node_id", "message"} <= set(r) for r in records())
    assert {r["node_id"] for r in records()} == {node.node_id}
    assert any("registered instance 'logged-1'" in r["message"] and "connection_id" in r for r in records())


def test_refused_log_format_names_the_setting() -> None:
    result = run_rsbroker("serve", "--log-format", "xml", "--tcp", "127.0.0.1:0")
    assert result.returncode == 2
    assert "log_format must be one of text, json" in result.stderr

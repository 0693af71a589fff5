"""The config state machine: typed validation, all-or-nothing apply, watches, snapshots."""

from __future__ import annotations

import asyncio
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cluster.raft.statemachine import Change, Command, ConfigStateMachine
from cluster.raft.validation import ValidationError, Validators


def apply(sm: ConfigStateMachine, index: int, op: str, key: str, value: object = None) -> str | None:
    _, result = sm.apply(index, Command(op, key, value).encode())
    return result.error


def pem_public_key() -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


GOOD = {
    "app/anything": {"nested": [1, 2.5, "x", None, True]},
    "services/com.acme.greeter": {"policy": "weighted", "weights": {"g-1": 3, "g-2": 1}, "prefer_local": True},
    "revoked/abc123": {"expires_at": 1893456000},
    "acl/greeters": {
        "principals": ["alice", "svc-*"],
        "roles": ["greeter"],
        "register": ["com.acme.*"],
        "call": ["com.acme.greeter.*"],
    },
    "acl/empty-lists-are-fine": {},
    "services/no-policy-means-round-robin": {"weights": {"a": 1}},
    "keys/ec-jwk": {
        "kty": "EC",
        "crv": "P-256",
        "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
    },
}

BAD = [
    ("nope/x", 1, "unknown config prefix"),
    ("app/", 1, "<prefix>/<name>"),
    ("app/nan", float("nan"), "NaN"),
    ("services/s", {"policy": "random"}, "'policy' must be one of"),
    ("services/s", {"policy": "weighted", "weights": {"a": -1}}, "integer >= 0"),
    ("services/s", {"policy": "weighted", "extra": 1}, "unknown service policy field"),
    ("services/s", {"policy": "round_robin", "prefer_local": "yes"}, "prefer_local"),
    ("services/s", {"weights": {"a": True}}, "integer >= 0"),
    ("revoked/j", {"expires_at": "soon"}, "unix seconds"),
    ("acl/r", {"principals": "alice"}, "must be a list of strings"),
    ("acl/r", {"calls": ["x"]}, "unknown field"),
    ("acl/r", {"call": ["com.acme greeter"]}, "whitespace"),
    ("keys/k", "-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n", "unreadable PUBLIC KEY block"),
    ("keys/k", {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "d": "AA"}, "private JWK"),
    ("keys/k", 42, "expected a public JWK"),
]


def test_good_values_of_every_type_apply() -> None:
    sm = ConfigStateMachine()
    values = dict(GOOD, **{"keys/pem": pem_public_key(), "keys/pem-object": {"pem": pem_public_key()}})
    for i, (key, value) in enumerate(values.items(), 1):
        assert apply(sm, i, "put", key, value) is None, key
    assert sm.list() == dict(sorted(values.items()))
    assert sm.list("acl/") == {k: v for k, v in values.items() if k.startswith("acl/")}


@pytest.mark.parametrize("key,value,message", BAD)
def test_bad_values_are_refused_with_a_message_and_change_nothing(key: str, value: object, message: str) -> None:
    sm = ConfigStateMachine()
    assert apply(sm, 1, "put", "app/keep", 1) is None
    before = sm.list()
    with pytest.raises(ValidationError, match=message):
        sm.validate(Command("put", key, value))
    error = apply(sm, 2, "put", key, value)
    assert error is not None and message.split("'")[0] in error
    assert sm.list() == before


def test_acl_validator_is_injectable() -> None:
    def only_admins(name: str, value: object) -> None:
        if value != {"roles": ["admin"]}:
            raise ValidationError(f"acl {name}: only admin rules here")

    sm = ConfigStateMachine(Validators(acl_validator=only_admins))
    assert apply(sm, 1, "put", "acl/a", {"roles": ["admin"]}) is None
    assert "only admin" in (apply(sm, 2, "put", "acl/b", {"roles": ["x"]}) or "")


def test_undecodable_entry_is_reported_not_raised() -> None:
    sm = ConfigStateMachine()
    _, result = sm.apply(1, b"\xc1 not msgpack")
    assert result.error and "undecodable" in result.error
    assert sm.applied_index == 1


def test_watch_callbacks_filter_by_prefix_and_can_unsubscribe() -> None:
    sm = ConfigStateMachine()
    seen: list[Change] = []
    stop = sm.watch("acl/", seen.append)
    apply(sm, 1, "put", "acl/a", {})
    apply(sm, 2, "put", "app/x", 1)
    apply(sm, 3, "delete", "acl/a")
    stop()
    apply(sm, 4, "put", "acl/b", {})
    assert [(c.key, c.deleted, c.index) for c in seen] == [("acl/a", False, 1), ("acl/a", True, 3)]


def test_a_failing_watcher_does_not_stop_apply() -> None:
    sm = ConfigStateMachine()
    sm.watch("", lambda change: 1 / 0)
    assert apply(sm, 1, "put", "app/x", 1) is None
    assert sm.get("app/x") == 1


async def test_async_watch_stream() -> None:
    sm = ConfigStateMachine()
    stream = sm.stream("services/")
    apply(sm, 1, "put", "services/s", {"policy": "round_robin"})
    apply(sm, 2, "put", "app/ignored", 1)
    change = await asyncio.wait_for(stream.__anext__(), 1)
    assert (change.key, change.value) == ("services/s", {"policy": "round_robin"})
    stream.close()
    assert [c async for c in stream] == []


def test_snapshot_restore_round_trip_notifies_differences() -> None:
    a = ConfigStateMachine()
    apply(a, 1, "put", "app/x", 1)
    apply(a, 2, "put", "app/y", {"z": [1]})
    blob = a.snapshot()
    b = ConfigStateMachine()
    apply(b, 1, "put", "app/old", True)
    apply(b, 2, "put", "app/x", 1)
    seen: list[tuple[str, bool]] = []
    b.watch("", lambda c: seen.append((c.key, c.deleted)))
    b.restore(blob, 2)
    assert b.list() == a.list()
    assert sorted(seen) == [("app/old", True), ("app/y", False)]
    assert json.dumps(b.list(), sort_keys=True) == json.dumps(a.list(), sort_keys=True)


def test_reads_return_copies() -> None:
    sm = ConfigStateMachine()
    apply(sm, 1, "put", "app/x", {"list": [1]})
    sm.get("app/x")["list"].append(2)
    assert sm.get("app/x") == {"list": [1]}


def test_a_retried_command_is_applied_once_even_across_snapshots() -> None:
    sm = ConfigStateMachine()
    first = Command("put", "app/x", 1, "n1/aa", 7).encode()
    assert not sm.apply(1, first)[1].duplicate
    assert sm.apply(2, Command("put", "app/x", 2, "n2/bb", 1).encode())[1].error is None
    _, retry = sm.apply(3, first)  # the retry arrives after a later write
    assert retry.duplicate and sm.get("app/x") == 2
    restored = ConfigStateMachine()
    restored.restore(sm.snapshot(), 3)
    assert restored.apply(4, first)[1].duplicate
    assert restored.get("app/x") == 2

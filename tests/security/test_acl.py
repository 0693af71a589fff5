"""Access rules: parsing, allow/deny for registration and calls, glob edge cases, live changes."""

from __future__ import annotations

import fnmatch
import json
import tomllib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.auth import ANONYMOUS, AccessPolicy, Principal, denied_message, parse_rule, rules_from_config
from broker.auth.acl import AccessRule, rules_from_store

CONTRACT_RULE = {
    "principals": ["alice", "svc-*"],
    "roles": ["greeter"],
    "register": ["com.acme.*"],
    "call": ["com.acme.greeter.*"],
}

alice = Principal("alice", source="jwt")
bob = Principal("bob", source="jwt")
svc = Principal("svc-7", source="jwt")
greeter_role = Principal("carol", roles=frozenset({"greeter"}), source="jwt")
admin = Principal("root", roles=frozenset({"admin"}), source="jwt")


@pytest.fixture
def policy() -> AccessPolicy:
    return AccessPolicy({"acme": parse_rule(CONTRACT_RULE)})


# -- decisions ------------------------------------------------------------------------------


@pytest.mark.parametrize("who", [alice, svc, greeter_role])
def test_rule_allows_its_principals_by_name_glob_or_role(policy: AccessPolicy, who: Principal) -> None:
    assert policy.can_register(who, "com.acme.greeter")
    assert policy.can_call(who, "com.acme.greeter.hello")


def test_others_are_denied_both_registration_and_calls(policy: AccessPolicy) -> None:
    assert not policy.can_register(bob, "com.acme.greeter")
    assert not policy.can_call(bob, "com.acme.greeter.hello")
    assert not policy.can_call(ANONYMOUS, "com.acme.greeter.hello")


def test_granted_only_what_the_globs_cover(policy: AccessPolicy) -> None:
    assert not policy.can_register(alice, "com.other.greeter")
    assert not policy.can_call(alice, "com.acme.billing.charge")
    assert policy.can_call(alice, "com.acme.greeter.v2.hello")  # '*' spans dots


def test_default_deny_without_rules() -> None:
    policy = AccessPolicy()
    assert not policy.can_register(alice, "x")
    assert not policy.can_call(alice, "x.y")


def test_admin_role_may_do_everything() -> None:
    policy = AccessPolicy()
    assert policy.can_register(admin, "anything.at.all")
    assert policy.can_call(admin, "anything.at.all")


def test_auth_off_allows_everyone() -> None:
    policy = AccessPolicy(enabled=False)
    assert policy.can_register(ANONYMOUS, "com.acme.greeter")
    assert policy.can_call(ANONYMOUS, "com.acme.greeter.hello")


def test_register_and_call_grants_are_separate() -> None:
    policy = AccessPolicy(
        {
            "callers": parse_rule({"roles": ["caller"], "call": ["*"]}),
            "providers": parse_rule({"principals": ["svc-*"], "register": ["*"]}),
        }
    )
    caller = Principal("u", roles=frozenset({"caller"}))
    assert policy.can_call(caller, "a.b") and not policy.can_register(caller, "a")
    assert policy.can_register(svc, "a") and not policy.can_call(svc, "a.b")


def test_denied_message() -> None:
    assert denied_message(bob, "call", "com.acme.greeter.hello") == (
        "access denied: principal 'bob' may not call 'com.acme.greeter.hello'"
    )
    assert denied_message(bob, "register", "com.acme.greeter") == (
        "access denied: principal 'bob' may not register service 'com.acme.greeter'"
    )


# -- globs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "route", "allowed"),
    [
        ("com.acme.*", "com.acme.greeter", True),
        ("com.acme.*", "com.acme.", True),
        ("com.acme.*", "com.acme", False),
        ("com.acme.*", "com.acmeX.greeter", False),
        ("com.acme.*", "comXacme.greeter", False),  # '.' is literal, not a regex wildcard
        ("com.acme.*", "COM.ACME.greeter", False),  # case-sensitive
        ("com.acme.*", "xcom.acme.greeter", False),  # anchored at the start
        ("*", "", True),
        ("*", "any.thing", True),
        ("*.hello", "com.acme.greeter.hello", True),
        ("*.hello", "com.acme.greeter.hello2", False),  # anchored at the end
        ("a?c", "abc", True),
        ("a?c", "ac", False),
        ("a?c", "abbc", False),
        ("a+b", "a+b", True),  # regex metacharacters are literal
        ("a+b", "aab", False),
        ("x[1]", "x[1]", True),  # no character classes
        ("x[1]", "x1", False),
        ("a*b*c", "a..b..c", True),
        ("a*b*c", "a..c", False),
        ("exact.route", "exact.route", True),
        ("exact.route", "exact.route.more", False),
    ],
)
def test_glob_edge_cases(pattern: str, route: str, allowed: bool) -> None:
    policy = AccessPolicy(
        {"r": parse_rule({"principals": ["alice"], "call": [pattern], "register": [pattern]})}
    )
    assert policy.can_call(alice, route) is allowed
    assert policy.can_register(alice, route) is allowed


def test_principal_globs_and_roles_are_different_things() -> None:
    policy = AccessPolicy({"r": parse_rule({"roles": ["svc-*"], "call": ["*"]})})
    assert not policy.can_call(svc, "a.b")  # roles are exact names, not globs
    assert policy.can_call(Principal("x", roles=frozenset({"svc-*"})), "a.b")


# -- live changes and the cache -------------------------------------------------------------


def test_rules_can_be_added_replaced_and_removed_at_run_time(policy: AccessPolicy) -> None:
    assert not policy.can_call(bob, "com.acme.greeter.hello")  # cached: deny
    policy.upsert("bob", parse_rule({"principals": ["bob"], "call": ["com.acme.*"]}))
    assert policy.can_call(bob, "com.acme.greeter.hello")
    policy.upsert("bob", parse_rule({"principals": ["bob"], "call": ["com.other.*"]}))
    assert not policy.can_call(bob, "com.acme.greeter.hello")
    assert policy.remove("acme") is True
    assert policy.remove("acme") is False
    assert not policy.can_call(alice, "com.acme.greeter.hello")
    policy.set_rules({"all": parse_rule({"principals": ["*"], "call": ["*"]})})
    assert set(policy.rules) == {"all"}
    assert policy.can_call(alice, "com.acme.greeter.hello")


def test_decisions_differ_by_roles_for_the_same_name(policy: AccessPolicy) -> None:
    plain = Principal("carol")
    assert policy.can_call(greeter_role, "com.acme.greeter.hello")
    assert not policy.can_call(plain, "com.acme.greeter.hello")


def test_a_tiny_cache_still_answers_correctly() -> None:
    policy = AccessPolicy({"r": parse_rule({"principals": ["p*"], "call": ["ok.*"]})}, cache_size=2)
    for i in range(50):
        who = Principal(f"p{i % 7}")
        assert policy.can_call(who, f"ok.m{i}")
        assert not policy.can_call(who, f"no.m{i}")


# -- parsing --------------------------------------------------------------------------------


def test_contract_rule_round_trips() -> None:
    rule = parse_rule(CONTRACT_RULE)
    assert rule == AccessRule(
        ("alice", "svc-*"), frozenset({"greeter"}), ("com.acme.*",), ("com.acme.greeter.*",)
    )
    assert parse_rule(json.loads(json.dumps(rule.to_json()))) == rule


def test_missing_lists_mean_empty() -> None:
    assert parse_rule({}) == AccessRule()
    assert not AccessPolicy({"r": parse_rule({"principals": ["alice"]})}).can_call(alice, "a.b")


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([], "an access rule must be a JSON object, got list"),
        ("alice", "an access rule must be a JSON object, got str"),
        (
            {"principal": ["alice"]},
            "unknown field 'principal' in access rule (known: principals, roles, register, call)",
        ),
        ({"principals": "alice"}, "'principals' must be a list of strings, got str"),
        ({"call": [1]}, "call[0] must be a string, got int"),
        ({"register": ["ok", ""]}, "register[1] is an empty string"),
        ({"roles": ["a b"]}, "roles[0] 'a b' contains whitespace or a control character"),
        ({"call": ["a\x00"]}, "call[0] 'a\\x00' contains whitespace or a control character"),
        ({"call": ["x" * 513]}, "call[0] is 513 characters long (at most 512)"),
    ],
)
def test_bad_rules_are_refused_with_a_specific_message(obj: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_rule(obj)
    assert str(info.value) == message


def test_rules_from_toml_array_of_tables() -> None:
    config = tomllib.loads(
        """
        [[acl]]
        name = "greeters"
        principals = ["alice", "svc-*"]
        register = ["com.acme.*"]

        [[acl]]
        name = "callers"
        roles = ["greeter"]
        call = ["com.acme.greeter.*"]
        """
    )
    rules = rules_from_config(config)
    assert set(rules) == {"greeters", "callers"}
    policy = AccessPolicy(rules)
    assert policy.can_register(svc, "com.acme.greeter")
    assert policy.can_call(greeter_role, "com.acme.greeter.hello")
    assert not policy.can_call(svc, "com.acme.greeter.hello")


def test_rules_from_toml_named_tables() -> None:
    config = tomllib.loads(
        """
        [acl.greeters]
        principals = ["alice"]
        call = ["com.acme.greeter.*"]
        """
    )
    assert rules_from_config(config) == {
        "greeters": parse_rule({"principals": ["alice"], "call": ["com.acme.greeter.*"]})
    }
    assert rules_from_config({}) == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[acl]]\nprincipals = ["a"]', "acl[0]: every [[acl]] table needs a 'name' (a non-empty string)"),
        ('[[acl]]\nname = "x"\n[[acl]]\nname = "x"', "acl[1]: duplicate rule name 'x'"),
        ('[[acl]]\nname = "x"\ncall = "a.*"', "acl[0] (x): 'call' must be a list of strings, got str"),
        (
            '[acl.x]\ncalls = ["a"]',
            "acl.x: unknown field 'calls' in access rule (known: principals, roles, register, call)",
        ),
        ('acl = "everything"', "'acl' must be an array of tables or a table of rules, got str"),
        ("acl = [1]", "acl[0]: must be a table, got int"),
    ],
)
def test_config_errors_say_where(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        rules_from_config(tomllib.loads(text))
    assert str(info.value) == message


def test_rules_from_store_skip_and_report_bad_entries() -> None:
    rules, problems = rules_from_store(
        {"acl/good": CONTRACT_RULE, "acl/bad": {"call": "x"}, "keys/k1": {"kty": "OKP"}, "app/x": 1}
    )
    assert rules == {"good": parse_rule(CONTRACT_RULE)}
    assert problems == ["acl/bad: 'call' must be a list of strings, got str"]


# -- properties -----------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
field_names = st.sampled_from(["principals", "roles", "register", "call", "other"])
glob_text = st.text(alphabet="ab.*?-", min_size=1, max_size=8)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        json_values, st.dictionaries(field_names, st.one_of(json_values, st.lists(glob_text)), max_size=5)
    )
)
def test_parser_accepts_or_raises_value_error_only(obj: Any) -> None:
    try:
        rule = parse_rule(obj)
    except ValueError as exc:
        assert str(exc)
        return
    assert parse_rule(rule.to_json()) == rule


@settings(max_examples=300, deadline=None)
@given(patterns=st.lists(glob_text, min_size=1, max_size=3), route=st.text(alphabet="ab.-", max_size=10))
def test_globs_agree_with_fnmatch(patterns: list[str], route: str) -> None:
    # fnmatchcase is the dumb reference; the alphabet leaves out '[' where the two differ on purpose.
    policy = AccessPolicy({"r": parse_rule({"principals": ["*"], "call": patterns})})
    expected = any(fnmatch.fnmatchcase(route, p) for p in patterns)
    assert policy.can_call(alice, route) is expected
    assert policy.can_call(alice, route) is expected  # and again from the cache

"""The cached access policy against a dumb, cache-free reference, through random rule changes.

The cache is the clever part of ``AccessPolicy``: a decision cached before a rule change
must never be served after it. A Hypothesis state machine interleaves upserts, removals,
wholesale replacement and queries, and checks every answer against a model that
re-evaluates the rules from scratch with ``fnmatch`` each time.
"""

from __future__ import annotations

import fnmatch

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from broker.auth import AccessPolicy, Principal, parse_rule

NAMES = st.sampled_from(["r1", "r2", "r3"])
GLOBS = st.lists(
    st.sampled_from(["*", "a.*", "a.b.*", "a.?.c", "b.*", "a.b.c", "svc-*", "alice"]), max_size=3
)
ROLES = st.lists(st.sampled_from(["admin", "ops", "greeter"]), max_size=2)
RULES = st.fixed_dictionaries({"principals": GLOBS, "roles": ROLES, "register": GLOBS, "call": GLOBS})
PRINCIPALS = st.sampled_from(
    [
        Principal("alice"),
        Principal("svc-1", frozenset({"ops"})),
        Principal("bob", frozenset({"greeter", "admin"})),
    ]
)
TARGETS = st.sampled_from(["a.b.c", "a.x.c", "b.q"])


def model_allows(
    rules: dict[str, dict[str, list[str]]], principal: Principal, action: str, target: str
) -> bool:
    if "admin" in principal.roles:
        return True
    for body in rules.values():
        applies = any(fnmatch.fnmatchcase(principal.name, p) for p in body["principals"]) or bool(
            set(body["roles"]) & principal.roles
        )
        if applies and any(fnmatch.fnmatchcase(target, g) for g in body[action]):
            return True
    return False


class PolicyMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.policy = AccessPolicy()
        self.model: dict[str, dict[str, list[str]]] = {}

    @rule(name=NAMES, body=RULES)
    def upsert(self, name: str, body: dict[str, list[str]]) -> None:
        self.policy.upsert(name, parse_rule(body))
        self.model[name] = body

    @rule(name=NAMES)
    def remove(self, name: str) -> None:
        assert self.policy.remove(name) is (name in self.model)
        self.model.pop(name, None)

    @rule(bodies=st.dictionaries(NAMES, RULES, max_size=3))
    def replace_all(self, bodies: dict[str, dict[str, list[str]]]) -> None:
        self.policy.set_rules({name: parse_rule(body) for name, body in bodies.items()})
        self.model = dict(bodies)

    @rule(principal=PRINCIPALS, what=TARGETS, action=st.sampled_from(["call", "register"]))
    def decide(self, principal: Principal, what: str, action: str) -> None:
        ask = self.policy.can_call if action == "call" else self.policy.can_register
        expected = model_allows(self.model, principal, action, what)
        assert ask(principal, what) is expected
        assert ask(principal, what) is expected  # the cached answer agrees too

    @invariant()
    def same_rule_names(self) -> None:
        assert set(self.policy.rules) == set(self.model)


TestPolicyMachine = PolicyMachine.TestCase
TestPolicyMachine.settings = settings(max_examples=75, stateful_step_count=40, deadline=None)

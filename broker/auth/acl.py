"""Access rules: who may register which services and call which routes.

A rule (stored as JSON under config key ``acl/<name>``, or written in the config file)::

    {"principals": ["alice", "svc-*"], "roles": ["greeter"],
     "register": ["com.acme.*"], "call": ["com.acme.greeter.*"]}

applies to a principal whose name matches any ``principals`` glob or who holds any of
``roles`` (exact names), and grants registering services matching ``register`` and
calling routes (``service.method``) matching ``call``. Missing lists mean empty.

Globs: ``*`` matches any run of characters, dots included (``com.acme.*`` covers
``com.acme.greeter`` and ``com.acme.greeter.hello`` but not ``com.acme``), ``?`` matches
one character, everything else matches itself; matching is case-sensitive. There are no
character classes, so a route with ``[`` in it means just that.

Decisions: authentication off → everything allowed; role ``admin`` → everything allowed;
otherwise allowed only if some rule grants it (default deny). ``can_call`` runs for every
request, so decisions are cached per (principal, action, target); the cache lives in the
same immutable snapshot as the rules, so replacing the rules can never serve a stale
answer.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .principal import Principal

__all__ = [
    "CALL",
    "REGISTER",
    "AccessPolicy",
    "AccessRule",
    "denied_message",
    "parse_rule",
    "rules_from_config",
    "rules_from_store",
]

log = logging.getLogger(__name__)

#: The two actions a rule grants; ``denied_message`` and the policy take them by these names.
REGISTER = "register"
CALL = "call"
_FIELDS = ("principals", "roles", "register", "call")
_MAX_PATTERN = 512
_BAD_CHARS = re.compile(r"[\s\x00-\x1f\x7f]")
#: Prefix of access rules in the cluster config store.
STORE_PREFIX = "acl/"


def _glob_regex(patterns: Iterable[str]) -> re.Pattern[str] | None:
    """One anchored regex matching any of ``patterns`` (None when there are none)."""
    parts = [
        "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
        for pattern in patterns
    ]
    return re.compile("|".join(parts), re.DOTALL) if parts else None


def _matches(regex: re.Pattern[str] | None, text: str) -> bool:
    return regex is not None and regex.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class AccessRule:
    """One parsed rule; build it with :func:`parse_rule`, which validates the input."""

    principals: tuple[str, ...] = ()
    roles: frozenset[str] = frozenset()
    register: tuple[str, ...] = ()
    call: tuple[str, ...] = ()
    _principals_re: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)
    _register_re: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)
    _call_re: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_principals_re", _glob_regex(self.principals))
        object.__setattr__(self, "_register_re", _glob_regex(self.register))
        object.__setattr__(self, "_call_re", _glob_regex(self.call))

    def applies_to(self, principal: Principal) -> bool:
        """Whether this rule speaks about ``principal`` (by name glob or by role)."""
        return _matches(self._principals_re, principal.name) or not self.roles.isdisjoint(principal.roles)

    def grants(self, principal: Principal, action: str, target: str) -> bool:
        """Whether this rule lets ``principal`` do ``action`` (register/call) on ``target``."""
        regex = self._register_re if action == REGISTER else self._call_re
        return _matches(regex, target) and self.applies_to(principal)

    def to_json(self) -> dict[str, list[str]]:
        """The rule in its stored JSON form (``parse_rule(rule.to_json()) == rule``)."""
        return {
            "principals": list(self.principals),
            "roles": sorted(self.roles),
            "register": list(self.register),
            "call": list(self.call),
        }


def _patterns(obj: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = obj.get(name, [])
    if not isinstance(value, list):
        raise ValueError(f"{name!r} must be a list of strings, got {type(value).__name__}")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise ValueError(f"{name}[{index}] must be a string, got {type(item).__name__}")
        if not item:
            raise ValueError(f"{name}[{index}] is an empty string")
        if len(item) > _MAX_PATTERN:
            raise ValueError(f"{name}[{index}] is {len(item)} characters long (at most {_MAX_PATTERN})")
        if _BAD_CHARS.search(item):
            raise ValueError(f"{name}[{index}] {item!r} contains whitespace or a control character")
    return tuple(value)


def parse_rule(obj: object) -> AccessRule:
    """Validate a rule in its JSON form; raise ValueError naming the offending field."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"an access rule must be a JSON object, got {type(obj).__name__}")
    unknown = sorted(str(k) for k in obj if k not in _FIELDS)
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r} in access rule (known: {', '.join(_FIELDS)})")
    roles = _patterns(obj, "roles")
    return AccessRule(
        principals=_patterns(obj, "principals"),
        roles=frozenset(roles),
        register=_patterns(obj, "register"),
        call=_patterns(obj, "call"),
    )


def rules_from_config(config: Mapping[str, Any]) -> dict[str, AccessRule]:
    """Rules from a parsed TOML config file: ``[[acl]]`` tables (each with a ``name``) or ``[acl.<name>]``."""
    section = config.get("acl")
    rules: dict[str, AccessRule] = {}
    if section is None:
        return rules
    if isinstance(section, list):
        for index, table in enumerate(section):
            if not isinstance(table, Mapping):
                raise ValueError(f"acl[{index}]: must be a table, got {type(table).__name__}")
            name = table.get("name")
            if not isinstance(name, str) or not name:
                raise ValueError(f"acl[{index}]: every [[acl]] table needs a 'name' (a non-empty string)")
            if name in rules:
                raise ValueError(f"acl[{index}]: duplicate rule name {name!r}")
            try:
                rules[name] = parse_rule({k: v for k, v in table.items() if k != "name"})
            except ValueError as exc:
                raise ValueError(f"acl[{index}] ({name}): {exc}") from None
        return rules
    if isinstance(section, Mapping):
        for name, table in section.items():
            try:
                rules[str(name)] = parse_rule(table)
            except ValueError as exc:
                raise ValueError(f"acl.{name}: {exc}") from None
        return rules
    raise ValueError(f"'acl' must be an array of tables or a table of rules, got {type(section).__name__}")


def rules_from_store(entries: Mapping[str, object]) -> tuple[dict[str, AccessRule], list[str]]:
    """Rules from config-store entries (``{"acl/<name>": rule JSON, ...}``; other keys ignored).

    Returns the usable rules and a message per unusable one: a bad entry is skipped and
    logged rather than failing the whole set (the admin API should refuse it on write).
    """
    rules: dict[str, AccessRule] = {}
    problems: list[str] = []
    for key, value in entries.items():
        if not key.startswith(STORE_PREFIX):
            continue
        try:
            rules[key[len(STORE_PREFIX) :]] = parse_rule(value)
        except ValueError as exc:
            problems.append(f"{key}: {exc}")
            log.warning("ignoring access rule from the config store: %s: %s", key, exc)
    return rules, problems


def denied_message(principal: Principal, action: str, target: str) -> str:
    """The ERROR(REJECTED) text for a denied registration or call."""
    what = f"register service {target!r}" if action == REGISTER else f"call {target!r}"
    return f"access denied: principal {principal.name!r} may not {what}"


@dataclass(frozen=True, slots=True)
class _Snapshot:
    rules: Mapping[str, AccessRule]
    cache: dict[tuple[str, frozenset[str], str, str], bool]


class AccessPolicy:
    """Named rules, replaceable at run time, and the allow/deny decision.

    ``enabled=False`` is the "authentication off" mode: every principal may do everything.
    Replacing the rules is one attribute assignment of a new snapshot, so a decision in
    progress sees either the old rules or the new ones, never a mix.
    """

    def __init__(
        self, rules: Mapping[str, AccessRule] | None = None, *, enabled: bool = True, cache_size: int = 65536
    ) -> None:
        if cache_size < 1:
            raise ValueError("cache_size must be at least 1")
        self.enabled = enabled
        self._cache_size = cache_size
        self._snapshot = _Snapshot(dict(rules or {}), {})
        #: called after every change of the rules, by those who keep decisions of their own
        #: (the relay's route caches, ``Broker.forget_admissions``)
        self.on_change: list[Callable[[], None]] = []

    @property
    def rules(self) -> dict[str, AccessRule]:
        """A copy of the current rules by name."""
        return dict(self._snapshot.rules)

    def set_rules(self, rules: Mapping[str, AccessRule]) -> None:
        """Replace every rule at once."""
        self._snapshot = _Snapshot(dict(rules), {})
        for listener in self.on_change:
            listener()

    def upsert(self, name: str, rule: AccessRule) -> None:
        """Add or replace one named rule."""
        self.set_rules({**self._snapshot.rules, name: rule})

    def remove(self, name: str) -> bool:
        """Drop one named rule; return whether it existed."""
        if name not in self._snapshot.rules:
            return False
        self.set_rules({k: v for k, v in self._snapshot.rules.items() if k != name})
        return True

    def can_register(self, principal: Principal, service: str) -> bool:
        """Whether ``principal`` may register (provide) ``service``."""
        return self._allowed(principal, REGISTER, service)

    def can_call(self, principal: Principal, route: str) -> bool:
        """Whether ``principal`` may send requests to ``route`` (``service.method``)."""
        return self._allowed(principal, CALL, route)

    def _allowed(self, principal: Principal, action: str, target: str) -> bool:
        if not self.enabled or principal.is_admin:
            return True
        snapshot = self._snapshot
        key = (principal.name, principal.roles, action, target)
        decision = snapshot.cache.get(key)
        if decision is None:
            decision = any(rule.grants(principal, action, target) for rule in snapshot.rules.values())
            if len(snapshot.cache) >= self._cache_size:
                snapshot.cache.clear()
            snapshot.cache[key] = decision
        return decision

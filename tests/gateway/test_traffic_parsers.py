"""Property tests of the traffic rules' parsers: a requester's deadline entry (bytes from the
network) and a rate limit or service policy (JSON from the config store or file)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from broker import metadata as md
from broker.registry import ServicePolicy
from broker.traffic import MAX_DEADLINE_MS, RateLimit, requested_deadline

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@given(st.binary(max_size=300))
def test_any_metadata_gives_a_deadline_or_none_never_an_exception(metadata: bytes) -> None:
    value = requested_deadline(metadata)
    assert value is None or 0 < value <= MAX_DEADLINE_MS


@given(st.integers(min_value=1, max_value=MAX_DEADLINE_MS))
def test_a_deadline_is_rounded_down_to_two_significant_digits(ms: int) -> None:
    value = requested_deadline(md.route_metadata("a.b") + md.composite_entry(md.DEADLINE_MIME, str(ms).encode()))
    assert value is not None and value <= ms and value * 1.1 >= ms - 1e-9 and len(str(value).rstrip("0")) <= 2


@given(st.text(max_size=10), JSON)
def test_a_rate_limit_is_parsed_or_refused_with_value_error(name: str, value: object) -> None:
    try:
        limit = RateLimit.from_obj(name, value)
    except ValueError as exc:
        assert str(exc)
    else:
        assert limit.rate > 0 and limit.burst > 0 and (limit.principal is None) != (limit.service is None)


@given(st.dictionaries(st.sampled_from(["deadline_ms", "idempotent", "retries", "policy"]), JSON, max_size=4))
def test_a_service_policy_is_parsed_or_refused_with_value_error(value: dict[str, object]) -> None:
    try:
        policy = ServicePolicy.from_obj(value)
    except ValueError as exc:
        assert str(exc)
    else:
        assert policy.retries == 0 or policy.idempotent

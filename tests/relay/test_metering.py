"""The relay's metering against dumb references: Prometheus 'le' bucket semantics, the label
caps (routes per service, services, aggregate prefixes), and the dashboard's quantile estimate."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from admin.sse import quantile
from broker.metering import LATENCY_BUCKETS_S, OK, OTHER, OUTCOMES, Histogram, Metering


def metering(routes: int = 3, services: int = 4, prefixes: tuple[str, ...] = ("device.",)) -> Metering:
    return Metering(lambda: 0.0, routes, services, prefixes)


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=50))
def test_histogram_buckets_count_values_at_most_their_bound(values: list[float]) -> None:
    hist = Histogram()
    for v in values:
        hist.observe(v)
    running = 0
    for i, bound in enumerate(LATENCY_BUCKETS_S):
        running += hist.counts[i]
        assert running == sum(1 for v in values if v <= bound)
    assert sum(hist.counts) == len(values)
    assert math.isclose(hist.total, sum(values), abs_tol=1e-9)


def test_routes_beyond_the_cap_fold_into_other_and_stay_there() -> None:
    m = metering(routes=2)
    labels = [m.route(f"svc.m{i}", "svc").route for i in range(5)]
    assert labels == ["svc.m0", "svc.m1", OTHER, OTHER, OTHER]
    assert m.route("svc.m3", "svc") is m.route("svc.m4", "svc")
    assert m.route("svc.m0", "svc").route == "svc.m0"  # known routes keep their label


def test_services_beyond_the_cap_fold_into_other() -> None:
    m = metering(services=2)
    assert [m.route(f"s{i}.x", f"s{i}").service for i in range(4)] == ["s0", "s1", OTHER, OTHER]
    assert m.unrouted().service == "unrouted"  # never folded: it says what went wrong


def test_device_services_share_one_label_per_prefix() -> None:
    m = metering(routes=50)
    meters = {m.route(f"device.{n}.read", f"device.{n}") for n in range(1000)}
    assert len(meters) == 1
    (meter,) = meters
    assert (meter.service, meter.route) == ("device.*", "device.*.read")
    assert len(list(m.meters())) == 1


def test_a_stream_is_counted_with_both_latencies() -> None:
    meter = metering().route("svc.get", "svc")
    meter.inflight += 1
    meter.ended(OK, opened_at=10.0, first_at=10.002, now=10.5)
    assert meter.inflight == 0 and meter.outcomes == [1, 0, 0, 0, 0]
    first, complete = meter.first[OK], meter.complete[OK]
    assert first is not None and complete is not None
    assert first.counts[LATENCY_BUCKETS_S.index(0.0025)] == 1
    assert complete.counts[LATENCY_BUCKETS_S.index(0.5)] == 1
    assert len(OUTCOMES) == 5


def test_quantile_interpolates_within_the_bucket_as_prometheus_does() -> None:
    counts = [0] * (len(LATENCY_BUCKETS_S) + 1)
    assert quantile(0.5, counts) is None
    counts[LATENCY_BUCKETS_S.index(0.01)] = 100  # 100 values in (0.005, 0.01]
    assert math.isclose(quantile(0.5, counts) or 0, 0.0075)
    assert math.isclose(quantile(0.99, counts) or 0, 0.005 + 0.005 * 0.99)
    counts[-1] = 100  # beyond the last bound: reported as the last bound
    assert quantile(0.99, counts) == LATENCY_BUCKETS_S[-1]

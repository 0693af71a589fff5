"""Metric-family helpers shared by the relay and cluster collectors."""

from __future__ import annotations

from typing import Sequence

from prometheus_client.core import HistogramMetricFamily

from broker.metering import LATENCY_BUCKETS_S, Histogram

_BOUNDS = (*[repr(b) for b in LATENCY_BUCKETS_S], "+Inf")


def add_histogram(family: HistogramMetricFamily, labels: Sequence[str], hist: Histogram) -> None:
    """Add a relay histogram (per-bucket counts) as Prometheus' cumulative ``le`` buckets."""
    buckets, running = [], 0
    for bound, count in zip(_BOUNDS, hist.counts):
        running += count
        buckets.append((bound, float(running)))
    family.add_metric(list(labels), buckets, hist.total)

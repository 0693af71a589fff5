"""Peak-EWMA round-trip time of a provider, the latency half of ``p2c``'s cost.

``p2c`` (``broker.registry``) weighs a provider as Finagle's and Linkerd's balancers do:
``cost = peak-EWMA RTT x (open streams + 1)``, the time a new request can expect to wait
there. Open streams alone cannot tell a provider ten times slower from a busy fast one: at
equal open streams it keeps its share, and so its place in the p99.

Rules of this module:

* A sample is what the relay already measures for the route meters: the time from routing
  a request (``Stream.opened_at``) to its first response frame (``Stream.first_at``). The hot
  path hands it over once per stream, never per frame, and reads no clock of its own for it;
  only for providers whose ``measure_rtt`` is set (the registry sets it on providers of a
  ``p2c`` service; broker links always have it), so no other provider pays the ~140 ns of a
  sample. A request ended at its deadline is a sample of its deadline (``broker.traffic``).
* Peak: a sample above the estimate replaces it at once, so a provider that turns slow is
  avoided from its first slow answer. A lower one moves the estimate towards it by a weight
  that grows with the time since the last sample, ``dt / (DECAY_S + dt)``: the estimate
  forgets at a rate set in seconds, however many requests a provider answers.
* Decay on read: a pick sees the estimate shrunk by ``DECAY_S / (DECAY_S + dt)`` since its
  last sample (halved after ``DECAY_S``), so a provider avoided for being slow is tried again
  later instead of starving for ever (Finagle decays on read the same way).
* ``DECAY_S / (DECAY_S + dt)`` stands for ``exp(-dt / DECAY_S)``: equal at 0 and at infinity,
  monotone between, and no ``math.exp`` call per sample and per pick.
* Zero means "no sample yet": the neutral prior. :func:`p2c` then weighs that provider
  with the other candidate's estimate, so between a measured and an unmeasured provider the
  open streams decide, as they did before latency was measured; a new provider is neither
  shunned nor flooded before its first answer.
* The state is two floats on the provider (``rtt``, ``rtt_at``, seconds on the broker's
  clock): a session, or for providers on another node the broker link to it. A remote
  provider is weighed by this node's own samples over that link: its node chooses among its
  local providers itself (a request over a link goes to one of them, picked there), so what
  this node can choose, and should weigh, is the round trip it gets through that link.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["DECAY_S", "MIN_RTT_S", "estimate", "observe", "p2c"]

#: Time constant of the estimate, s: Finagle's and Linkerd's default (10 s). Long enough that
#: a provider's slow answers are remembered between picks, short enough that a provider that
#: recovered gets its traffic back within a minute.
DECAY_S = 10.0
#: The smallest round trip entered, s. The broker's clock is the event loop's, which uvloop
#: reads once per loop turn in whole milliseconds: an answer within the same tick reads as
#: 0, and 0 must stay the mark of "not measured yet". A tenth of a tick keeps a provider that
#: answers within a tick cheaper than one that takes a tick.
MIN_RTT_S = 0.0001


def observe(provider: Any, rtt: float, now: float) -> None:
    """Enter one round trip of ``rtt`` seconds, ended at ``now``, into ``provider``'s estimate."""
    if rtt < MIN_RTT_S:
        rtt = MIN_RTT_S  # within one tick of the clock: a measurement all the same, never "none"
    est = provider.rtt
    if rtt < est:
        dt = now - provider.rtt_at
        est += (rtt - est) * dt / (DECAY_S + dt) if dt > 0.0 else 0.0
        provider.rtt = est
    else:
        provider.rtt = rtt
    provider.rtt_at = now


def estimate(provider: Any, now: float) -> float:
    """``provider``'s estimate as a pick sees it at ``now`` (decayed since its last sample; 0: none)."""
    est: float = provider.rtt
    if est:
        dt = now - provider.rtt_at
        if dt > 0.0:
            est *= DECAY_S / (DECAY_S + dt)
    return est


def p2c(providers: Sequence[Any], draw: Callable[[], float], now: float) -> Any:
    """Power of two choices: of two distinct providers drawn at random (``draw`` gives a float
    in [0, 1)), the one with the smaller cost, ``estimate x (load + 1)``.

    A provider not measured yet is weighed with the other's estimate (the neutral prior), so
    the loads alone decide then. A local provider's load is its open streams, a remote one's
    its ``balance_load`` (``broker.registry``). :func:`estimate` is spelled out and multiplied
    out: this runs on every ``p2c`` pick. (A sample time after ``now`` would weigh that
    estimate up a little instead of leaving it as it is; the broker's clock never does that.)"""
    n = len(providers)
    i, j = divmod(int(draw() * n * (n - 1)), n - 1)  # one draw, an ordered pair
    a, b = providers[i], providers[j + 1 if j >= i else j]
    # a local provider's load is its open streams: read them without the property call
    load_a = a.balance_load if a.is_remote else a.outstanding
    load_b = b.balance_load if b.is_remote else b.outstanding
    rtt_a = a.rtt
    rtt_b = b.rtt
    if rtt_a and rtt_b:
        # rtt_a x D / (D + dt_a) x (load_a + 1) <= the same of b, multiplied out by both
        # (positive) denominators: no division; D cancels from the numerators
        later = now + DECAY_S
        return a if rtt_a * (load_a + 1) * (later - b.rtt_at) <= rtt_b * (load_b + 1) * (later - a.rtt_at) else b
    return a if load_a <= load_b else b

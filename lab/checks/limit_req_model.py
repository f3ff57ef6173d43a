"""NGINX's ``limit_req`` leaky bucket, ported exactly (docs/semantics.md §2).

The per-key algorithm of ``ngx_http_limit_req_lookup`` and ``ngx_http_limit_req_account``
(``src/http/modules/ngx_http_limit_req_module.c``, nginx 1.22.1): the rate is kept in integer
milli-requests per second (``r/m`` loses the remainder of ``rate * 1000 // 60``), time is the
millisecond clock ``limit_req`` reads (``ngx_current_msec``), a rejected request leaves the
bucket as it was, and ``nodelay`` means an infinite delay threshold. One detail comes from the
module's handler rather than the lookup: a request whose computed delay rounds down to 0 ms is
logged ``PASSED``, not ``DELAYED``.

This module knows nothing about logs or clocks other than the one it is handed; how NGINX's
access log relates to that clock is ``lab.checks.limit_req_replay``'s business.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from lab.expectations import RateLimitRule

ONE_REQUEST = 1000                  # milli-requests: what one request adds to the bucket
# nginx's nodelay is delay = NGX_MAX_INT_T_VALUE / 1000: no excess ever reaches it.
NODELAY = sys.maxsize
# ngx_http_limit_req_lookup: a clock more than a minute behind the stored time counts as 1 ms.
_FAR_BACK_MS = -60000
# One step of a rate, for the changes a run is said to tell apart: 10 %.
RATE_STEP = 0.1


class LimitOutcome(StrEnum):
    """``$limit_req_status`` values the model produces."""

    PASSED = "PASSED"
    DELAYED = "DELAYED"
    REJECTED = "REJECTED"

    @property
    def accepted(self) -> bool:
        return self is not LimitOutcome.REJECTED


@dataclass(frozen=True, slots=True)
class Limiter:
    """One ``limit_req``'s numbers as nginx stores them (milli-requests, milli-requests/s)."""

    rate: int                   # milli-requests per second
    burst: int                  # milli-requests
    delay: int = NODELAY        # milli-requests; NODELAY for nodelay

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError(f"rate must be at least 1 milli-request/s, got {self.rate}")

    @classmethod
    def of(cls, rule: RateLimitRule) -> Limiter:
        """A rule's rate, burst and delay threshold."""
        return cls(rate_milli(rule), rule.burst * ONE_REQUEST,
                   NODELAY if rule.nodelay else rule.delay * ONE_REQUEST)

    def with_changes(self, *, burst: int | None = None, rate: int | None = None) -> Limiter:
        """The same limiter with another burst (milli) or rate (milli/s)."""
        return Limiter(self.rate if rate is None else rate,
                       self.burst if burst is None else burst, self.delay)


@dataclass(frozen=True, slots=True)
class BucketState:
    """One key's node in the zone: its excess and the time of the last accepted request."""

    excess: int
    last_ms: int


@dataclass(frozen=True, slots=True)
class Decision:
    """The bucket's answer to one request."""

    outcome: LimitOutcome
    excess: int                 # e = max(0, raw): the level the request leaves (when accepted)
    raw_excess: int | None      # before clamping at 0; None for a key's first request
    delay_ms: int = 0


def rate_milli(rule: RateLimitRule) -> int:
    """The zone's rate as nginx stores it: integer milli-requests per second."""
    # RateLimitRule.rate_per_s already carries r/m's lost remainder (166 milli for 10r/m).
    return round(rule.rate_per_s * 1000)


def advance(rate: int, excess: int, last_ms: int, t_ms: int) -> tuple[int, int, int]:
    """ngx_http_limit_req_lookup's arithmetic on plain integers: the raw excess of a request
    at ``t_ms`` on a node (``excess``, ``last_ms``), and the node if it is accepted."""
    ms = t_ms - last_ms
    if ms < _FAR_BACK_MS:
        ms = 1
    elif ms < 0:
        ms = 0
    raw = excess - rate * ms // 1000 + ONE_REQUEST
    return raw, max(0, raw), t_ms if ms else last_ms


def _advance(limiter: Limiter, state: BucketState,
             t_ms: int) -> tuple[int, BucketState]:
    """The raw excess of a request at ``t_ms`` and the node if it is accepted."""
    raw, excess, last = advance(limiter.rate, state.excess, state.last_ms, t_ms)
    return raw, BucketState(excess, last)


def step(limiter: Limiter, state: BucketState | None,
         t_ms: int) -> tuple[Decision, BucketState]:
    """The decision for a request at ``t_ms`` and the node nginx keeps afterwards.

    ``state`` None is a key without a node: nginx creates one with excess 0 and accepts.
    """
    if state is None:
        return Decision(LimitOutcome.PASSED, 0, None), BucketState(0, t_ms)
    raw, after = _advance(limiter, state, t_ms)
    excess = after.excess
    if excess > limiter.burst:
        return Decision(LimitOutcome.REJECTED, excess, raw), state
    if excess <= limiter.delay:
        return Decision(LimitOutcome.PASSED, excess, raw), after
    wait = (excess - limiter.delay) * 1000 // limiter.rate
    # The handler treats a zero delay as none and logs PASSED.
    outcome = LimitOutcome.DELAYED if wait else LimitOutcome.PASSED
    return Decision(outcome, excess, raw, wait), after


def forced(limiter: Limiter, state: BucketState | None, t_ms: int,
           accepted: bool) -> BucketState | None:
    """The node after a request at ``t_ms`` that nginx decided ``accepted`` whatever the model
    says: an acceptance stores the computed excess even above the burst (no clamping), a
    rejection leaves the node as it was."""
    if state is None:
        return BucketState(0, t_ms) if accepted else None
    return _advance(limiter, state, t_ms)[1] if accepted else state


class LeakyBucket:
    """One ``limit_req`` zone's per-key state, exactly as nginx 1.22 keeps it."""

    def __init__(self, rate_milli: int, burst: int, *, nodelay: bool = False, delay: int = 0):
        self.limiter = Limiter(rate_milli, burst * ONE_REQUEST,
                               NODELAY if nodelay else delay * ONE_REQUEST)
        self._state: dict[str, BucketState] = {}

    @property
    def rate(self) -> int:
        return self.limiter.rate

    @property
    def burst(self) -> int:
        return self.limiter.burst

    @classmethod
    def for_rule(cls, rule: RateLimitRule) -> LeakyBucket:
        """A fresh bucket with a rule's rate, burst and delay."""
        return cls(rate_milli(rule), rule.burst, nodelay=rule.nodelay, delay=rule.delay)

    def evaluate(self, key: str, t_ms: int) -> Decision:
        """What the bucket would decide for a request of ``key`` at ``t_ms``; state unchanged."""
        return step(self.limiter, self._state.get(key), t_ms)[0]

    def request(self, key: str, t_ms: int) -> Decision:
        """Decide a request and update the state as nginx does (not at all on a rejection)."""
        decision, after = step(self.limiter, self._state.get(key), t_ms)
        self._state[key] = after
        return decision

    def level(self, key: str) -> tuple[int, int] | None:
        """The stored (excess, last_ms) of a key, None before its first request."""
        state = self._state.get(key)
        return None if state is None else (state.excess, state.last_ms)


def model_outcomes(rule: RateLimitRule,
                   arrivals_ms: Sequence[tuple[str, int]]) -> list[Decision]:
    """The fresh zone's decision for each (key, arrival ms), in the order NGINX saw them."""
    bucket = LeakyBucket.for_rule(rule)
    return [bucket.request(key, t) for key, t in arrivals_ms]


def predict_schedule(rule: RateLimitRule, count: int, spacing_ms: int,
                     key: str = "client") -> list[Decision]:
    """The decisions for ``count`` requests of one client, ``spacing_ms`` apart, on a fresh zone."""
    return model_outcomes(rule, [(key, i * spacing_ms) for i in range(count)])


# -- the neighbouring configurations -------------------------------------------------------------


def one_step_changes(limiter: Limiter) -> list[tuple[str, Limiter]]:
    """The neighbouring configurations a run may tell apart: burst +-1, rate +-10 %."""
    changes = [(f"burst {limiter.burst // ONE_REQUEST + 1}",
                limiter.with_changes(burst=limiter.burst + ONE_REQUEST))]
    if limiter.burst >= ONE_REQUEST:
        changes.append((f"burst {limiter.burst // ONE_REQUEST - 1}",
                        limiter.with_changes(burst=limiter.burst - ONE_REQUEST)))
    for sign in (1, -1):
        rate = round(limiter.rate * (1 + sign * RATE_STEP))
        changes.append((f"{rate / 1000:g} r/s", limiter.with_changes(rate=rate)))
    return changes


def min_spacing_ms(rate_milli: int) -> int:
    """Without a burst, the least whole milliseconds after the last acceptance that pass."""
    return math.ceil(1000 * ONE_REQUEST / rate_milli)

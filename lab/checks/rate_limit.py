"""Rate limits: NGINX's ``limit_req`` leaky bucket ported exactly, and checks against it.

The model is the per-key algorithm of docs/semantics.md §2 (``ngx_http_limit_req_module.c``,
nginx 1.22.1): the rate is kept in integer milli-requests per second (``r/m`` loses the
remainder of ``rate * 1000 // 60``), time is NGINX's cached millisecond clock, a rejected
request leaves the bucket as it was, and ``nodelay`` means an infinite delay threshold. One
detail comes from the module's handler rather than the facts' pseudo-code: a request whose
computed delay rounds down to 0 ms is logged ``PASSED``, not ``DELAYED``.

``check_rate_limit`` feeds the model NGINX's own times: the handler runs in PREACCESS, right
after the request was read, so a request's arrival is ``$msec - $request_time`` (the same
cached clock, millisecond resolution). Client-side timestamps are a few ms off and would
flip requests near a threshold.

The comparison follows what NGINX actually did: after a disagreement the model continues from
NGINX's decision, so one request that a millisecond flipped does not cascade into a run of
false mismatches. A disagreement counts against ``tolerance_requests`` only when the model's
bucket was within one request (1000 milli) of the threshold; any other is a failure.
"""

from __future__ import annotations

import email.utils
import math
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from pydantic import Field

from lab.checks.base import (
    CheckResult,
    ObjectiveResult,
    Prediction,
    Verdict,
    combine,
    never_crashes,
)
from lab.checks.registry import (
    CheckContext,
    CheckDef,
    CheckParams,
    NoParams,
    ObjectiveHook,
    measured_objective,
    register,
)
from lab.expectations import RateLimitRule
from lab.history import AccessLogEntry, HeaderSample
from lab.objectives import Objectives, RateLimitObjective

NAME = "rate-limit"
HEADERS = "rate-limit-headers"
ONE_REQUEST = 1000                  # milli-requests: what one request adds to the bucket
# nginx's nodelay is delay = NGX_MAX_INT_T_VALUE / 1000: no excess ever reaches it.
_NODELAY = sys.maxsize
# Never reached the PREACCESS phase: the request line or headers were bad or too slow, or
# (413, 414, 431) the find-config phase refused it first, as client_max_body_size does for a
# Content-Length over the limit. Such a request was never counted by limit_req.
_BEFORE_PREACCESS = frozenset({400, 408, 413, 414, 431})
_SHOWN = 10
# NGINX's clocks (the one limit_req reads, the one $msec - $request_time shows) tick in ms.
CLOCK_RESOLUTION_MS = 1
# A run (the unit of tolerance) ends at a pause in which the key's bucket empties from full,
# but never at a pause under 1 s: at burst 0 the bucket empties between two requests at the
# rate, and jitter around it must not split steady traffic into runs of one request each.
MIN_RUN_GAP_MS = 1000
# The checklist's claim for its auth experiment, quoted beside the model's prediction.
CHECKLIST_AUTH_CLAIM = "the first 10-11 succeed"


class LimitOutcome(StrEnum):
    """``$limit_req_status`` values the model produces."""

    PASSED = "PASSED"
    DELAYED = "DELAYED"
    REJECTED = "REJECTED"

    @property
    def accepted(self) -> bool:
        return self is not LimitOutcome.REJECTED


@dataclass(frozen=True, slots=True)
class Decision:
    """The bucket's answer to one request."""

    outcome: LimitOutcome
    excess: int                 # e = max(0, raw): the level the request leaves (when accepted)
    raw_excess: int | None      # before clamping at 0; None for a key's first request
    delay_ms: int = 0

    def near(self, threshold: int) -> bool:
        """Whether one request's worth of timing error could move this decision across
        ``threshold``."""
        return self.raw_excess is not None and abs(self.raw_excess - threshold) <= ONE_REQUEST


def rate_milli(rule: RateLimitRule) -> int:
    """The zone's rate as nginx stores it: integer milli-requests per second."""
    # RateLimitRule.rate_per_s already carries r/m's lost remainder (166 milli for 10r/m).
    return round(rule.rate_per_s * 1000)


class LeakyBucket:
    """One ``limit_req`` zone's per-key state, exactly as nginx 1.22 keeps it."""

    def __init__(self, rate_milli: int, burst: int, *, nodelay: bool = False, delay: int = 0):
        if rate_milli <= 0:
            raise ValueError(f"rate must be at least 1 milli-request/s, got {rate_milli}")
        self.rate = rate_milli
        self.burst = burst * ONE_REQUEST
        self.delay = _NODELAY if nodelay else delay * ONE_REQUEST
        self._state: dict[str, tuple[int, int]] = {}     # key -> (excess, last_ms)

    @classmethod
    def for_rule(cls, rule: RateLimitRule) -> LeakyBucket:
        """A fresh bucket with a rule's rate, burst and delay."""
        return cls(rate_milli(rule), rule.burst, nodelay=rule.nodelay, delay=rule.delay)

    def _step(self, key: str, t_ms: int) -> tuple[Decision, tuple[int, int]]:
        if key not in self._state:
            return Decision(LimitOutcome.PASSED, 0, None), (0, t_ms)
        excess, last = self._state[key]
        ms = t_ms - last
        if ms < -60000:
            ms = 1
        elif ms < 0:
            ms = 0
        raw = excess - self.rate * ms // 1000 + ONE_REQUEST
        e = max(0, raw)
        new_state = (e, t_ms if ms else last)
        if e > self.burst:
            return Decision(LimitOutcome.REJECTED, e, raw), new_state
        if e <= self.delay:
            return Decision(LimitOutcome.PASSED, e, raw), new_state
        wait = (e - self.delay) * 1000 // self.rate
        # The handler treats a zero delay as none and logs PASSED.
        outcome = LimitOutcome.DELAYED if wait else LimitOutcome.PASSED
        return Decision(outcome, e, raw, wait), new_state

    def evaluate(self, key: str, t_ms: int) -> Decision:
        """What the bucket would decide for a request of ``key`` at ``t_ms``; state unchanged."""
        return self._step(key, t_ms)[0]

    def request(self, key: str, t_ms: int) -> Decision:
        """Decide a request and update the state as nginx does (not at all on a rejection)."""
        decision, new_state = self._step(key, t_ms)
        if decision.outcome.accepted:
            self._state[key] = new_state
        return decision

    def follow(self, key: str, t_ms: int, accepted: bool) -> Decision:
        """Decide a request, then update the state as if NGINX's own decision had been taken."""
        decision, (excess, last) = self._step(key, t_ms)
        if accepted:
            # NGINX accepted, so its bucket was at most full: never carry more than burst on.
            self._state[key] = (min(excess, self.burst), last)
        return decision

    def level(self, key: str) -> tuple[int, int] | None:
        """The stored (excess, last_ms) of a key, None before its first request."""
        return self._state.get(key)


def model_outcomes(rule: RateLimitRule,
                   arrivals_ms: Sequence[tuple[str, int]]) -> list[Decision]:
    """The fresh zone's decision for each (key, arrival ms), in the order NGINX saw them."""
    bucket = LeakyBucket.for_rule(rule)
    return [bucket.request(key, t) for key, t in arrivals_ms]


def predict_schedule(rule: RateLimitRule, count: int, spacing_ms: int,
                     key: str = "client") -> list[Decision]:
    """The decisions for ``count`` requests of one client, ``spacing_ms`` apart, on a fresh zone."""
    return model_outcomes(rule, [(key, i * spacing_ms) for i in range(count)])


def _mode(rule: RateLimitRule) -> str:
    if rule.burst == 0:
        return "no queue: excess is rejected"
    if rule.nodelay:
        return "nodelay"
    if rule.delay:
        return f"delay={rule.delay}"
    return "no nodelay: accepted excess waits"


def _describe_rule(rule: RateLimitRule) -> str:
    return f"zone {rule.zone} ({rule.rate_per_s:g} r/s, burst {rule.burst}, {_mode(rule)})"


def _summary(decisions: Sequence[Decision]) -> str:
    accepted = sum(d.outcome.accepted for d in decisions)
    rejected = len(decisions) - accepted
    delayed = sum(d.outcome is LimitOutcome.DELAYED for d in decisions)
    leading = next((i for i, d in enumerate(decisions) if not d.outcome.accepted), len(decisions))
    numbers = [i + 1 for i, d in enumerate(decisions) if not d.outcome.accepted]
    shown = ", ".join(f"#{n}" for n in numbers[:12]) + (" ..." if len(numbers) > 12 else "")
    text = f"model accepts {accepted}, rejects {rejected}"
    if delayed:
        text += f" ({delayed} of the accepted delayed)"
    text += f"; the first {leading} succeed"
    if rejected:
        text += f"; rejected: {shown}"
    return text


def predict_checklist_experiments(rule_auth: RateLimitRule,
                                  rule_api: RateLimitRule) -> tuple[str, ...]:
    """The model's outcome of the checklist's two experiments, with their sensitivity to 1 ms."""
    lines: list[str] = []
    for label, rule, count, spacing, claim in (
        ("auth", rule_auth, 15, 50, CHECKLIST_AUTH_CLAIM),
        ("API", rule_api, 150, 10, None),
    ):
        exact = predict_schedule(rule, count, spacing)
        line = (f"{count} {label} requests {spacing} ms apart, {_describe_rule(rule)}: "
                f"{_summary(exact)}")
        if claim is not None:
            line += f"; checklist: {claim!r}"
        lines.append(line)
        # A client's timer is a millisecond or so off; show what that does at this spacing.
        for jitter in (-1, 1):
            shifted = predict_schedule(rule, count, spacing + jitter)
            lines.append(f"  at {spacing + jitter} ms apart: {_summary(shifted)}")
    return tuple(lines)


# --- the check over NGINX's access log ----------------------------------------------------


_REMOTE_KEYS = frozenset({"$binary_remote_addr", "$remote_addr"})


def _path(uri: str) -> str:
    return uri.split("?", 1)[0]


def _matching_rule(path: str, rules: Sequence[RateLimitRule]) -> RateLimitRule | None:
    best: RateLimitRule | None = None
    for rule in rules:
        if path.startswith(rule.location) and (best is None
                                                or len(rule.location) > len(best.location)):
            best = rule
    return best


def _observed(entry: AccessLogEntry) -> LimitOutcome:
    # limit_req's own word: a rejection answered with another status than limit_req_status is
    # still a rejection for the bucket (and fails the check separately); a 429 the backend
    # sent itself passed the limiter.
    if entry.limit_req_status == "REJECTED":
        return LimitOutcome.REJECTED
    if entry.limit_req_status == "DELAYED":
        return LimitOutcome.DELAYED
    return LimitOutcome.PASSED


_RANK = {LimitOutcome.PASSED: 0, LimitOutcome.DELAYED: 1, LimitOutcome.REJECTED: 2}


@dataclass(frozen=True, slots=True)
class _Mismatch:
    t_ms: int
    key: str
    entry: AccessLogEntry
    model: Decision
    observed: LimitOutcome
    threshold: str
    tolerated: bool


def _unknown(expected: str, derivation: str, measured: str) -> CheckResult:
    return CheckResult(NAME, Verdict.UNKNOWN, measured, expected, derivation)


@never_crashes(NAME)
def check_rate_limit(entries: Sequence[AccessLogEntry], rule: RateLimitRule, status: int, *,
                     rules: Sequence[RateLimitRule] = (),
                     tolerance_requests: int = 1) -> CheckResult:
    """Whether each request NGINX logged for ``rule``'s location got the outcome the bucket
    predicts.

    ``rules`` are every limit_req rule of the configuration (``NginxPolicy.rate_limits``): a
    request belongs to the rule of its longest matching location, as in NGINX. ``status`` is
    the configured ``limit_req_status``: a rejection (``$limit_req_status`` REJECTED) answered
    with any other status fails.
    """
    bucket = LeakyBucket.for_rule(rule)
    drain_ms = math.ceil((bucket.burst + ONE_REQUEST) * 1000 / bucket.rate)
    run_gap_ms = max(drain_ms, MIN_RUN_GAP_MS)
    threshold_text = (f"burst {rule.burst} = {bucket.burst} milli"
                      + ("" if rule.nodelay
                         else f", delay threshold {rule.delay * ONE_REQUEST} milli"))
    expected = (f"each request's outcome as limit_req predicts for {_describe_rule(rule)} per "
                f"client: disagreements only within one request of a threshold, and per run "
                f"NGINX's accepted count within {tolerance_requests} + the flips a 1 ms clock "
                f"shift explains, of the model's; rejections answered {status}")
    derivation = (f"rate {rule.rate_per_s:g} r/s = {bucket.rate} milli-requests/s (integer; "
                  f"r/m loses the remainder); {threshold_text}; key {rule.key or '?'} = "
                  "$remote_addr; arrival = $msec - $request_time (PREACCESS, nginx's clock); "
                  f"a run = requests of one key at most max(ceil(({bucket.burst} + 1000) * 1000"
                  f" / {bucket.rate}) = {drain_ms} ms (a full bucket drains), "
                  f"{MIN_RUN_GAP_MS} ms) = {run_gap_ms} ms apart; "
                  "algorithm: docs/semantics.md §2")

    if rule.key and rule.key not in _REMOTE_KEYS and "$" in rule.key:
        return _unknown(expected, derivation,
                        f"zone key {rule.key} is not in the access log; only $remote_addr is")
    all_rules = [rule, *(r for r in rules if r != rule)]
    same_place = [r for r in all_rules if r.location == rule.location and r.zone != rule.zone]
    if same_place:
        return _unknown(expected, derivation, "several limit_req in location "
                        f"{rule.location} ({', '.join(r.zone for r in [rule, *same_place])}): "
                        "their joint accounting is not modelled")
    sharing = [r for r in all_rules if r.zone == rule.zone]
    if any((r.burst, r.nodelay, r.delay) != (rule.burst, rule.nodelay, rule.delay)
           for r in sharing):
        return _unknown(expected, derivation, f"zone {rule.zone} is used with different burst or "
                        "delay in different locations: not modelled")
    # Every location that uses the zone shares its per-key state.
    zone_locations = {r.location for r in sharing}

    selected: list[AccessLogEntry] = []
    for entry in entries:
        match = _matching_rule(_path(entry.uri), all_rules)
        if match is None or match.location not in zone_locations:
            continue
        if entry.limit_req_status == "-" and entry.status in _BEFORE_PREACCESS:
            continue
        selected.append(entry)
    if not selected:
        return _unknown(expected, derivation,
                        f"no request to {', '.join(sorted(zone_locations))} in the access log")
    if rule.key in _REMOTE_KEYS and any(not e.remote_addr for e in selected):
        return _unknown(expected, derivation,
                        "access log entries lack $remote_addr, the zone's key")

    def key_of(entry: AccessLogEntry) -> str:
        return entry.remote_addr if rule.key in _REMOTE_KEYS or not rule.key else rule.key

    observations = [(key_of(e), round((e.msec - e.request_time_s) * 1000), _observed(e), e)
                    for e in selected]
    # Within one millisecond NGINX's order is unknown (rejections even log first); no bucket
    # leaks within a millisecond, so acceptances always precede rejections there.
    observations.sort(key=lambda o: (o[1], _RANK[o[2]], o[3].msec))
    t0 = observations[0][1]

    free_running = model_outcomes(rule, [(k, t) for k, t, _, _ in observations])
    mismatches: list[_Mismatch] = []
    previous: dict[str, int] = {}
    run_of: dict[str, int] = {}
    tolerated_in_run: Counter[tuple[str, int]] = Counter()
    jitter_in_run: Counter[tuple[str, int]] = Counter()
    runs = 0
    for key, t, seen, entry in observations:
        if key not in previous or t - previous[key] > run_gap_ms:
            run_of[key] = run_of.get(key, -1) + 1
            runs += 1
        previous[key] = t
        # What the model says 1 ms either side: the resolution of the clocks NGINX limits and
        # logs with. A decision that a 1 ms shift flips is at the mercy of clock jitter.
        shifted = [bucket.evaluate(key, t + d) for d in (-CLOCK_RESOLUTION_MS, CLOCK_RESOLUTION_MS)]
        decision = bucket.follow(key, t, seen.accepted)
        if decision.outcome is seen:
            continue
        if any(alt.outcome.accepted != decision.outcome.accepted for alt in shifted):
            jitter_in_run[(key, run_of[key])] += 1
        if decision.outcome.accepted != seen.accepted:
            threshold, near = "burst", decision.near(bucket.burst)
        else:
            threshold, near = "delay", decision.near(bucket.delay)
        # Near a threshold, the 1 ms between the clock limit_req read and the one the log
        # shows can flip a decision (at burst 0 and exactly the rate, every request is on the
        # threshold): tolerated here, and held to account by the per-run totals below.
        if near:
            tolerated_in_run[(key, run_of[key])] += 1
        mismatches.append(_Mismatch(t, key, entry, decision, seen, threshold, near))

    failing = [m for m in mismatches if not m.tolerated]
    tolerated = [m for m in mismatches if m.tolerated]
    # Per run, the accepted count must stay within the tolerance of the free-running model's.
    run_totals: dict[tuple[str, int], list[int]] = {}
    previous.clear()
    run_index: dict[str, int] = {}
    for (key, t, seen, _), model in zip(observations, free_running, strict=True):
        if key not in previous or t - previous[key] > run_gap_ms:
            run_index[key] = run_index.get(key, -1) + 1
        previous[key] = t
        totals = run_totals.setdefault((key, run_index[key]), [0, 0])
        totals[0] += seen.accepted
        totals[1] += model.outcome.accepted
    # A decision within 1 ms of a threshold flips with the clock NGINX read, and that clock
    # is not jitter around the logged one: NGINX caches its time once per event-loop pass, so
    # on a busy machine a whole run of requests is read late (or early) together, and every
    # flip goes the same way (CI, load 2: NGINX accepted 123 of 152 on /api/, the free-running
    # model 112, with 19 flips a 1 ms shift explains). Allowed, then: the tolerance plus every
    # such flip, the most a clock 1 ms off can explain. A real difference (another burst, no
    # limit, a shared key) shows as decisions far from a threshold, which are never tolerated.
    def allowed(key: str, run: int) -> int:
        return tolerance_requests + jitter_in_run[(key, run)]

    off_runs = [(key, run, seen_n, model_n) for (key, run), (seen_n, model_n) in run_totals.items()
                if abs(seen_n - model_n) > allowed(key, run)]
    wrong_status = [e for e in selected if e.limit_req_status == "REJECTED" and e.status != status]
    unlimited = [e for e in selected if e.limit_req_status == "-"]
    keys = Counter(k for k, _, _, _ in observations)

    model_accepted = sum(d.outcome.accepted for d in free_running)
    seen_accepted = sum(o[2].accepted for o in observations)
    total = len(observations)
    measured = (f"NGINX accepted {seen_accepted}, rejected {total - seen_accepted} of {total} "
                f"requests from {len(keys)} client(s); the model (free-running) "
                f"{model_accepted} / {total - model_accepted}; {len(failing)} disagreement(s), "
                f"{len(tolerated)} tolerated near a threshold")
    values: tuple[tuple[str, float], ...] = (
        ("requests", float(total)), ("clients", float(len(keys))), ("runs", float(runs)),
        ("observed_accepted", float(seen_accepted)),
        ("observed_rejected", float(total - seen_accepted)),
        ("model_accepted", float(model_accepted)),
        ("model_rejected", float(total - model_accepted)),
        ("mismatches", float(len(failing))), ("tolerated", float(len(tolerated))),
        ("wrong_status", float(len(wrong_status))), ("not_limited", float(len(unlimited))),
    )

    def line(m: _Mismatch) -> str:
        limit = bucket.burst if m.threshold == "burst" else bucket.delay
        level = "" if m.model.raw_excess is None else (
            f", bucket {m.model.raw_excess / 1000:.3f} vs {m.threshold} "
            + ("nodelay" if limit == _NODELAY else f"{limit / 1000:g}"))
        return (f"+{(m.t_ms - t0) / 1000:.3f} s {m.key} {m.entry.method} {m.entry.uri}: "
                f"expected {m.model.outcome.value}, NGINX {m.observed.value} "
                f"(status {m.entry.status}{level})")

    details: list[str] = []
    if failing:
        details.append(f"disagreements ({len(failing)}):")
        details += [f"  {line(m)}" for m in failing[:_SHOWN]]
        if len(failing) > _SHOWN:
            details.append(f"  ... {len(failing) - _SHOWN} more")
    if tolerated:
        details.append(f"tolerated near a threshold ({len(tolerated)}):")
        details += [f"  {line(m)}" for m in tolerated[:_SHOWN]]
    if wrong_status:
        statuses = Counter(e.status for e in wrong_status)
        details.append(f"{len(wrong_status)} rejection(s) answered "
                       f"{', '.join(f'{s} x{n}' for s, n in sorted(statuses.items()))}, "
                       f"limit_req_status says {status}")
    for key, run, seen_n, model_n in off_runs:
        details.append(f"client {key}, run {run + 1}: NGINX accepted {seen_n}, the model {model_n} "
                       f"(more than {allowed(key, run)} apart: {tolerance_requests} + the "
                       f"{jitter_in_run[(key, run)]} flips a 1 ms shift explains)")
    if unlimited:
        details.append(f"{len(unlimited)} request(s) to a limited location were not evaluated by "
                       "limit_req ($limit_req_status '-'): the location has no limit_req")
    for key, count in keys.most_common(5):
        accepted = sum(o[2].accepted for o in observations if o[0] == key)
        predicted = sum(d.outcome.accepted
                        for o, d in zip(observations, free_running, strict=True) if o[0] == key)
        details.append(f"client {key}: {count} requests, NGINX accepted {accepted}, "
                       f"the model {predicted}")

    verdicts = [Verdict.FAIL if failing or off_runs or wrong_status or unlimited else Verdict.PASS]
    if not failing and model_accepted == total and seen_accepted == total:
        # Traffic that never reaches the limit cannot tell a limit from none.
        verdicts.append(Verdict.UNKNOWN)
        details.append("the traffic never reached the limit: no rejection predicted or seen")
    return CheckResult(NAME, combine(verdicts), measured, expected, derivation, tuple(details),
                       values)


# --- the response headers of a rejection ---------------------------------------------------


def _header_map(sample: HeaderSample | tuple[int, Mapping[str, str]]) -> tuple[int, dict[str, str]]:
    if isinstance(sample, HeaderSample):
        return sample.status, {k.lower(): v for k, v in reversed(sample.headers)}
    status, headers = sample
    return status, {k.lower(): v for k, v in headers.items()}


def _valid_retry_after(value: str) -> bool:
    value = value.strip()
    if value.isdigit():
        return True
    try:
        return email.utils.parsedate_to_datetime(value) is not None
    except (TypeError, ValueError):
        return False


@never_crashes(HEADERS)
def check_rate_limit_headers(samples: Iterable[HeaderSample | tuple[int, Mapping[str, str]]],
                             status: int) -> CheckResult:
    """Whether every rejection (``status``) says ``X-RateLimit-Status: REJECTED`` and
    ``Retry-After``."""
    expected = (f"every {status} answer carries X-RateLimit-Status: REJECTED and a Retry-After; "
                "no other answer says REJECTED")
    derivation = (f"limit_req_status {status}; nginx has no rate-limit headers of its own: the "
                  "lab adds X-RateLimit-Status $limit_req_status and Retry-After with 'always' "
                  "(docs/semantics.md §2)")
    normalized = [_header_map(s) for s in samples]
    rejected = [(s, h) for s, h in normalized if s == status]
    problems: list[str] = []
    for index, (_, headers) in enumerate(rejected):
        limit = headers.get("x-ratelimit-status")
        retry = headers.get("retry-after")
        if limit != "REJECTED":
            problems.append(f"{status} answer #{index + 1}: X-RateLimit-Status "
                            f"{'missing' if limit is None else repr(limit)}")
        if retry is None or not _valid_retry_after(retry):
            problems.append(f"{status} answer #{index + 1}: Retry-After "
                            f"{'missing' if retry is None else f'invalid {retry!r}'}")
    stray = Counter(s for s, h in normalized
                    if s != status and h.get("x-ratelimit-status") == "REJECTED")
    for other, count in sorted(stray.items()):
        problems.append(f"{count} answer(s) with status {other} say X-RateLimit-Status: REJECTED")
    values = (("samples", float(len(normalized))), ("rejections", float(len(rejected))),
              ("problems", float(len(problems))))
    measured = (f"{len(rejected)} of {len(normalized)} sampled answers were {status}; "
                f"{len(problems)} header problem(s)")
    if problems:
        verdict = Verdict.FAIL
    elif not rejected:
        verdict = Verdict.UNKNOWN
        measured = f"no {status} answer among {len(normalized)} samples"
    else:
        verdict = Verdict.PASS
    shown = problems[:_SHOWN] + ([f"... {len(problems) - _SHOWN} more"]
                                 if len(problems) > _SHOWN else [])
    return CheckResult(HEADERS, verdict, measured, expected, derivation, tuple(shown), values)


# -- registration -------------------------------------------------------------------------------

# NGINX decides on its cached clock, which can run a few milliseconds apart from the arrival
# time it logs ($msec - $request_time): two requests it let through 10 ms apart can show 6 ms
# apart in the log. As the conformance check does, the objective allows one request of slack.
_CLOCK_SLACK_REQUESTS = 1


class RateLimitParams(CheckParams):
    location: str = Field(min_length=1)


def _judge(ctx: CheckContext, params: RateLimitParams) -> CheckResult:
    nginx = ctx.expectations.nginx
    rules = nginx.rate_limit_for(params.location)
    if not rules:
        return CheckResult(NAME, Verdict.UNKNOWN, f"no limit_req on {params.location}", "-",
                           "the expected configuration limits nothing there")
    return check_rate_limit(ctx.history.access_log, rules[0], nginx.rate_limit_status,
                            rules=nginx.rate_limits)


def largest_excess(times_s: Sequence[float], rate_per_s: float) -> tuple[float, int, float]:
    """The most requests accepted in any stretch beyond what ``rate_per_s`` allows there:
    max over i <= j of (j - i + 1) - rate * (t_j - t_i), with that stretch's count and length."""
    best = (0.0, 0, 0.0)
    ordered = sorted(times_s)
    for i, start in enumerate(ordered):
        for j in range(i, len(ordered)):
            span = ordered[j] - start
            excess = (j - i + 1) - rate_per_s * span
            if excess > best[0]:
                best = (excess, j - i + 1, span)
    return best


def _objective(result: CheckResult, objectives: Objectives, ctx: CheckContext,
               params: RateLimitParams) -> ObjectiveResult | None:
    wanted: RateLimitObjective | None = objectives.rate_limits.get(params.location)
    if wanted is None:
        return None
    rules = ctx.expectations.nginx.rate_limits
    accepted: dict[str, list[float]] = {}
    for entry in ctx.history.access_log:
        rule = _matching_rule(_path(entry.uri), rules) if rules else None
        location = rule.location if rule is not None else None
        if location != params.location and not (location is None
                                                and _path(entry.uri).startswith(params.location)):
            continue
        if _observed(entry).accepted:
            accepted.setdefault(entry.remote_addr, []).append(entry.msec - entry.request_time_s)
    allowed = wanted.burst + 1 + _CLOCK_SLACK_REQUESTS
    how = (f"per client address, the most requests NGINX let through in any stretch beyond "
           f"rate x stretch (access log arrival times); {wanted.text()} allows burst + 1 = "
           f"{wanted.burst + 1}, + {_CLOCK_SLACK_REQUESTS} for NGINX's clock against the one it "
           "logs")
    if not accepted:
        return measured_objective("rate_limits", objectives, value=None, passed=None,
                                  measured=f"no request to {params.location} got through",
                                  derivation=how)
    worst_key, (excess, count, span) = max(
        ((key, largest_excess(times, wanted.rate_per_s)) for key, times in accepted.items()),
        key=lambda item: item[1][0])
    return ObjectiveResult(
        "rate_limits", Verdict.PASS if excess <= allowed else Verdict.FAIL,
        f"{params.location} <= {wanted.text()}", f"{count} accepted in {span * 1000:.0f} ms from "
        f"{worst_key} (excess {excess:.2f} over the rate)", excess, how)


def _predict(ctx: CheckContext, params: RateLimitParams,
             objectives: Objectives) -> Prediction | None:
    wanted = objectives.rate_limits.get(params.location)
    if wanted is None:
        return None
    rules = ctx.expectations.nginx.rate_limit_for(params.location)
    threshold = f"{params.location} <= {wanted.text()}"
    if not rules:
        return Prediction("rate_limits", f"{NAME} {params.location}", threshold, "no limit at all",
                          False, f"no limit_req applies to {params.location}")
    rule = rules[0]
    fits = rule.rate_per_s <= wanted.rate_per_s and rule.burst <= wanted.burst
    return Prediction("rate_limits", f"{NAME} {params.location}", threshold,
                      f"{rule.rate_per_s:g} r/s burst {rule.burst} per {rule.key or 'key'}", fits,
                      f"zone {rule.zone}: rate {rule.rate_per_s:g} "
                      f"{'<=' if rule.rate_per_s <= wanted.rate_per_s else '>'} "
                      f"{wanted.rate_per_s:g}, burst {rule.burst} "
                      f"{'<=' if rule.burst <= wanted.burst else '>'} {wanted.burst}")


register(CheckDef(
    name=NAME, params=RateLimitParams, judge=_judge, label=lambda p: f"{NAME} {p.location}",
    summary="every request NGINX logged for a limited location got the outcome limit_req's "
            "algorithm predicts, per client address",
    objectives=(ObjectiveHook("rate_limits", _objective, _predict),)))


def _judge_headers(ctx: CheckContext, params: NoParams) -> CheckResult:
    return check_rate_limit_headers(ctx.history.header_samples,
                                    ctx.expectations.nginx.rate_limit_status)


register(CheckDef(
    name=HEADERS, params=NoParams, judge=_judge_headers,
    summary="every rejection says X-RateLimit-Status: REJECTED and Retry-After"))

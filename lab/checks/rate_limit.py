"""Rate limits: every ``limit_req`` decision NGINX logged, against the bucket it is configured with.

The bucket is ``lab.checks.limit_req_model`` (nginx 1.22.1's algorithm, exactly); how NGINX's
access log relates to the clock that bucket reads, and which alternatives that leaves open,
is ``lab.checks.limit_req_replay`` (with the source lines). ``check_rate_limit`` replays each
client's requests through the configured bucket under those alternatives: a decision NGINX
logged that none of them gives is a failure, whatever its distance from a threshold, and
there is no allowance of requests. A limit that never acted (nothing rejected or delayed)
cannot be told from no limit: unknown.

The ``rate_limits`` objective judges the zone NGINX runs against the user's target (its rate
and burst, exactly) and NGINX's acceptances against a bucket of the target's numbers.
"""

from __future__ import annotations

import email.utils
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from pydantic import Field

from lab.checks.base import (
    CheckResult,
    ObjectiveResult,
    Prediction,
    Verdict,
    combine,
)
from lab.checks.limit_req_model import (
    NODELAY,
    ONE_REQUEST,
    Decision,
    Limiter,
    LimitOutcome,
    min_spacing_ms,
    model_outcomes,
    one_step_changes,
    predict_schedule,
)
from lab.checks.limit_req_replay import (
    LoggedRequest,
    Replay,
    Unexplained,
    WorkerClocks,
    logged_request,
    replay,
    threshold_of,
    worker_clocks,
)
from lab.checks.registry import (
    CheckContext,
    CheckDef,
    CheckParams,
    NoParams,
    ObjectiveHook,
    register,
)
from lab.expectations import Expectations, RateLimitRule
from lab.history import AccessLogEntry, HeaderSample
from lab.objectives import Objectives, RateLimitObjective

NAME = "rate-limit"
HEADERS = "rate-limit-headers"
# Never reached the PREACCESS phase: the request line or headers were bad or too slow, or
# (413, 414, 431) the find-config phase refused it first, as client_max_body_size does for a
# Content-Length over the limit. Such a request was never counted by limit_req.
_BEFORE_PREACCESS = frozenset({400, 408, 413, 414, 431})
_SHOWN = 10
# The checklist's claim for its auth experiment, quoted beside the model's prediction.
CHECKLIST_AUTH_CLAIM = "the first 10-11 succeed"


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


def _describe_limiter(limiter: Limiter) -> str:
    return f"{limiter.rate / 1000:g} r/s burst {limiter.burst // ONE_REQUEST}"


@dataclass(frozen=True)
class _Zone:
    """What one rate-limit check judges: the rule, the requests that share its bucket."""

    rule: RateLimitRule
    limiter: Limiter
    locations: frozenset[str]
    selected: tuple[AccessLogEntry, ...]


@dataclass(frozen=True)
class _Judged:
    """The replay of every client of a zone."""

    keys: dict[str, list[LoggedRequest]]
    replays: dict[str, Replay]
    nominal: dict[str, list[Decision]]      # the model on the logged times, logged order

    def unexplained(self) -> list[tuple[str, Unexplained]]:
        return sorted(((key, u) for key, r in self.replays.items() for u in r.unexplained),
                      key=lambda item: item[1].request.stamp_ms)


def _texts(rule: RateLimitRule, limiter: Limiter, status: int) -> tuple[str, str]:
    """The check's expected and derivation texts."""
    delay = ("" if limiter.delay == NODELAY
             else f", delay threshold {limiter.delay} milli")
    expected = (f"every request's outcome as limit_req decides for {_describe_rule(rule)} per "
                "client, on NGINX's clocks: no decision that no clock alternative explains; "
                f"rejections answered {status}; at least one rejection or delay (else the "
                "limit never acted)")
    derivation = (f"rate {rule.rate_per_s:g} r/s = {limiter.rate} milli-requests/s (integer; "
                  f"r/m loses the remainder); burst {rule.burst} = {limiter.burst} milli{delay}; "
                  f"key {rule.key or '?'} = $remote_addr; arrival = $msec - $request_time, the "
                  "wall ms of the event-loop pass that created and decided the request; "
                  "limit_req reads the monotonic ms of that pass: arrival + 0 or 1 (two "
                  "clocks truncated apart); workers' requests in logged order unless a worker's "
                  "next logged pass leaves room; a rejection logged later (body discarded) up "
                  "to its $msec; algorithm: docs/semantics.md §2; clocks: "
                  "lab/checks/limit_req_replay.py")
    return expected, derivation


def _zone(entries: Sequence[AccessLogEntry], rule: RateLimitRule,
          rules: Sequence[RateLimitRule]) -> _Zone | str:
    """The requests that share ``rule``'s bucket, or why they cannot be judged."""
    if rule.key and rule.key not in _REMOTE_KEYS and "$" in rule.key:
        return f"zone key {rule.key} is not in the access log; only $remote_addr is"
    all_rules = [rule, *(r for r in rules if r != rule)]
    same_place = [r for r in all_rules if r.location == rule.location and r.zone != rule.zone]
    if same_place:
        return ("several limit_req in location "
                f"{rule.location} ({', '.join(r.zone for r in [rule, *same_place])}): "
                "their joint accounting is not modelled")
    sharing = [r for r in all_rules if r.zone == rule.zone]
    if any((r.burst, r.nodelay, r.delay) != (rule.burst, rule.nodelay, rule.delay)
           for r in sharing):
        return f"zone {rule.zone} is used with different burst or delay in different locations"
    # Every location that uses the zone shares its per-key state.
    locations = frozenset(r.location for r in sharing)
    selected = []
    for entry in entries:
        match = _matching_rule(_path(entry.uri), all_rules)
        if match is None or match.location not in locations:
            continue
        if entry.limit_req_status == "-" and entry.status in _BEFORE_PREACCESS:
            continue
        selected.append(entry)
    if not selected:
        return f"no request to {', '.join(sorted(locations))} in the access log"
    if rule.key in _REMOTE_KEYS and any(not e.remote_addr for e in selected):
        return "access log entries lack $remote_addr, the zone's key"
    return _Zone(rule, Limiter.of(rule), locations, tuple(selected))


def _key_of(rule: RateLimitRule, entry: AccessLogEntry) -> str:
    return entry.remote_addr if rule.key in _REMOTE_KEYS or not rule.key else rule.key


def _judge_zone(zone: _Zone, clocks: WorkerClocks) -> _Judged:
    """Every client's requests replayed through the zone's bucket."""
    keys: dict[str, list[LoggedRequest]] = defaultdict(list)
    for index, entry in enumerate(zone.selected):
        if entry.limit_req_status != "-":
            keys[_key_of(zone.rule, entry)].append(logged_request(entry, index))
    replays = {key: replay(zone.limiter, requests, clocks) for key, requests in keys.items()}
    nominal = {}
    for key, requests in keys.items():
        ordered = sorted(requests, key=lambda r: (r.stamp_ms, not r.outcome.accepted))
        nominal[key] = model_outcomes(zone.rule, [(key, r.stamp_ms) for r in ordered])
    return _Judged(dict(keys), replays, nominal)


def _told_apart(zone: _Zone, judged: _Judged, clocks: WorkerClocks) -> tuple[list[str], list[str]]:
    """The one-step changes of the zone this run's log rules out, and those it does not."""
    told, not_told = [], []
    for label, changed in one_step_changes(zone.limiter):
        consistent = all(replay(changed, requests, clocks).explained
                         for requests in judged.keys.values())
        (not_told if consistent else told).append(label)
    return told, not_told


def _unexplained_line(zone: _Zone, key: str, item: Unexplained, t0: int) -> str:
    request, model = item.request, item.model
    entry = zone.selected[request.index]
    name, limit = threshold_of(zone.limiter, model, request.outcome)
    level = "" if model.raw_excess is None else (
        f", bucket {model.raw_excess / 1000:.3f} vs {name} "
        + ("nodelay" if limit == NODELAY else f"{limit / 1000:g}"))
    return (f"+{(request.stamp_ms - t0) / 1000:.3f} s {key} {entry.method} {entry.uri} "
            f"(worker {request.worker}): NGINX {request.outcome.value}, the model "
            f"{model.outcome.value} on the logged time (status {entry.status}{level}); no clock "
            "alternative gives NGINX's decision")


def _explained_line(judged: _Judged) -> str | None:
    """How many decisions only a clock alternative explains, and which alternative."""
    if judged.unexplained():
        return None
    differing = sum(
        d.outcome is not r.outcome
        for key, requests in judged.keys.items()
        for d, r in zip(judged.nominal[key],
                        sorted(requests, key=lambda r: (r.stamp_ms, not r.outcome.accepted)),
                        strict=True))
    if not differing:
        return None
    how = ("the 0-1 ms between NGINX's monotonic and wall clocks"
           + (" and a worker's clock stale against another's (within its next logged pass)"
              if any(r.reordered for r in judged.replays.values()) else ""))
    return (f"{differing} decision(s) differ from the model run on the logged times in logged "
            f"order; all are explained by {how}")


def check_rate_limit(entries: Sequence[AccessLogEntry], rule: RateLimitRule, status: int, *,
                     rules: Sequence[RateLimitRule] = (), workers: int = 1,
                     neighbours: bool = True) -> CheckResult:
    """Whether each request NGINX logged for ``rule``'s location got an outcome the bucket
    gives on NGINX's clocks.

    ``rules`` are every limit_req rule of the configuration (``NginxPolicy.rate_limits``): a
    request belongs to the rule of its longest matching location, as in NGINX. ``status`` is
    the configured ``limit_req_status``: a rejection answered with any other status fails.
    ``workers`` is worker_processes: with more than one, the log must name each line's worker.
    ``neighbours`` also replays the zone's one-step changes, to say which this run rules out.
    """
    expected, derivation = _texts(rule, Limiter.of(rule), status)
    zone = _zone(entries, rule, rules)
    if isinstance(zone, str):
        return CheckResult(NAME, Verdict.UNKNOWN, zone, expected, derivation)
    if workers > 1 and any(e.worker == 0 for e in zone.selected):
        return CheckResult(NAME, Verdict.UNKNOWN, f"access log lines lack $pid with {workers} "
                           "workers: the order their clocks fed the shared zone is unbounded",
                           expected, derivation)
    clocks = worker_clocks(entries)
    judged = _judge_zone(zone, clocks)
    told = _told_apart(zone, judged, clocks) if neighbours and not judged.unexplained() \
        else ([], [])
    return _result(zone, judged, told, status, expected, derivation)


def _result(zone: _Zone, judged: _Judged, told_apart: tuple[list[str], list[str]], status: int,
            expected: str, derivation: str) -> CheckResult:
    """The verdict, its figures and the lines that show them."""
    requests = [r for rs in judged.keys.values() for r in rs]
    unexplained = judged.unexplained()
    undecided = [key for key, r in judged.replays.items() if r.gave_up]
    wrong_status = [e for e in zone.selected
                    if e.limit_req_status == "REJECTED" and e.status != status]
    unlimited = [e for e in zone.selected if e.limit_req_status == "-"]
    seen_accepted = sum(r.outcome.accepted for r in requests)
    acted = sum(r.outcome is not LimitOutcome.PASSED for r in requests)
    model_accepted = sum(d.outcome.accepted for ds in judged.nominal.values() for d in ds)
    total = len(requests)
    t0 = min((r.stamp_ms for r in requests), default=0)

    details: list[str] = []
    if unexplained:
        details.append(f"unexplained decisions ({len(unexplained)}):")
        details += [f"  {_unexplained_line(zone, key, u, t0)}" for key, u in unexplained[:_SHOWN]]
        if len(unexplained) > _SHOWN:
            details.append(f"  ... {len(unexplained) - _SHOWN} more")
    explained = _explained_line(judged)
    if explained:
        details.append(explained)
    if wrong_status:
        statuses = Counter(e.status for e in wrong_status)
        details.append(f"{len(wrong_status)} rejection(s) answered "
                       f"{', '.join(f'{s} x{n}' for s, n in sorted(statuses.items()))}, "
                       f"limit_req_status says {status}")
    if unlimited:
        details.append(f"{len(unlimited)} request(s) to a limited location were not evaluated by "
                       "limit_req ($limit_req_status '-'): the location has no limit_req")
    for key, logged in sorted(judged.keys.items(), key=lambda kv: -len(kv[1]))[:5]:
        details.append(f"client {key}: {len(logged)} requests, NGINX accepted "
                       f"{sum(r.outcome.accepted for r in logged)}, the model on the logged "
                       f"times {sum(d.outcome.accepted for d in judged.nominal[key])}")
    told, not_told = told_apart
    if told or not_told:
        details.append(f"this run tells {_describe_limiter(zone.limiter)} from: "
                       f"{', '.join(told) or 'none of its one-step changes'}"
                       + (f"; not from: {', '.join(not_told)}" if not_told else ""))
        if zone.limiter.burst == 0 and not_told:
            spacing = min_spacing_ms(zone.limiter.rate)
            details.append(f"  (without a burst, a request passes {spacing} ms after the last "
                           "acceptance at the earliest; rates with the same whole ms decide "
                           "alike)")

    verdicts = [Verdict.FAIL if unexplained or wrong_status or unlimited else Verdict.PASS]
    if undecided:
        verdicts.append(Verdict.UNKNOWN)
        details.append(f"client(s) {', '.join(undecided)}: the log leaves too many orders of "
                       "the workers' requests open to follow")
    if not acted and not unexplained:
        # Traffic that never reaches the limit cannot tell a limit from none.
        verdicts.append(Verdict.UNKNOWN)
        details.append("the limit never acted: NGINX rejected and delayed nothing, so a missing "
                       "or looser limit would look the same")
    measured = (f"NGINX accepted {seen_accepted}, rejected {total - seen_accepted} of {total} "
                f"requests from {len(judged.keys)} client(s); the model on the logged times "
                f"{model_accepted} / {total - model_accepted}; {len(unexplained)} decision(s) "
                "no clock alternative explains")
    values: tuple[tuple[str, float], ...] = (
        ("requests", float(total)), ("clients", float(len(judged.keys))),
        ("observed_accepted", float(seen_accepted)),
        ("observed_rejected", float(total - seen_accepted)),
        ("model_accepted", float(model_accepted)),
        ("model_rejected", float(total - model_accepted)),
        ("unexplained", float(len(unexplained))),
        ("wrong_status", float(len(wrong_status))), ("not_limited", float(len(unlimited))),
        ("one_step_told_apart", float(len(told))),
        ("one_step_changes", float(len(told) + len(not_told))),
    )
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


class RateLimitParams(CheckParams):
    location: str = Field(min_length=1)


def _judge(ctx: CheckContext, params: RateLimitParams) -> CheckResult:
    nginx = ctx.expectations.nginx
    rules = nginx.rate_limit_for(params.location)
    if not rules:
        return CheckResult(NAME, Verdict.UNKNOWN, f"no limit_req on {params.location}", "-",
                           "the expected configuration limits nothing there")
    return check_rate_limit(ctx.history.access_log, rules[0], nginx.rate_limit_status,
                            rules=nginx.rate_limits, workers=nginx.upstream.worker_processes)


def _target_limiter(wanted: RateLimitObjective) -> Limiter:
    """The user's target as a bucket: its rate and burst, never delaying."""
    return Limiter(round(wanted.rate_per_s * 1000), wanted.burst * ONE_REQUEST)


def configured_within(rule: RateLimitRule | None,
                      wanted: RateLimitObjective) -> tuple[bool, str]:
    """Whether the zone NGINX runs is at most the target, exactly, and the comparison."""
    if rule is None:
        return False, "no limit_req at all"
    fits = rule.rate_per_s <= wanted.rate_per_s and rule.burst <= wanted.burst
    return fits, (f"zone {rule.zone}: rate {rule.rate_per_s:g} "
                  f"{'<=' if rule.rate_per_s <= wanted.rate_per_s else '>'} "
                  f"{wanted.rate_per_s:g}, burst {rule.burst} "
                  f"{'<=' if rule.burst <= wanted.burst else '>'} {wanted.burst}")


def acceptances_beyond(entries: Sequence[AccessLogEntry], location: str,
                       rules: Sequence[RateLimitRule],
                       wanted: RateLimitObjective) -> tuple[int, int, list[str]]:
    """NGINX's accepted requests to ``location`` replayed, per client address, through a bucket
    of the target's rate and burst on NGINX's clocks: (accepted, beyond the target, where)."""
    accepted: dict[str, list[LoggedRequest]] = defaultdict(list)
    for index, entry in enumerate(entries):
        path = _path(entry.uri)
        rule = _matching_rule(path, rules)
        if (rule.location != location if rule is not None else not path.startswith(location)):
            continue
        if entry.limit_req_status == "-" and entry.status in _BEFORE_PREACCESS:
            continue
        # Whatever limit_req did not reject got through, a location it never ran in included.
        request = logged_request(entry, index)
        if request.outcome.accepted:
            accepted[entry.remote_addr].append(request)
    clocks = worker_clocks(entries)
    target = _target_limiter(wanted)
    beyond: list[tuple[int, str]] = []
    for key, requests in accepted.items():
        for item in replay(target, requests, clocks, acceptance_only=True).unexplained:
            level = "" if item.model.raw_excess is None else (
                f", the target's bucket at {item.model.raw_excess / 1000:.3f} > burst "
                f"{wanted.burst}")
            beyond.append((item.request.stamp_ms, f"{key}{level}"))
    t0 = min((r.stamp_ms for rs in accepted.values() for r in rs), default=0)
    where = [f"+{(t - t0) / 1000:.3f} s {text}" for t, text in sorted(beyond)]
    return sum(len(rs) for rs in accepted.values()), len(beyond), where


def _objective(result: CheckResult, objectives: Objectives, ctx: CheckContext,
               params: RateLimitParams) -> ObjectiveResult | None:
    wanted: RateLimitObjective | None = objectives.rate_limits.get(params.location)
    if wanted is None:
        return None
    nginx = ctx.expectations.nginx
    rules = nginx.rate_limit_for(params.location)
    fits, comparison = configured_within(rules[0] if rules else None, wanted)
    accepted, beyond, where = acceptances_beyond(ctx.history.access_log, params.location,
                                                 nginx.rate_limits, wanted)
    how = (f"the zone NGINX runs against {wanted.text()}, exactly: rate <= {wanted.rate_per_s:g}"
           f" r/s and burst <= {wanted.burst} (N requests in one millisecond fit only when N <= "
           "burst + 1); and per client address, NGINX's accepted requests replayed through a "
           "limit_req bucket of the target's rate and burst on NGINX's clocks (decision at the "
           "logged ms + 0 or 1; workers' order bounded by their next logged pass): an "
           "acceptance that bucket rejects under every alternative is beyond the target")
    measured = f"configured {comparison}; "
    if accepted:
        measured += (f"{beyond} of {accepted} accepted requests beyond the target's bucket"
                     + (f" (first {', '.join(where[:3])})" if where else ""))
    else:
        measured += f"no request to {params.location} got through"
    if not fits or beyond:
        verdict = Verdict.FAIL
    elif not accepted:
        verdict = Verdict.UNKNOWN
    else:
        verdict = Verdict.PASS
    return ObjectiveResult("rate_limits", verdict, f"{params.location} <= {wanted.text()}",
                           measured, float(beyond) if accepted else None, how)


def _predict(ctx: CheckContext, params: RateLimitParams,
             objectives: Objectives) -> Prediction | None:
    wanted = objectives.rate_limits.get(params.location)
    if wanted is None:
        return None
    rules = ctx.expectations.nginx.rate_limit_for(params.location)
    threshold = f"{params.location} <= {wanted.text()}"
    fits, comparison = configured_within(rules[0] if rules else None, wanted)
    if not rules:
        return Prediction("rate_limits", f"{NAME} {params.location}", threshold, "no limit at all",
                          False, f"no limit_req applies to {params.location}")
    rule = rules[0]
    return Prediction("rate_limits", f"{NAME} {params.location}", threshold,
                      f"{rule.rate_per_s:g} r/s burst {rule.burst} per {rule.key or 'key'}", fits,
                      comparison)


def _checklist_notes(expectations: Expectations) -> tuple[str, ...]:
    """What NGINX's algorithm predicts for the checklist's own experiments, where the
    configuration limits both /api/auth/ and /api/."""
    nginx = expectations.nginx
    auth, api = nginx.rate_limit_for("/api/auth/"), nginx.rate_limit_for("/api/")
    return predict_checklist_experiments(auth[0], api[0]) if auth and api else ()


register(CheckDef(
    name=NAME, params=RateLimitParams, judge=_judge, label=lambda p: f"{NAME} {p.location}",
    summary="every request NGINX logged for a limited location got an outcome limit_req's "
            "algorithm gives on NGINX's clocks, per client address",
    objectives=(ObjectiveHook("rate_limits", _objective, _predict),), notes=_checklist_notes))


def _judge_headers(ctx: CheckContext, params: NoParams) -> CheckResult:
    return check_rate_limit_headers(ctx.history.header_samples,
                                    ctx.expectations.nginx.rate_limit_status)


register(CheckDef(
    name=HEADERS, params=NoParams, judge=_judge_headers,
    summary="every rejection says X-RateLimit-Status: REJECTED and Retry-After"))

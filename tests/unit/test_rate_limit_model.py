"""The limit_req model (docs/semantics.md §2), its replay on NGINX's clocks, and the checks."""

from __future__ import annotations

import dataclasses
import random

import pytest
from limit_req_sim import LOADED, QUIET, Send, simulate

from lab.checks.base import Verdict
from lab.checks.limit_req_model import (
    ONE_REQUEST,
    BucketState,
    LeakyBucket,
    Limiter,
    LimitOutcome,
    forced,
    min_spacing_ms,
    model_outcomes,
    one_step_changes,
    predict_schedule,
    rate_milli,
    step,
)
from lab.checks.limit_req_replay import LoggedRequest, WorkerClocks, replay
from lab.checks.rate_limit import (
    check_rate_limit,
    check_rate_limit_headers,
    predict_checklist_experiments,
)
from lab.config import LabConfig
from lab.expectations import RateLimitRule
from lab.history import AccessLogEntry, HeaderSample
from lab.topology.nginx_policy import parse_nginx_policy
from lab.topology.render import render_nginx

pytestmark = pytest.mark.covers("check:rate-limit", "check:rate-limit-headers")

T0 = 1_700_000_000.0
POLICY = parse_nginx_policy(render_nginx(LabConfig()))
AUTH = POLICY.rate_limit_for("/api/auth/")[0]
API = POLICY.rate_limit_for("/api/")[0]
STATUS = POLICY.rate_limit_status
P, D, R = LimitOutcome.PASSED, LimitOutcome.DELAYED, LimitOutcome.REJECTED
WORKER = 7


def rule(
        rate: float = 10, burst: int = 5, *, nodelay: bool = True, delay: int = 0) -> RateLimitRule:
    """A limit_req rule on /api/auth/ keyed by client address."""
    return RateLimitRule("auth", "/api/auth/", rate, burst, nodelay, delay, "$binary_remote_addr")


def outcomes(limit: RateLimitRule, times: list[int], key: str = "c") -> list[LimitOutcome]:
    """The model's outcomes for one client's arrival times (ms)."""
    return [d.outcome for d in model_outcomes(limit, [(key, t) for t in times])]


def nginx_log(running: RateLimitRule, arrivals: list[tuple[str, int]], *,
              uri: str = "/api/auth/login", served_s: float = 0.020,
              reject_status: int = STATUS) -> list[AccessLogEntry]:
    """The access log of a one-worker NGINX running ``running`` whose two clocks agree, in
    completion order."""
    bucket = LeakyBucket.for_rule(running)
    entries = []
    for key, t in arrivals:
        decision = bucket.request(key, t)
        rejected = decision.outcome is R
        request_time = 0.0 if rejected else round(served_s + decision.delay_ms / 1000, 3)
        entries.append(AccessLogEntry(
            msec=round(T0 + t / 1000 + request_time, 3), request_time_s=request_time,
            method="POST", uri=uri, status=reject_status if rejected else 200,
            upstream_addrs=() if rejected else ("10.0.0.2:8000",),
            upstream_backends=() if rejected else ("backend-1",),
            upstream_statuses=() if rejected else ("200",), upstream_times_s=(),
            limit_req_status=decision.outcome.value, remote_addr=key, worker=WORKER))
    return sorted(entries, key=lambda e: e.msec)


def simultaneous(count: int, key: str = "10.0.0.9", at: int = 0) -> list[tuple[str, int]]:
    """``count`` requests of one client in the same millisecond."""
    return [(key, at)] * count


def spaced(count: int, spacing_ms: int, key: str = "10.0.0.9") -> list[tuple[str, int]]:
    """``count`` requests of one client ``spacing_ms`` apart."""
    return [(key, i * spacing_ms) for i in range(count)]


def accept(entries: list[AccessLogEntry], count: int) -> list[AccessLogEntry]:
    """The log with its first ``count`` rejections turned into acceptances."""
    out, left = [], count
    for e in entries:
        if left and e.limit_req_status == "REJECTED":
            left -= 1
            e = dataclasses.replace(e, status=200, limit_req_status="PASSED",
                                    request_time_s=0.02, msec=round(e.msec + 0.02, 3))
        out.append(e)
    return out


def shift(entries: list[AccessLogEntry], index: int, delta_ms: int) -> list[AccessLogEntry]:
    """The log with the ``index``-th arrival's logged time ``delta_ms`` off NGINX's own clock."""
    ordered = sorted(entries, key=lambda e: e.msec - e.request_time_s)
    target = ordered[index]
    moved = dataclasses.replace(target, msec=round(target.msec + delta_ms / 1000, 3))
    return [moved if e is target else e for e in entries]


def check(log: list[AccessLogEntry], limit: RateLimitRule = AUTH, **kwargs: object):
    """The rate-limit check of ``log`` against ``limit`` with the rendered rules."""
    return check_rate_limit(log, limit, STATUS, rules=POLICY.rate_limits, **kwargs)  # type: ignore[arg-type]


# --- the bucket --------------------------------------------------------------------------


def test_rendered_zones_are_the_modelled_ones() -> None:
    """The rendered nginx.conf yields auth 10 r/s burst 5 nodelay and api 100 r/s burst 0."""
    assert (AUTH.rate_per_s, AUTH.burst, AUTH.nodelay) == (10, 5, True)
    assert (API.rate_per_s, API.burst) == (100, 0)
    assert STATUS == 429
    assert rate_milli(AUTH) == 10_000


@pytest.mark.parametrize("count", [1, 2, 5, 6, 7, 15, 40])
def test_simultaneous_requests_accept_burst_plus_one(count: int) -> None:
    """N requests in one millisecond on a fresh key accept min(N,
    burst + 1) with burst=5 nodelay."""
    result = outcomes(AUTH, [0] * count)
    assert result.count(P) == min(count, AUTH.burst + 1)
    assert result == [P] * min(count, 6) + [R] * max(0, count - 6)


def test_burst_zero_accepts_one() -> None:
    """Without a burst only one of simultaneous requests passes."""
    assert outcomes(API, [0, 0, 0]) == [P, R, R]


def test_hand_computed_leak() -> None:
    """10 r/s leaks 10 milli per ms: excess 0, 500, 1000 for requests 50 ms apart."""
    bucket = LeakyBucket.for_rule(AUTH)
    excesses = [bucket.request("c", t).excess for t in (0, 50, 100)]
    assert excesses == [0, 500, 1000]
    assert bucket.level("c") == (1000, 100)


def test_rejection_leaves_state_unchanged() -> None:
    """A rejected request neither raises the excess nor moves the last time."""
    bucket = LeakyBucket.for_rule(rule(burst=0))
    bucket.request("c", 0)
    decision = bucket.request("c", 40)
    assert decision.outcome is R and decision.excess == 600
    assert bucket.level("c") == (0, 0)
    assert bucket.request("c", 100).outcome is P


def test_rate_per_minute_loses_the_remainder() -> None:
    """10r/m is stored as 166 milli-requests/s, so the next request passes
    after 6025 ms, not 6000."""
    conf = render_nginx(LabConfig()).replace("rate=10r/s", "rate=10r/m")
    per_minute = parse_nginx_policy(conf).rate_limit_for("/api/auth/")[0]
    per_minute = dataclasses.replace(per_minute, burst=0)
    assert rate_milli(per_minute) == 166
    assert outcomes(per_minute, [0, 6000]) == [P, R]
    assert outcomes(per_minute, [0, 6024]) == [P, R]
    assert outcomes(per_minute, [0, 6025]) == [P, P]


def test_without_nodelay_accepted_requests_wait_k_over_rate() -> None:
    """Without nodelay the k-th request of a burst waits k/rate (100 ms steps at 10 r/s)."""
    decisions = predict_schedule(rule(nodelay=False), 4, 0)
    assert [d.outcome for d in decisions] == [P, D, D, D]
    assert [d.delay_ms for d in decisions] == [0, 100, 200, 300]


def test_delay_threshold() -> None:
    """delay=2 passes the first 3 at once and delays the 4th by one request's worth."""
    decisions = predict_schedule(rule(delay=2, nodelay=False), 5, 0)
    assert [d.outcome for d in decisions] == [P, P, P, D, D]
    assert [d.delay_ms for d in decisions] == [0, 0, 0, 100, 200]


def test_zero_delay_is_logged_passed() -> None:
    """A delay that rounds down to 0 ms is PASSED, as the module's handler logs it."""
    bucket = LeakyBucket(100_000_000, 5, nodelay=False)
    bucket.request("c", 0)
    decision = bucket.request("c", 0)
    assert (decision.outcome, decision.delay_ms, decision.excess) == (P, 0, 1000)


def test_clock_going_backwards() -> None:
    """A request timed before the last counts as 0 ms later; more than 60 s before, as 1 ms."""
    bucket = LeakyBucket.for_rule(rule())
    bucket.request("c", 100_000)
    assert bucket.request("c", 99_990).excess == 1000
    assert bucket.level("c") == (1000, 100_000)
    assert bucket.request("c", 30_000).excess == 1000 - 10 + 1000
    assert bucket.level("c") == (1990, 30_000)


def test_keys_are_independent() -> None:
    """Each client has its own bucket: two clients bursting together each get burst + 1."""
    arrivals = simultaneous(8, "a") + simultaneous(8, "b")
    decisions = model_outcomes(AUTH, arrivals)
    assert sum(d.outcome is P for d in decisions[:8]) == 6
    assert sum(d.outcome is P for d in decisions[8:]) == 6


def test_a_forced_acceptance_is_not_clamped_at_the_burst() -> None:
    """An acceptance NGINX made above the burst stores its excess, so the next one counts too."""
    limiter = Limiter.of(AUTH)
    full = BucketState(5000, 0)
    assert step(limiter, full, 0)[0].outcome is R
    assert forced(limiter, full, 0, accepted=True) == BucketState(6000, 0)
    assert forced(limiter, full, 0, accepted=False) == full
    assert forced(limiter, None, 3, accepted=True) == BucketState(0, 3)


def test_rates_with_the_same_whole_ms_decide_alike_without_a_burst() -> None:
    """At burst 0, 100 r/s and 110 r/s both pass a request 10 ms after the last acceptance:
    on any arrival times they decide the same (one-step changes that are no change)."""
    assert min_spacing_ms(100_000) == min_spacing_ms(110_000) == 10
    assert min_spacing_ms(50_000) == 20 and min_spacing_ms(55_000) == 19
    rng = random.Random(3)
    times = sorted(rng.randrange(0, 3000) for _ in range(400))
    assert outcomes(API, times) == outcomes(dataclasses.replace(API, rate_per_s=110), times)
    assert [label for label, _ in one_step_changes(Limiter.of(API))] == [
        "burst 1", "110 r/s", "90 r/s"]
    assert [label for label, _ in one_step_changes(Limiter.of(AUTH))] == [
        "burst 6", "burst 4", "11 r/s", "9 r/s"]


def test_checklist_experiments() -> None:
    """15 auth requests 50 ms apart: the first 11 pass, then every other;
    150 API at 10 ms all pass."""
    lines = predict_checklist_experiments(AUTH, API)
    auth = outcomes(AUTH, [i * 50 for i in range(15)])
    assert auth == [P] * 11 + [R, P, R, P]
    assert lines[0].startswith("15 auth requests 50 ms apart, zone auth (10 r/s, burst 5, nodelay)")
    assert "model accepts 13, rejects 2; the first 11 succeed; rejected: #12, #14" in lines[0]
    assert "checklist: 'the first 10-11 succeed'" in lines[0]
    assert "at 49 ms apart: model accepts 12, rejects 3; the first 10 succeed" in lines[1]
    api = next(line for line in lines if line.startswith("150 API"))
    assert "model accepts 150, rejects 0" in api
    assert any("at 9 ms apart: model accepts 75, rejects 75" in line for line in lines)


def test_the_rate_limit_check_notes_the_checklist_experiments() -> None:
    """A run with the rate-limit check notes the experiments' prediction for the configuration
    it runs (the check's entry says so; the runner names no check)."""
    from lab.checks import CHECKS
    from lab.config import LabConfig
    from lab.topology.expect import claimed

    expectations = claimed(LabConfig())
    nginx = expectations.nginx
    lines = CHECKS.get("rate-limit").notes(expectations)
    assert lines == predict_checklist_experiments(nginx.rate_limit_for("/api/auth/")[0],
                                                  nginx.rate_limit_for("/api/")[0])
    assert lines[0].startswith("15 auth requests 50 ms apart")


# --- the replay on NGINX's clocks ----------------------------------------------------------


def logged(*rows: tuple[int, str] | tuple[int, str, int] | tuple[int, str, int, int]
           ) -> list[LoggedRequest]:
    """Requests as (arrival ms, outcome letter[, worker[, logged ms]])."""
    out = []
    for index, row in enumerate(rows):
        stamp, letter = row[0], row[1]
        worker = row[2] if len(row) > 2 else WORKER  # type: ignore[misc]
        logged_ms = row[3] if len(row) > 3 else stamp  # type: ignore[misc]
        outcome = {"P": P, "D": D, "R": R}[letter]
        out.append(LoggedRequest(stamp, logged_ms, worker, outcome, index))
    return out


def clocks_of(requests: list[LoggedRequest], *extra: tuple[int, int]) -> WorkerClocks:
    """The workers' pass starts: the requests' own stamps and ``extra`` (worker, ms) lines."""
    lines = [(r.worker, r.stamp_ms, r.logged_ms) for r in requests]
    return WorkerClocks.of(lines + [(w, t, t) for w, t in extra])


API_LIMITER = Limiter(100_000, 0)


def test_the_phase_between_nginx_clocks_explains_one_ms_either_way() -> None:
    """Burst 0 at 100 r/s: a rejection 10 ms after an acceptance on the logged (wall) clock is
    9 ms on the monotonic one when the phase differs; 11 ms can never be 9, 8 never 10."""
    clocks = WorkerClocks({})
    for gap, letter, explained in ((10, "R", True), (9, "P", True), (11, "R", False),
                                   (8, "P", False)):
        requests = logged((0, "P"), (gap, letter))
        result = replay(API_LIMITER, requests, clocks_of(requests))
        assert result.explained is explained, (gap, letter)
    assert clocks.horizon(WORKER, 5) > 10**12


def test_a_phase_serves_both_gaps_it_sits_between() -> None:
    """One request's phase is shared by the gap before and after it: two 9 ms acceptances in a
    row would need the middle request both late and early."""
    one = logged((0, "P"), (9, "P"), (20, "P"))
    assert replay(API_LIMITER, one, clocks_of(one)).explained
    two = logged((0, "P"), (9, "P"), (18, "P"))
    result = replay(API_LIMITER, two, clocks_of(two))
    assert not result.explained
    assert [u.request.stamp_ms for u in result.unexplained] == [18]


def test_a_stale_worker_may_decide_after_another_worker_within_its_next_pass() -> None:
    """Worker 8 logged a request at 120 and its next pass at 150: its request may have met
    the zone after worker 7's at 130 (and counted as 0 ms later). With worker 8's next pass
    logged at 125 it was decided before 126, so the swap is not an explanation."""
    limiter = Limiter(10_000, 1000)          # 10 r/s burst 1
    # Two at 0 fill the bucket (1000). In logged order 120 (w8) passes at 1000 - 1200 + 1000,
    # 130 (w7) finds 1700. NGINX says the opposite, which the swap gives: 130 passes at
    # 1000 - 1300 + 1000 = 700, then 120 counts as 0 ms later and finds 1700.
    requests = logged((0, "P", 7), (0, "P", 7), (120, "R", 8), (130, "P", 7))
    explained = replay(limiter, requests, clocks_of(requests, (8, 150)))
    assert explained.explained and explained.reordered
    bounded = replay(limiter, requests, clocks_of(requests, (8, 125)))
    assert not bounded.explained


def test_a_rejection_logged_later_may_be_decided_up_to_its_log_time() -> None:
    """A rejection with $request_time 13 ms (its body read to be discarded) may have met the
    zone after a request that arrived 10 ms after it; one logged at once may not."""
    limiter = Limiter(10_000, 1000)
    late = logged((0, "P"), (0, "P"), (120, "R", 8, 133), (130, "P", 7))
    assert replay(limiter, late, clocks_of(late)).explained
    prompt = logged((0, "P"), (0, "P"), (120, "R", 8, 120), (130, "P", 7))
    assert not replay(limiter, prompt, clocks_of(prompt, (8, 125))).explained


def test_only_acceptance_is_compared_when_asked() -> None:
    """PASSED where the model says DELAYED is a disagreement, unless only acceptance counts."""
    limiter = Limiter(10_000, 5000, 0)       # no nodelay: every excess is delayed
    requests = logged((0, "P"), (0, "P"))
    assert not replay(limiter, requests, clocks_of(requests)).explained
    assert replay(limiter, requests, clocks_of(requests), acceptance_only=True).explained


# --- the check over the access log --------------------------------------------------------


def test_conforming_log_passes() -> None:
    """An NGINX that runs the configured rule matches the model, whatever the clients' timing."""
    arrivals = (simultaneous(9, "10.0.0.9") + spaced(15, 50, "10.0.0.8")
                + [("10.0.0.7", t) for t in (0, 13, 30, 31, 99, 140, 141, 142, 143, 500, 501)])
    result = check(nginx_log(AUTH, arrivals))
    assert result.verdict is Verdict.PASS, result
    values = dict(result.values)
    assert values["clients"] == 3
    assert values["unexplained"] == 0
    assert values["observed_rejected"] == values["model_rejected"] > 0


@pytest.mark.parametrize("machine", [QUIET, LOADED], ids=lambda m: m.name)
def test_a_simulated_nginx_with_two_workers_passes(machine: object) -> None:
    """NGINX's clocks (two workers' caches, the monotonic/wall phase, preemption) never make
    the configured zone fail: a few seeds here, every shape and 100 seeds in the power table."""
    sends = ([Send("h", i * 10.0) for i in range(150)]
             + [Send("h", i * 50.0, "POST", "/api/auth/login") for i in range(15)])
    zones = {r.location: Limiter.of(r) for r in POLICY.rate_limits}
    for seed in range(5):
        log = simulate(zones, sends, seed, machine=machine)  # type: ignore[arg-type]
        for limit in (AUTH, API):
            result = check(log, limit, workers=2)
            assert result.verdict is Verdict.PASS, (seed, limit.zone, result)


def test_an_nginx_one_burst_looser_fails() -> None:
    """The skeptic's cases: an NGINX with burst 1 judged against burst 0 on 150 requests 10 ms
    apart, and burst 6 against 5 on the checklist's auth experiment, fail every seed."""
    api_sends = [Send("h", i * 10.0) for i in range(150)]
    auth_sends = [Send("h", i * 50.0, "POST", "/api/auth/login") for i in range(15)]
    for limit, sends in ((API, api_sends), (AUTH, auth_sends)):
        looser = Limiter.of(limit).with_changes(burst=(limit.burst + 1) * ONE_REQUEST)
        for seed in range(10):
            log = simulate({limit.location: looser}, sends, seed, machine=LOADED)
            result = check(log, limit, workers=2)
            assert result.verdict is Verdict.FAIL, (seed, limit.zone, result)
            assert "no clock alternative gives NGINX's decision" in "\n".join(result.details)


def test_other_burst_fails_with_expected_against_observed() -> None:
    """A running NGINX with burst 10 fails against the configured burst 5 and shows both counts."""
    log = nginx_log(dataclasses.replace(AUTH, burst=10), simultaneous(15))
    result = check(log)
    assert result.verdict is Verdict.FAIL
    assert "NGINX accepted 11, rejected 4" in result.measured
    assert "the model on the logged times 6 / 9" in result.measured
    assert dict(result.values)["unexplained"] == 5
    assert any("NGINX PASSED, the model REJECTED on the logged time" in d
               for d in result.details)


@pytest.mark.parametrize("extra", [1, 2])
def test_every_extra_acceptance_fails(extra: int) -> None:
    """One acceptance more than the bucket allows fails, even right at the threshold; the
    replay carries NGINX's excess on unclamped, so a second one is counted too."""
    log = accept(nginx_log(AUTH, simultaneous(15)), extra)
    result = check(log)
    assert result.verdict is Verdict.FAIL
    assert dict(result.values)["unexplained"] == extra


def test_a_zone_shared_by_every_client_fails_on_the_second_client() -> None:
    """NGINX keying on $server_name: a host burst fills the one bucket, and the second client's
    burst 50 ms later is rejected where the claimed per-address key gives it its own allowance."""
    arrivals = simultaneous(8, "10.0.0.1") + simultaneous(8, "10.0.0.2", at=50)
    shared = nginx_log(AUTH, [("lab.local", t) for _, t in arrivals])
    # The simulated NGINX logs in arrival order; give each line its client's address back.
    ordered = sorted(range(len(shared)),
                     key=lambda i: (shared[i].msec - shared[i].request_time_s, i))
    log = [dataclasses.replace(shared[i], remote_addr=key)
           for i, (key, _) in zip(ordered, arrivals, strict=True)]
    result = check(log)
    assert result.verdict is Verdict.FAIL
    assert any("10.0.0.2 POST /api/auth/login (worker 7): NGINX REJECTED, the model PASSED" in d
               for d in result.details)
    assert "client 10.0.0.2: 8 requests, NGINX accepted 0, the model on the logged times 6" \
        in result.details
    assert "client 10.0.0.1: 8 requests, NGINX accepted 6, the model on the logged times 6" \
        in result.details


def test_missing_limit_req_fails() -> None:
    """A location without limit_req (status '-', nothing rejected) fails and says so."""
    log = [dataclasses.replace(e, limit_req_status="-", status=200)
           for e in nginx_log(dataclasses.replace(AUTH, burst=1000), simultaneous(12))]
    result = check(log)
    assert result.verdict is Verdict.FAIL
    assert any("not evaluated by limit_req" in d for d in result.details)


def test_a_logged_time_one_ms_off_is_explained_two_are_not() -> None:
    """A request the log shows 1 ms early still gets NGINX's decision from the phase between
    its clocks; 2 ms early is more than the two clocks can differ by."""
    base = nginx_log(AUTH, spaced(15, 50))
    one = check(shift(base, 10, -1))
    assert one.verdict is Verdict.PASS, one
    assert any("differ from the model run on the logged times" in d for d in one.details)
    assert check(shift(base, 10, -2)).verdict is Verdict.FAIL


def test_far_from_threshold_is_never_explained() -> None:
    """Rejecting a client whose bucket was empty fails."""
    log = nginx_log(AUTH, simultaneous(7) + spaced(10, 200, "10.0.0.8"))
    victim = next(e for e in log if e.remote_addr == "10.0.0.8" and e.msec > T0 + 1)
    log = [dataclasses.replace(e, status=429, limit_req_status="REJECTED") if e is victim else e
           for e in log]
    result = check(log)
    assert result.verdict is Verdict.FAIL
    assert any("NGINX REJECTED, the model PASSED" in d for d in result.details)


def test_arrival_is_msec_minus_request_time() -> None:
    """Slow accepted answers do not matter: arrival is $msec - $request_time, not $msec."""
    log = nginx_log(AUTH, spaced(15, 50), served_s=0.9)
    assert check(log).verdict is Verdict.PASS


def test_longest_prefix_picks_the_entries() -> None:
    """/api/auth/ requests belong to the auth zone, not to api's /api/ prefix."""
    auth_log = nginx_log(AUTH, simultaneous(10), uri="/api/auth/login")
    api_log = nginx_log(API, spaced(20, 7), uri="/api/messages?x=1")
    result = check(auth_log + api_log, API)
    assert result.verdict is Verdict.PASS, result
    assert dict(result.values)["requests"] == 20
    unaware = check_rate_limit(auth_log + api_log, API, STATUS)
    assert unaware.verdict is Verdict.FAIL


def test_same_millisecond_order_does_not_matter() -> None:
    """Rejections log before acceptances within one millisecond; the check still matches them."""
    log = nginx_log(AUTH, simultaneous(12))
    assert log[0].limit_req_status == "REJECTED"
    assert check(log).verdict is Verdict.PASS


def test_rejection_with_another_status_fails() -> None:
    """A rejection answered 503 while limit_req_status says 429 fails."""
    log = nginx_log(AUTH, simultaneous(8), reject_status=503)
    result = check(log)
    assert result.verdict is Verdict.FAIL
    assert any("answered 503 x2, limit_req_status says 429" in d for d in result.details)
    assert dict(result.values)["unexplained"] == 0


def test_the_run_says_which_one_step_changes_it_rules_out() -> None:
    """15 logins 50 ms apart tell burst 5 from 4 and 6 and 10 r/s from 9 and 11; a burst of
    12 in one millisecond tells only the burst."""
    steady = check(nginx_log(AUTH, spaced(15, 50)))
    assert "this run tells 10 r/s burst 5 from: burst 6, burst 4, 11 r/s, 9 r/s" \
        in steady.details
    assert dict(steady.values)["one_step_told_apart"] == 4
    burst = check(nginx_log(AUTH, simultaneous(12)))
    assert ("this run tells 10 r/s burst 5 from: burst 6, burst 4; not from: 11 r/s, 9 r/s"
            in burst.details)


def test_undecidable_inputs_are_unknown() -> None:
    """No traffic, a limit that never acted, an unlogged key, workers the log does not name:
    unknown, never a pass."""
    assert check_rate_limit([], AUTH, STATUS).verdict is Verdict.UNKNOWN
    calm = check(nginx_log(AUTH, spaced(5, 200)))
    assert calm.verdict is Verdict.UNKNOWN
    assert "the limit never acted" in "\n".join(calm.details)
    by_user = dataclasses.replace(AUTH, key="$http_authorization")
    assert check(nginx_log(AUTH, simultaneous(9)), by_user).verdict is Verdict.UNKNOWN
    anonymous = [dataclasses.replace(e, worker=0) for e in nginx_log(AUTH, simultaneous(9))]
    assert check(anonymous, workers=1).verdict is Verdict.PASS
    unnamed = check(anonymous, workers=2)
    assert unnamed.verdict is Verdict.UNKNOWN and "lack $pid" in unnamed.measured


# --- rejection headers -------------------------------------------------------------------


def test_rejection_headers_pass() -> None:
    """Every 429 with X-RateLimit-Status REJECTED and Retry-After passes, in either sample form."""
    samples = [(200, {"X-RateLimit-Status": "PASSED"}),
               (429, {"x-ratelimit-status": "REJECTED", "Retry-After": "1"}),
               HeaderSample("http://lab.local/api/auth/login", 429,
                            (("X-RateLimit-Status", "REJECTED"), ("retry-after", "1")))]
    assert check_rate_limit_headers(samples, STATUS).verdict is Verdict.PASS


def test_rejection_headers_missing_fail() -> None:
    """A 429 without Retry-After, or a 200 claiming REJECTED, fails and says which."""
    result = check_rate_limit_headers(
        [(429, {"X-RateLimit-Status": "REJECTED"}), (200, {"X-RateLimit-Status": "REJECTED"})],
        STATUS)
    assert result.verdict is Verdict.FAIL
    assert "429 answer #1: Retry-After missing" in result.details
    assert "1 answer(s) with status 200 say X-RateLimit-Status: REJECTED" in result.details


def test_rejection_headers_without_rejection_unknown() -> None:
    """Samples without any 429 cannot show the rejection headers."""
    assert check_rate_limit_headers([(200, {})], STATUS).verdict is Verdict.UNKNOWN

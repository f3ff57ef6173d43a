"""The limit_req model (docs/semantics.md §2) and the checks that compare NGINX with it."""

from __future__ import annotations

import dataclasses

import pytest

from lab.checks.base import Verdict
from lab.checks.rate_limit import (
    LeakyBucket,
    LimitOutcome,
    check_rate_limit,
    check_rate_limit_headers,
    model_outcomes,
    predict_checklist_experiments,
    predict_schedule,
    rate_milli,
)
from lab.config import LabConfig
from lab.expectations import RateLimitRule
from lab.history import AccessLogEntry, HeaderSample
from lab.topology.nginx_conf import parse_nginx_policy
from lab.topology.render import render_nginx

pytestmark = pytest.mark.covers("check:rate-limit", "check:rate-limit-headers")

T0 = 1_700_000_000.0
POLICY = parse_nginx_policy(render_nginx(LabConfig()))
AUTH = POLICY.rate_limit_for("/api/auth/")[0]
API = POLICY.rate_limit_for("/api/")[0]
STATUS = POLICY.rate_limit_status
P, D, R = LimitOutcome.PASSED, LimitOutcome.DELAYED, LimitOutcome.REJECTED


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
    """The access log of a simulated NGINX running ``running``, in completion order."""
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
            limit_req_status=decision.outcome.value, remote_addr=key))
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


# --- the check over the access log --------------------------------------------------------


def test_conforming_log_passes() -> None:
    """An NGINX that runs the configured rule matches the model, whatever the clients' timing."""
    arrivals = (simultaneous(9, "10.0.0.9") + spaced(15, 50, "10.0.0.8")
                + [("10.0.0.7", t) for t in (0, 13, 30, 31, 99, 140, 141, 142, 143, 500, 501)])
    result = check_rate_limit(nginx_log(AUTH, arrivals), AUTH, STATUS, rules=POLICY.rate_limits)
    assert result.verdict is Verdict.PASS, result
    values = dict(result.values)
    assert values["clients"] == 3
    assert values["mismatches"] == 0
    assert values["observed_rejected"] == values["model_rejected"] > 0


def test_other_burst_fails_with_expected_against_observed() -> None:
    """A running NGINX with burst 10 fails against the configured burst 5 and shows both counts."""
    log = nginx_log(dataclasses.replace(AUTH, burst=10), simultaneous(15))
    result = check_rate_limit(log, AUTH, STATUS, rules=POLICY.rate_limits)
    assert result.verdict is Verdict.FAIL
    assert "NGINX accepted 11, rejected 4" in result.measured
    assert "the model (free-running) 6 / 9" in result.measured
    assert any("expected REJECTED, NGINX PASSED" in d for d in result.details)


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
    result = check_rate_limit(log, AUTH, STATUS, rules=POLICY.rate_limits)
    assert result.verdict is Verdict.FAIL
    assert any("10.0.0.2 POST /api/auth/login: expected PASSED, NGINX REJECTED" in d
               for d in result.details)
    assert "client 10.0.0.2: 8 requests, NGINX accepted 0, the model 6" in result.details
    assert "client 10.0.0.1: 8 requests, NGINX accepted 6, the model 6" in result.details


def test_missing_limit_req_fails() -> None:
    """A location without limit_req (status '-', nothing rejected) fails and says so."""
    log = [dataclasses.replace(e, limit_req_status="-", status=200)
           for e in nginx_log(dataclasses.replace(AUTH, burst=1000), simultaneous(12))]
    result = check_rate_limit(log, AUTH, STATUS, rules=POLICY.rate_limits)
    assert result.verdict is Verdict.FAIL
    assert any("not evaluated by limit_req" in d for d in result.details)
    assert dict(result.values)["model_rejected"] == 6


def test_one_near_threshold_flip_is_tolerated() -> None:
    """A request whose logged time is 1 ms off flips at the burst boundary and is tolerated."""
    log = shift(nginx_log(AUTH, spaced(15, 50)), 10, -1)
    result = check_rate_limit(log, AUTH, STATUS)
    assert result.verdict is Verdict.PASS, result
    assert dict(result.values)["tolerated"] == 1
    assert any("+0.499 s" in d and "expected REJECTED, NGINX PASSED" in d for d in result.details)


def test_two_clock_jitter_flips_in_one_run_pass() -> None:
    """Two flips that a 1 ms clock shift explains are jitter, even both one way (seen in CI)."""
    log = shift(shift(nginx_log(API, spaced(30, 10), uri="/api/x"), 5, -1), 20, -1)
    result = check_rate_limit(log, API, STATUS)
    assert result.verdict is Verdict.PASS, result
    assert dict(result.values)["tolerated"] == 2


def test_tolerance_is_per_run() -> None:
    """One flip in each of two runs (a pause drains the bucket between them) passes."""
    arrivals = spaced(15, 10) + [("10.0.0.9", 2000 + i * 10) for i in range(15)]
    log = shift(shift(nginx_log(API, arrivals, uri="/api/x"), 5, -1), 20, -1)
    result = check_rate_limit(log, API, STATUS)
    assert result.verdict is Verdict.PASS, result
    assert dict(result.values)["runs"] == 2


def test_far_from_threshold_is_never_tolerated() -> None:
    """Rejecting a client whose bucket was empty fails, however large the tolerance."""
    log = nginx_log(AUTH, simultaneous(7) + spaced(10, 200, "10.0.0.8"))
    victim = next(e for e in log if e.remote_addr == "10.0.0.8" and e.msec > T0 + 1)
    log = [dataclasses.replace(e, status=429, limit_req_status="REJECTED") if e is victim else e
           for e in log]
    result = check_rate_limit(log, AUTH, STATUS, tolerance_requests=5)
    assert result.verdict is Verdict.FAIL
    assert dict(result.values)["tolerated"] == 0
    assert any("expected PASSED, NGINX REJECTED" in d for d in result.details)


def test_repeated_near_flips_exhaust_the_tolerance() -> None:
    """Each extra acceptance is judged on the bucket NGINX must have had: near, but counted."""
    log = accept(nginx_log(AUTH, simultaneous(15)), 2)
    assert check_rate_limit(log, AUTH, STATUS).verdict is Verdict.FAIL
    assert check_rate_limit(log, AUTH, STATUS, tolerance_requests=2).verdict is Verdict.PASS


def test_limits_are_per_client() -> None:
    """An NGINX that shares one bucket between clients fails: the second client is rejected."""
    arrivals = simultaneous(6, "10.0.0.8") + simultaneous(6, "10.0.0.9", at=1)
    shared = nginx_log(dataclasses.replace(AUTH, key="$server_name"),
                       [("one", t) for _, t in arrivals])
    log = [dataclasses.replace(e, remote_addr=key)
           for e, (key, _) in zip(sorted(shared, key=lambda e: e.msec - e.request_time_s),
                                  arrivals, strict=True)]
    result = check_rate_limit(log, AUTH, STATUS)
    assert result.verdict is Verdict.FAIL
    assert any("client 10.0.0.9: 6 requests, NGINX accepted 0" in d for d in result.details)


def test_arrival_is_msec_minus_request_time() -> None:
    """Slow accepted answers do not matter: arrival is $msec - $request_time, not $msec."""
    log = nginx_log(AUTH, spaced(15, 50), served_s=0.9)
    assert check_rate_limit(log, AUTH, STATUS).verdict is Verdict.PASS


def test_longest_prefix_picks_the_entries() -> None:
    """/api/auth/ requests belong to the auth zone, not to api's /api/ prefix."""
    auth_log = nginx_log(AUTH, simultaneous(10), uri="/api/auth/login")
    api_log = nginx_log(API, spaced(20, 7), uri="/api/messages?x=1")
    result = check_rate_limit(auth_log + api_log, API, STATUS, rules=POLICY.rate_limits)
    assert result.verdict is Verdict.PASS, result
    assert dict(result.values)["requests"] == 20
    unaware = check_rate_limit(auth_log + api_log, API, STATUS)
    assert unaware.verdict is Verdict.FAIL


def test_same_millisecond_order_does_not_matter() -> None:
    """Rejections log before acceptances within one millisecond; the check still matches them."""
    log = nginx_log(AUTH, simultaneous(12))
    assert log[0].limit_req_status == "REJECTED"
    assert check_rate_limit(log, AUTH, STATUS).verdict is Verdict.PASS


def test_rejection_with_another_status_fails() -> None:
    """A rejection answered 503 while limit_req_status says 429 fails."""
    log = nginx_log(AUTH, simultaneous(8), reject_status=503)
    result = check_rate_limit(log, AUTH, STATUS)
    assert result.verdict is Verdict.FAIL
    assert any("answered 503 x2, limit_req_status says 429" in d for d in result.details)
    assert dict(result.values)["mismatches"] == 0


def test_undecidable_inputs_are_unknown() -> None:
    """No traffic, traffic under the limit, an unlogged key, or a crash: unknown."""
    assert check_rate_limit([], AUTH, STATUS).verdict is Verdict.UNKNOWN
    calm = nginx_log(AUTH, spaced(5, 200))
    assert check_rate_limit(calm, AUTH, STATUS).verdict is Verdict.UNKNOWN
    by_user = dataclasses.replace(AUTH, key="$http_authorization")
    assert check_rate_limit(nginx_log(AUTH, simultaneous(9)), by_user, STATUS).verdict \
        is Verdict.UNKNOWN
    assert check_rate_limit(None, AUTH, STATUS).verdict is Verdict.UNKNOWN  # type: ignore[arg-type]


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

"""Security: the HTTPS certificate and the headers every answer must carry.

Conformance reads what nginx.conf adds; the objectives (``security_headers``,
``rate_limit_headers``, ``hsts_max_age``) are the checklist's own list, so a configuration
that never adds Content-Security-Policy conforms to itself and still fails.

TLS: the certificate NGINX serves names the lab's host (subjectAltName; clients ignore the
CN when a SAN is present), is signed by the lab's CA rather than by itself, and is within its
validity period; every HTTPS answer carries ``Strict-Transport-Security`` with the configured
max-age.

Headers: NGINX adds a header to 4xx and 5xx answers (429 and its own 502/504 included) only
with ``always``; without it the header silently disappears from exactly the answers an
attacker can provoke. The required set is read from the parsed nginx.conf
(``required_headers``), so a configuration that drops one fails and names it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence

from lab.checks.base import (
    CheckResult,
    ObjectiveResult,
    Prediction,
    Verdict,
    combine,
)
from lab.checks.rate_limit import HEADERS as RATE_LIMIT_HEADERS
from lab.checks.registry import (
    CheckContext,
    CheckDef,
    NoParams,
    ObjectiveHook,
    attach_objective,
    measured_objective,
    register,
)
from lab.expectations import NginxPolicy
from lab.history import HeaderSample, TlsObservation
from lab.objectives import ANY_VALUE, Objectives, threshold_text

__all__ = [
    "HeaderSample",
    "TlsObservation",
    "check_security_headers",
    "check_tls",
    "hsts_max_age",
    "required_headers",
]

TLS = "tls"
HEADERS = "security-headers"
HSTS = "Strict-Transport-Security"
_MAX_AGE = re.compile(r"(?:^|;)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:;|$)", re.IGNORECASE)
_SHOWN = 10


# --- expectations from the parsed nginx.conf ------------------------------------------------


def required_headers(policy: NginxPolicy, *, tls: bool | None = None) -> dict[str, str | None]:
    """Headers every answer of the chosen servers must carry: those added ``always`` with a
    fixed value.

    ``tls`` None: the headers common to every server (same value); True/False: those of the
    first HTTPS / HTTP server. A value with a variable (``$limit_req_status``) is skipped:
    NGINX omits a header whose value is empty, so it is not on every answer.
    """
    # A server that only redirects plain HTTP answers nothing but the redirect: the clients
    # follow it, so its headers are not the site's (a checklist site's port 80).
    serving = [s for s in policy.servers if not (s.http_redirect and not s.tls)] or \
        list(policy.servers)
    servers = [s for s in serving if tls is None or s.tls == tls]
    if tls is not None:
        servers = servers[:1]
    if not servers:
        return {}
    per_server: list[dict[str, str]] = []
    for server in servers:
        always = {name.lower() for name in server.always_headers}
        per_server.append({name: value for name, value in server.headers
                           if name.lower() in always and "$" not in value})
    common = per_server[0]
    for other in per_server[1:]:
        lowered = {k.lower(): v for k, v in other.items()}
        common = {k: v for k, v in common.items() if lowered.get(k.lower()) == v}
    return dict(common)


def hsts_max_age(policy: NginxPolicy) -> int | None:
    """The max-age the HTTPS server's Strict-Transport-Security header sets, None without one."""
    for server in policy.servers:
        if not server.tls:
            continue
        for name, value in server.headers:
            if name.lower() == HSTS.lower() and (match := _MAX_AGE.search(value)):
                return int(match.group(1))
    return None


def _name_matches(pattern: str, host: str) -> bool:
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        # A wildcard covers exactly one leftmost label (RFC 6125).
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == host


def _statuses(samples: Sequence[HeaderSample]) -> str:
    counts = Counter(s.status for s in samples)
    return ", ".join(f"{status} x{n}" for status, n in sorted(counts.items()))


# --- the checks ------------------------------------------------------------------------------


def check_tls(obs: TlsObservation | None, server_name: str, hsts_samples: Sequence[HeaderSample],
              *, hsts_max_age_s: int | None) -> CheckResult:
    """Whether HTTPS serves a lab-CA certificate for ``server_name`` and HSTS on every HTTPS answer.

    ``hsts_max_age_s`` comes from the configuration (``hsts_max_age``); None means none is
    configured, and then none is required.
    """
    expected = (f"certificate for {server_name} signed by the lab CA, not self-signed, valid now"
                + (f"; every HTTPS answer has {HSTS} max-age={hsts_max_age_s}"
                   if hsts_max_age_s is not None else ""))
    derivation = (f"server_name {server_name} (nginx.conf); the lab's CA signs the server "
                  "certificate (lab.topology.tls); "
                  + (f"add_header {HSTS} max-age={hsts_max_age_s} always on the HTTPS server"
                     if hsts_max_age_s is not None else "no HSTS header configured"))
    if obs is None:
        return CheckResult(TLS, Verdict.UNKNOWN, "no TLS handshake was observed", expected,
                           derivation)
    verdicts: list[Verdict] = []
    details: list[str] = []
    problems: list[str] = []
    if not any(_name_matches(name, server_name) for name in obs.san):
        problems.append(f"{server_name} is not among the certificate's names "
                        f"({', '.join(obs.san) or 'no subjectAltName'})")
    if obs.self_signed:
        problems.append(f"the certificate is self-signed ({obs.subject})")
    if not obs.verified_with_lab_ca:
        problems.append(f"the certificate is not signed by the lab's CA (issuer {obs.issuer})")
    if obs.observed_at is None:
        details.append("no observation time: the validity period was not checked")
    elif not obs.not_before_epoch <= obs.observed_at <= obs.not_after_epoch:
        problems.append(f"outside its validity period at the handshake (valid "
                        f"{obs.not_before_epoch:.0f}..{obs.not_after_epoch:.0f}, observed "
                        f"{obs.observed_at:.0f})")
    verdicts.append(Verdict.FAIL if problems else Verdict.PASS)
    details = problems + details

    https = [s for s in hsts_samples if s.url.lower().startswith("https://")]
    values: list[tuple[str, float]] = [("https_samples", float(len(https)))]
    if obs.observed_at is not None:
        values.append(("days_left", (obs.not_after_epoch - obs.observed_at) / 86400))
    hsts_text = ""
    if hsts_max_age_s is not None:
        lacking = [s for s in https if s.header(HSTS) is None]
        wrong = [s for s in https if (v := s.header(HSTS)) is not None
                 and ((m := _MAX_AGE.search(v)) is None or int(m.group(1)) != hsts_max_age_s)]
        values += [("hsts_missing", float(len(lacking))), ("hsts_wrong", float(len(wrong)))]
        if not https:
            verdicts.append(Verdict.UNKNOWN)
            details.append("no HTTPS answer sampled: HSTS not checked")
        elif lacking or wrong:
            verdicts.append(Verdict.FAIL)
            if lacking:
                details.append(f"{HSTS} missing on {len(lacking)} HTTPS answer(s) "
                               f"(status {_statuses(lacking)}), e.g. {lacking[0].url}")
            if wrong:
                details.append(f"{HSTS} {wrong[0].header(HSTS)!r} on {len(wrong)} answer(s) "
                               f"(status {_statuses(wrong)}), expected max-age={hsts_max_age_s}")
        else:
            verdicts.append(Verdict.PASS)
        hsts_text = f"; HSTS on {len(https) - len(lacking) - len(wrong)}/{len(https)} HTTPS answers"
    measured = (f"certificate {obs.subject} for {', '.join(obs.san) or '-'}, issued by "
                f"{obs.issuer}{'' if obs.verified_with_lab_ca else ' (not the lab CA)'}"
                f"{', self-signed' if obs.self_signed else ''}{hsts_text}")
    return CheckResult(TLS, combine(verdicts), measured, expected, derivation, tuple(details),
                       tuple(values))


def _values(sample: HeaderSample, name: str) -> list[str]:
    wanted = name.lower()
    return [value for key, value in sample.headers if key.lower() == wanted]


def check_security_headers(samples: Sequence[HeaderSample], required: Mapping[str, str | None],
                           *, require_error_samples: bool = True) -> CheckResult:
    """Whether every sampled answer carries each required header (with its value, when one is
    given).

    With ``require_error_samples`` the verdict is unknown unless some sampled answer was 4xx
    or 5xx: only those show whether the headers are added ``always``.
    """
    names = ", ".join(f"{k}: {v}" if v is not None else k for k, v in required.items())
    expected = f"every answer (4xx, 5xx, 429 included) carries {names or 'nothing'}"
    derivation = ("add_header ... always at server level of nginx.conf (required_headers); "
                  "without 'always' NGINX drops a header from 4xx/5xx answers")
    if not required:
        return CheckResult(HEADERS, Verdict.UNKNOWN, "no required header given", expected,
                           derivation)
    if not samples:
        return CheckResult(HEADERS, Verdict.UNKNOWN, "no answer sampled", expected, derivation)
    details: list[str] = []
    failing = 0
    for name, value in required.items():
        lacking = [s for s in samples if not _values(s, name)]
        wrong = [s for s in samples if (found := _values(s, name))
                 and value is not None and any(v.strip() != value for v in found)]
        if lacking:
            failing += 1
            details.append(f"{name} missing on {len(lacking)} of {len(samples)} answers "
                           f"(status {_statuses(lacking)}), e.g. {lacking[0].url}")
        if wrong:
            failing += 1
            details.append(f"{name} is {', '.join(map(repr, _values(wrong[0], name)))} on "
                           f"{len(wrong)} answer(s) (status {_statuses(wrong)}), expected "
                           f"{value!r}")
    errors = [s for s in samples if s.status >= 400]
    values = (("samples", float(len(samples))), ("error_samples", float(len(errors))),
              ("problems", float(failing)))
    measured = (f"{len(samples)} answers sampled (status {_statuses(samples)}); "
                f"{failing} header problem(s)")
    if failing:
        verdict = Verdict.FAIL
    elif require_error_samples and not errors:
        verdict = Verdict.UNKNOWN
        details.append("no 4xx/5xx answer sampled: 'always' is untested")
    else:
        verdict = Verdict.PASS
    return CheckResult(HEADERS, verdict, measured, expected, derivation, tuple(details[:_SHOWN]),
                       values)


# -- registration -------------------------------------------------------------------------------


def _judge_tls(ctx: CheckContext, params: NoParams) -> CheckResult:
    history = ctx.history
    https = [sample for sample in history.header_samples if sample.url.startswith("https://")]
    return check_tls(history.tls[-1] if history.tls else None, ctx.expectations.server_name, https,
                     hsts_max_age_s=hsts_max_age(ctx.expectations.nginx))


def _hsts_objective(result: CheckResult, objectives: Objectives, ctx: CheckContext,
                    params: NoParams) -> ObjectiveResult:
    ages = []
    missing = 0
    for sample in ctx.history.header_samples:
        if not sample.url.lower().startswith("https://"):
            continue
        value = sample.header(HSTS)
        match = _MAX_AGE.search(value) if value is not None else None
        if match is None:
            missing += 1
        else:
            ages.append(int(match.group(1)))
    how = f"the smallest {HSTS} max-age on any sampled HTTPS answer (an answer without it: 0)"
    if not ages and not missing:
        return measured_objective("hsts_max_age", objectives, value=None, passed=None,
                                  measured="no HTTPS answer sampled", derivation=how)
    smallest = 0 if missing else min(ages)
    measured = (f"missing on {missing} HTTPS answer(s)" if missing
                else f"max-age {smallest} on every HTTPS answer")
    return measured_objective("hsts_max_age", objectives, value=float(smallest),
                              passed=smallest >= objectives.hsts_max_age, measured=measured,
                              derivation=how)


def _hsts_predict(ctx: CheckContext, params: NoParams, objectives: Objectives) -> Prediction:
    configured = hsts_max_age(ctx.expectations.nginx)
    threshold = threshold_text(objectives, "hsts_max_age")
    if configured is None:
        return Prediction("hsts_max_age", TLS, threshold, "no HSTS header", False,
                          f"no add_header {HSTS} on the HTTPS server")
    return Prediction("hsts_max_age", TLS, threshold, f"max-age {configured}",
                      configured >= objectives.hsts_max_age,
                      f"add_header {HSTS} \"max-age={configured}\" on the HTTPS server")


register(CheckDef(
    name=TLS, params=NoParams, judge=_judge_tls,
    summary="HTTPS serves a lab-CA certificate for the host name, and HSTS on every HTTPS answer",
    objectives=(ObjectiveHook("hsts_max_age", _hsts_objective, _hsts_predict),)))


def _judge_headers(ctx: CheckContext, params: NoParams) -> CheckResult:
    return check_security_headers(ctx.history.header_samples,
                                  required_headers(ctx.expectations.nginx))


def header_problems(samples: Sequence[HeaderSample],
                    wanted: Mapping[str, str]) -> list[tuple[str, list[HeaderSample], str]]:
    """Per wanted header (value ``*``: any non-empty one), the samples without it or with
    another value, and what they had. Values compare case-insensitively (the checklist's are
    tokens: SAMEORIGIN, nosniff)."""
    out = []
    for name, value in wanted.items():
        lacking = [s for s in samples if not any(v.strip() for v in _values(s, name))]
        if lacking:
            out.append((name, lacking, "missing"))
        if value == ANY_VALUE:
            continue
        wrong = [s for s in samples if (found := _values(s, name))
                 and any(v.strip().lower() != value.strip().lower() for v in found)]
        if wrong:
            out.append((name, wrong, f"{_values(wrong[0], name)[0]!r}, wanted {value!r}"))
    return out


def _problem_lines(problems: list[tuple[str, list[HeaderSample], str]], total: int) -> str:
    return "; ".join(f"{name} {what} on {len(bad)} of {total} answers (status "
                     f"{_statuses(bad)})" for name, bad, what in problems)


def _security_objective(result: CheckResult, objectives: Objectives, ctx: CheckContext,
                        params: NoParams) -> ObjectiveResult:
    samples = ctx.history.header_samples
    wanted = objectives.security_headers
    how = ("every sampled answer (4xx, 5xx and 429 included) against the objective's headers; "
           "only error answers show whether a header is added 'always'")
    if not wanted:
        return measured_objective("security_headers", objectives, value=None, passed=None,
                                  measured="no header required", derivation=how)
    if not samples:
        return measured_objective("security_headers", objectives, value=None, passed=None,
                                  measured="no answer sampled", derivation=how)
    problems = header_problems(samples, wanted)
    if problems:
        return measured_objective("security_headers", objectives, value=float(len(problems)),
                                  passed=False, measured=_problem_lines(problems, len(samples)),
                                  derivation=how)
    if not any(s.status >= 400 for s in samples):
        return measured_objective("security_headers", objectives, value=None, passed=None,
                                  measured=f"every one of {len(samples)} answers had them, but "
                                  "none was 4xx/5xx: 'always' is untested", derivation=how)
    return measured_objective("security_headers", objectives, value=0.0, passed=True,
                              measured=f"all on every one of {len(samples)} answers (status "
                              f"{_statuses(samples)})", derivation=how)


def _security_predict(ctx: CheckContext, params: NoParams,
                      objectives: Objectives) -> Prediction | None:
    wanted = objectives.security_headers
    if not wanted:
        return None
    servers = ctx.expectations.nginx.servers
    missing: list[str] = []
    for name, value in wanted.items():
        for index, server in enumerate(servers):
            where = f"server {index + 1} ({', '.join(server.server_names) or 'no name'})"
            found = [v for k, v in server.headers if k.lower() == name.lower()]
            always = {a.lower() for a in server.always_headers}
            if not found:
                missing.append(f"{where}: no add_header {name}")
            elif name.lower() not in always:
                missing.append(f"{where}: {name} without 'always' (dropped from 4xx/5xx)")
            elif value != ANY_VALUE and found[0].strip().lower() != value.lower():
                missing.append(f"{where}: {name} {found[0]!r}, wanted {value!r}")
    return Prediction("security_headers", HEADERS, threshold_text(objectives, "security_headers"),
                      "all added always" if not missing else f"{len(missing)} missing or wrong",
                      not missing,
                      "; ".join(missing) or "server-level add_header ... always on every server "
                      "block (a location's own add_header would replace them there)")


def _rejections(ctx: CheckContext) -> tuple[int, list[HeaderSample]]:
    status = ctx.expectations.nginx.rate_limit_status
    return status, [s for s in ctx.history.header_samples if s.status == status]


def _rate_headers_objective(result: CheckResult, objectives: Objectives, ctx: CheckContext,
                            params: NoParams) -> ObjectiveResult:
    status, rejected = _rejections(ctx)
    wanted = objectives.rate_limit_headers
    how = (f"every sampled rate-limited answer (limit_req_status {status}) against the "
           "objective's headers")
    if not wanted:
        return measured_objective("rate_limit_headers", objectives, value=None, passed=None,
                                  measured="no header required", derivation=how)
    if not rejected:
        return measured_objective("rate_limit_headers", objectives, value=None, passed=None,
                                  measured=f"no {status} answer sampled", derivation=how)
    problems = header_problems(rejected, dict.fromkeys(wanted, ANY_VALUE))
    if status != 429:
        problems.insert(0, (f"status {status}", rejected, "instead of 429"))
    return measured_objective("rate_limit_headers", objectives, value=float(len(problems)),
                              passed=not problems,
                              measured=(_problem_lines(problems, len(rejected)) if problems else
                                        f"all on every one of {len(rejected)} {status} answers"),
                              derivation=how)


def _rate_headers_predict(ctx: CheckContext, params: NoParams,
                          objectives: Objectives) -> Prediction | None:
    wanted = objectives.rate_limit_headers
    if not wanted:
        return None
    nginx = ctx.expectations.nginx
    missing = [f"limit_req_status {nginx.rate_limit_status}, not 429"] \
        if nginx.rate_limit_status != 429 else []
    for index, server in enumerate(nginx.servers):
        always = {a.lower() for a in server.always_headers}
        names = {k.lower() for k, _ in server.headers}
        missing += [f"server {index + 1}: no add_header {name} ... always" for name in wanted
                    if name.lower() not in names or name.lower() not in always]
    return Prediction("rate_limit_headers", HEADERS,
                      threshold_text(objectives, "rate_limit_headers"),
                      "on every rejection" if not missing else f"{len(missing)} missing",
                      not missing,
                      "; ".join(missing) or "add_header ... always for each on every server "
                      "block (a value that is empty on other answers is sent only on 429)")


register(CheckDef(
    name=HEADERS, params=NoParams, judge=_judge_headers,
    summary="every answer, 4xx and 5xx included, carries the security headers nginx.conf adds",
    objectives=(ObjectiveHook("security_headers", _security_objective, _security_predict),
                ObjectiveHook("rate_limit_headers", _rate_headers_objective,
                              _rate_headers_predict))))
# The rate-limit headers are judged where rejections are provoked on purpose, too.
attach_objective(RATE_LIMIT_HEADERS, ObjectiveHook("rate_limit_headers",
                                                     _rate_headers_objective,
                                                     _rate_headers_predict))

"""The TLS and security-header checks, with expectations read from the rendered nginx.conf."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lab.checks.base import Verdict
from lab.checks.security import (
    HeaderSample,
    check_security_headers,
    check_tls,
    hsts_max_age,
    required_headers,
)
from lab.config import LabConfig
from lab.topology.nginx_policy import parse_nginx_policy
from lab.topology.render import render_nginx
from lab.topology.tls import make_tls
from lab.workload.security_probe import observe_certificate

pytestmark = pytest.mark.covers("check:tls", "check:security-headers")

CONFIG = LabConfig()
POLICY = parse_nginx_policy(render_nginx(CONFIG))
HOST = CONFIG.nginx.server_name
MAX_AGE = hsts_max_age(POLICY)
CSP = "default-src 'self'; frame-ancestors 'self'"
LAB_TLS = make_tls("unit", HOST)
NOW = dt.datetime.now(dt.UTC).timestamp()


def answer(status: int, url: str = f"https://{HOST}/api/items", *, drop: str = "",
           **changes: str) -> HeaderSample:
    """An answer carrying the lab's headers (one dropped or changed on request)."""
    headers = {"X-Frame-Options": "SAMEORIGIN", "X-Content-Type-Options": "nosniff",
               "Content-Security-Policy": CSP,
               "Strict-Transport-Security": f"max-age={MAX_AGE}; includeSubDomains"}
    headers.update({k.replace("_", "-"): v for k, v in changes.items()})
    headers.pop(drop, None)
    if url.startswith("http://"):
        headers.pop("Strict-Transport-Security", None)
    return HeaderSample(url, status, tuple(headers.items()))


MIXED = [answer(s) for s in (200, 201, 404, 429, 502)] + [answer(200, f"http://{HOST}/")]


def self_signed(name: str) -> bytes:
    """A self-signed certificate for ``name``, PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


# --- expectations from nginx.conf --------------------------------------------------------


def test_required_headers_from_rendered_conf() -> None:
    """Every server's fixed 'always' headers are required; variable-valued ones are not."""
    assert required_headers(POLICY) == {"X-Frame-Options": "SAMEORIGIN",
                                        "X-Content-Type-Options": "nosniff",
                                        "Content-Security-Policy": CSP}
    https = required_headers(POLICY, tls=True)
    assert https["Strict-Transport-Security"] == f"max-age={MAX_AGE}; includeSubDomains"
    assert "X-RateLimit-Status" not in https and "Retry-After" not in https
    assert MAX_AGE == CONFIG.nginx.hsts_max_age_s == 31_536_000


def test_config_without_security_headers() -> None:
    """With security_headers off and no HSTS, nothing fixed is required and no max-age is set."""
    bare = LabConfig().with_overrides("nginx", security_headers=False, hsts_max_age_s=0)
    policy = parse_nginx_policy(render_nginx(bare))
    assert required_headers(policy) == {}
    assert hsts_max_age(policy) is None


# --- TLS ---------------------------------------------------------------------------------


def test_lab_certificate_passes() -> None:
    """The lab CA's certificate for the server name, with HSTS on every HTTPS answer, passes."""
    obs = observe_certificate(HOST, LAB_TLS.cert_pem, LAB_TLS.ca_pem, NOW)
    assert obs.verified_with_lab_ca and not obs.self_signed
    assert HOST in obs.san and "127.0.0.1" in obs.san
    result = check_tls(obs, HOST, MIXED, hsts_max_age_s=MAX_AGE)
    assert result.verdict is Verdict.PASS, result
    assert dict(result.values)["https_samples"] == 5


def test_der_certificate_is_read() -> None:
    """The certificate as a TLS client receives it (DER) reads the same as PEM."""
    der = x509.load_pem_x509_certificate(LAB_TLS.cert_pem).public_bytes(serialization.Encoding.DER)
    assert observe_certificate(HOST, der, LAB_TLS.ca_pem, NOW) == \
        observe_certificate(HOST, LAB_TLS.cert_pem, LAB_TLS.ca_pem, NOW)


def test_self_signed_fails() -> None:
    """A self-signed certificate fails: self-signed and not from the lab's CA."""
    obs = observe_certificate(HOST, self_signed(HOST), LAB_TLS.ca_pem, NOW)
    result = check_tls(obs, HOST, MIXED, hsts_max_age_s=MAX_AGE)
    assert result.verdict is Verdict.FAIL
    assert any("self-signed" in d for d in result.details)
    assert any("not signed by the lab's CA" in d for d in result.details)


def test_other_ca_fails() -> None:
    """A certificate from another lab's CA with the same names fails the signature check."""
    other = make_tls("other", HOST)
    obs = observe_certificate(HOST, other.cert_pem, LAB_TLS.ca_pem, NOW)
    assert not obs.verified_with_lab_ca
    assert check_tls(obs, HOST, MIXED, hsts_max_age_s=MAX_AGE).verdict is Verdict.FAIL


def test_wrong_name_fails() -> None:
    """A certificate that does not name the server fails and names what it covers."""
    obs = observe_certificate(HOST, LAB_TLS.cert_pem, LAB_TLS.ca_pem, NOW)
    result = check_tls(obs, "shop.example", MIXED, hsts_max_age_s=MAX_AGE)
    assert result.verdict is Verdict.FAIL
    assert any(d.startswith("shop.example is not among the certificate's names") for d in
               result.details)


def test_wildcard_name_matches_one_label() -> None:
    """*.lab.local covers api.lab.local but neither lab.local nor a.b.lab.local."""
    obs = dataclasses.replace(observe_certificate(HOST, LAB_TLS.cert_pem, LAB_TLS.ca_pem, NOW),
                              san=("*.lab.local",))
    verdicts = {name: check_tls(obs, name, MIXED, hsts_max_age_s=MAX_AGE).verdict
                for name in ("api.lab.local", "lab.local", "a.b.lab.local")}
    assert verdicts == {"api.lab.local": Verdict.PASS, "lab.local": Verdict.FAIL,
                        "a.b.lab.local": Verdict.FAIL}


def test_expired_fails() -> None:
    """A handshake after the certificate's end of validity fails."""
    obs = observe_certificate(HOST, LAB_TLS.cert_pem, LAB_TLS.ca_pem, NOW + 60 * 86400)
    result = check_tls(obs, HOST, MIXED, hsts_max_age_s=MAX_AGE)
    assert result.verdict is Verdict.FAIL
    assert any("outside its validity period" in d for d in result.details)


def test_hsts_missing_or_short_fails() -> None:
    """An HTTPS error answer without HSTS, or with another max-age, fails and names the status."""
    obs = observe_certificate(HOST, LAB_TLS.cert_pem, LAB_TLS.ca_pem, NOW)
    missing = [*MIXED, answer(502, drop="Strict-Transport-Security")]
    result = check_tls(obs, HOST, missing, hsts_max_age_s=MAX_AGE)
    assert result.verdict is Verdict.FAIL
    assert any("missing on 1 HTTPS answer(s) (status 502 x1)" in d for d in result.details)
    short = [*MIXED, answer(429, Strict_Transport_Security="max-age=300")]
    assert check_tls(obs, HOST, short, hsts_max_age_s=MAX_AGE).verdict is Verdict.FAIL


def test_tls_without_evidence_is_unknown() -> None:
    """No handshake, or no HTTPS answer to read HSTS from: unknown."""
    assert check_tls(None, HOST, MIXED, hsts_max_age_s=MAX_AGE).verdict is Verdict.UNKNOWN
    obs = observe_certificate(HOST, LAB_TLS.cert_pem, LAB_TLS.ca_pem, NOW)
    http_only = [answer(200, f"http://{HOST}/")]
    assert check_tls(obs, HOST, http_only, hsts_max_age_s=MAX_AGE).verdict is Verdict.UNKNOWN
    assert check_tls(obs, HOST, http_only, hsts_max_age_s=None).verdict is Verdict.PASS


# --- security headers --------------------------------------------------------------------


def test_headers_on_every_answer_pass() -> None:
    """2xx, 4xx, 429 and 502 answers all carrying the headers pass."""
    result = check_security_headers(MIXED, required_headers(POLICY))
    assert result.verdict is Verdict.PASS, result
    assert dict(result.values)["error_samples"] == 3


def test_missing_header_is_named_with_statuses() -> None:
    """A header missing from error answers (no 'always') fails, naming it and the statuses."""
    broken = [answer(200), answer(404, drop="X-Frame-Options"),
              answer(429, drop="X-Frame-Options"), answer(502, drop="X-Frame-Options")]
    result = check_security_headers(broken, required_headers(POLICY))
    assert result.verdict is Verdict.FAIL
    assert result.details[0].startswith(
        "X-Frame-Options missing on 3 of 4 answers (status 404 x1, 429 x1, 502 x1)")


def test_wrong_value_fails() -> None:
    """A header with another value (DENY for SAMEORIGIN) fails and shows both."""
    result = check_security_headers([answer(200, X_Frame_Options="DENY"), answer(500)],
                                    required_headers(POLICY))
    assert result.verdict is Verdict.FAIL
    assert "X-Frame-Options is 'DENY' on 1 answer(s) (status 200 x1), expected 'SAMEORIGIN'" \
        in result.details


def test_header_names_are_case_insensitive() -> None:
    """Lower-case header names (HTTP/2) count as present."""
    lowered = [HeaderSample(s.url, s.status, tuple((k.lower(), v) for k, v in s.headers))
               for s in MIXED]
    assert check_security_headers(lowered, required_headers(POLICY)).verdict is Verdict.PASS


def test_headers_without_error_answers_unknown() -> None:
    """Only 2xx answers cannot show that headers are added 'always'."""
    result = check_security_headers([answer(200), answer(204)], required_headers(POLICY))
    assert result.verdict is Verdict.UNKNOWN
    ok = check_security_headers([answer(200)], required_headers(POLICY),
                                require_error_samples=False)
    assert ok.verdict is Verdict.PASS
    assert check_security_headers([], required_headers(POLICY)).verdict is Verdict.UNKNOWN
    assert check_security_headers(MIXED, {}).verdict is Verdict.UNKNOWN


# --- the checklist's header objectives ------------------------------------------------------


def _objectives(samples: list[HeaderSample], config: LabConfig = CONFIG):
    from lab.checks import CHECKS, CheckContext, run_check
    from lab.checks.registry import NoParams, predict
    from lab.history import History
    from lab.objectives import Objectives
    from lab.topology.expect import claimed

    ctx = CheckContext(history=History(header_samples=samples), expectations=claimed(config))
    result = run_check(CHECKS.get("security-headers"), NoParams(), ctx, Objectives())
    predictions = predict(CHECKS.get("security-headers"), NoParams(),
                          CheckContext(history=History(), expectations=claimed(config)),
                          Objectives())
    return ({o.name: o for o in result.objectives}, {p.objective: p for p in predictions})


def _limited(status: int) -> HeaderSample:
    sample = answer(status)
    if status != 429:
        return sample
    return HeaderSample(sample.url, 429, (*sample.headers, ("X-RateLimit-Status", "REJECTED"),
                                          ("Retry-After", "1")))


def test_header_objectives_pass_on_the_lab_and_predict_reachable() -> None:
    """The lab's own headers on every kind of answer meet both objectives, as predicted."""
    judged, predicted = _objectives([_limited(s) for s in (200, 404, 429, 502)])
    assert judged["security_headers"].verdict is Verdict.PASS, judged
    assert judged["rate_limit_headers"].verdict is Verdict.PASS, judged
    assert predicted["security_headers"].reachable is True
    assert predicted["rate_limit_headers"].reachable is True


def test_a_site_without_security_headers_conforms_and_fails_the_objective() -> None:
    """No X-Frame-Options and no CSP anywhere: conformance asks for none, the objective fails
    naming both, and the prediction said so; no error answer sampled is unknown."""
    bare = CONFIG.with_overrides("nginx", security_headers=False)
    samples = [HeaderSample(a.url, a.status, tuple(
        (k, v) for k, v in _limited(a.status).headers
        if k not in ("X-Frame-Options", "Content-Security-Policy", "X-Content-Type-Options")))
        for a in (answer(200), answer(404), answer(429))]
    judged, predicted = _objectives(samples, bare)
    objective = judged["security_headers"]
    assert objective.verdict is Verdict.FAIL
    assert ("X-Frame-Options missing on 3 of 3" in objective.measured
            and "Content-Security-Policy missing" in objective.measured), objective
    assert predicted["security_headers"].reachable is False
    assert "no add_header X-Frame-Options" in predicted["security_headers"].arithmetic
    judged, _ = _objectives([answer(200), answer(201)])
    assert judged["security_headers"].verdict is Verdict.UNKNOWN


def test_rate_limited_answers_without_their_headers_fail() -> None:
    """A 429 without X-RateLimit-Status and Retry-After fails the objective; none sampled is
    unknown."""
    judged, _ = _objectives([answer(200), answer(429)])
    assert judged["rate_limit_headers"].verdict is Verdict.FAIL
    assert "X-RateLimit-Status missing on 1 of 1" in judged["rate_limit_headers"].measured
    judged, _ = _objectives([answer(200), answer(404)])
    assert judged["rate_limit_headers"].verdict is Verdict.UNKNOWN

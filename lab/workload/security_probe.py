"""Security samples: the headers of answers of every kind, the certificate HTTPS serves, and
whether each published port accepts a TCP connection.

Requests go only to published 127.0.0.1 ports. Each call sends a small, fixed number
of requests (a burst to provoke 429 included) and returns at once.
"""

from __future__ import annotations

import socket
import ssl
import time

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtensionOID

from lab.history import HeaderSample, NodeExposure, PortConnect, TlsObservation
from lab.topology.client import LOOPBACK, ClientTarget, check_loopback_url

CONNECT_TIMEOUT_S = 2.0

# (method, path, body): an answer of each kind the edge produces.
_REQUESTS: tuple[tuple[str, str, bytes | None], ...] = (
    ("GET", "/health", None),                       # 200 from a backend
    ("GET", "/no-such-page", None),                 # 404 from a backend
    ("GET", "/api/conversations", None),            # 401: no token
    ("POST", "/api/messages", b"x" * (2 << 20)),    # 413 from NGINX itself (client_max_body_size)
)
BURST = 12   # login requests at once: more than the auth zone's burst, so some get 429


def _load(data: bytes) -> x509.Certificate:
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def observe_certificate(host: str, served: bytes, lab_ca_pem: bytes,
                        observed_at: float) -> TlsObservation:
    """The served certificate (DER or PEM) as a ``TlsObservation``, judged against the lab's CA."""
    cert = _load(served)
    ca = _load(lab_ca_pem)
    try:
        ext = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
        san = (*ext.get_values_for_type(x509.DNSName),
               *(str(ip) for ip in ext.get_values_for_type(x509.IPAddress)))
    except x509.ExtensionNotFound:
        san = ()
    return TlsObservation(
        host=host,
        issuer=cert.issuer.rfc4514_string(),
        subject=cert.subject.rfc4514_string(),
        san=san,
        self_signed=cert.issuer == cert.subject,
        verified_with_lab_ca=cert.issuer == ca.subject and _signed_by(cert, ca),
        not_after_epoch=cert.not_valid_after_utc.timestamp(),
        not_before_epoch=cert.not_valid_before_utc.timestamp(),
        observed_at=observed_at,
    )



def sample_headers(base_url: str | ClientTarget, *,
                   ca_pem: bytes | None = None) -> list[HeaderSample]:
    """One answer of each kind (and a burst for 429) from ``base_url`` (a target: with its
    server name and CA), with its headers."""
    target = base_url if isinstance(base_url, ClientTarget) else ClientTarget(
        base_url, ca_pem=ca_pem)
    base_url = target.base_url
    samples = []
    with target.httpx_client(timeout=10) as client:
        requests = list(_REQUESTS) + [("POST", "/api/auth/login", b"{}")] * BURST
        for method, path, body in requests:
            response = client.request(method, path, content=body)
            samples.append(HeaderSample(url=f"{base_url}{path}", status=response.status_code,
                                        headers=tuple(response.headers.multi_items())))
    return samples


def observe_tls(https_url: str, server_name: str, ca_pem: bytes) -> TlsObservation:
    """The certificate NGINX serves for ``server_name`` (read without trusting it first)."""
    host, port = check_loopback_url(https_url).removeprefix("https://").rsplit(":", 1)
    context = ssl.create_default_context()
    # Read whatever is served, then judge it against the lab's CA (observe_certificate).
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, int(port)), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=server_name) as tls:
        served = tls.getpeercert(binary_form=True)
    return observe_certificate(server_name, served, ca_pem, time.time())


def connect_published(exposures: list[NodeExposure], *,
                      timeout_s: float = CONNECT_TIMEOUT_S) -> list[PortConnect]:
    """One TCP connect to 127.0.0.1 per published host port (opened, then closed at once).

    Only loopback is tried, whatever interface a binding names: 0.0.0.0 and :: include it,
    and the host sends traffic nowhere else. One attempt per port, each bounded by
    ``timeout_s``.
    """
    out = []
    for exposure in exposures:
        for binding in exposure.bindings:
            if not binding.host_port:
                continue
            try:
                with socket.create_connection((LOOPBACK, binding.host_port), timeout=timeout_s):
                    connected, detail = True, ""
            except OSError as exc:
                connected, detail = False, f"{type(exc).__name__}: {exc}"
            out.append(PortConnect(time.time(), exposure.node, binding.container_port, LOOPBACK,
                                   binding.host_port, connected, detail))
    return out

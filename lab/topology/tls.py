"""A per-lab certificate authority and server certificate, so HTTPS is verifiable, not
self-signed."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal, getcontext

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class TlsMaterial:
    ca_pem: bytes
    cert_pem: bytes       # server certificate followed by nothing else (nginx serves the leaf)
    key_pem: bytes


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Failover Lab"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_tls(lab_name: str, server_name: str, *, names: Sequence[str] = (),
             days: int = 30) -> TlsMaterial:
    """A CA for this lab and a server certificate for ``server_name``, every one of ``names``
    (the TLS server names a user's file gives), localhost and 127.0.0.1."""
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"Failover Lab CA ({lab_name})")
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    # One certificate for every server block: NGINX serves whatever ssl_certificate a block
    # names, and each of the user's blocks names a path the lab fills with this one.
    dns = dict.fromkeys([server_name, *names, "localhost"])
    sans = [*(x509.DNSName(name) for name in dns),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder().subject_name(_name(server_name)).issuer_name(ca_name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return TlsMaterial(
        ca_pem=ca.public_bytes(pem),
        cert_pem=cert.public_bytes(pem),
        key_pem=key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()),
    )


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _der_integer(value: int) -> bytes:
    body = value.to_bytes(value.bit_length() // 8 + 1, "big")   # a leading 0 keeps it positive
    return b"\x02" + _der_length(len(body)) + body


def ffdhe2048_pem() -> bytes:
    """RFC 7919's ffdhe2048 group (the one Mozilla's TLS guidance ships as a dhparam file), as
    PKCS#3 PEM: what the lab places where a user's ``ssl_dhparam`` names a file it was not
    given. Computed from the RFC's definition rather than copied: p = 2^2048 - 2^1984 +
    (floor(2^1918 * e) + 560316) * 2^64 - 1, g = 2."""
    getcontext().prec = 700
    e, term = Decimal(0), Decimal(1)
    for k in range(1, 400):
        e += term
        term /= k
    p = 2**2048 - 2**1984 + (int((Decimal(2) ** 1918 * e).to_integral_value(
        rounding=ROUND_FLOOR)) + 560316) * 2**64 - 1
    body = _der_integer(p) + _der_integer(2)
    der = b"\x30" + _der_length(len(body)) + body
    lines = [base64.b64encode(der[i:i + 48]).decode() for i in range(0, len(der), 48)]
    return ("-----BEGIN DH PARAMETERS-----\n" + "\n".join(lines)
            + "\n-----END DH PARAMETERS-----\n").encode()

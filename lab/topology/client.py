"""Where the lab's clients send their requests: a published port on 127.0.0.1 (never a
container's address), and for HTTPS the name they ask for and the CA that verifies it.

A record of the topology as the host reaches it; the traffic, the probes and the readiness
wait all take it from here.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

LOOPBACK = "127.0.0.1"


def check_loopback_url(base_url: str) -> str:
    """``base_url`` without a trailing slash; ValueError unless it is http(s)://127.0.0.1:PORT."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"traffic URL must be http:// or https://, got {base_url!r}")
    if parts.hostname != LOOPBACK:
        raise ValueError(f"traffic goes only to {LOOPBACK} (the lab's published port), "
                         f"not to {parts.hostname!r}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        raise ValueError(f"traffic URL needs an explicit port: {base_url!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"traffic URL must be just scheme://{LOOPBACK}:PORT, got {base_url!r}")
    return f"{parts.scheme}://{LOOPBACK}:{port}"


@dataclass(frozen=True)
class ClientTarget:
    """Where the lab's clients send requests meant for the backends: a published 127.0.0.1
    URL and, for HTTPS, the name they ask for (SNI and Host) and the CA that verifies it."""

    base_url: str
    server_name: str | None = None
    ca_pem: bytes | None = None
    redirect: str | None = None        # the port-80 redirect this target follows, if any

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_url", check_loopback_url(self.base_url))

    @property
    def tls(self) -> bool:
        """Whether the clients speak HTTPS to this target."""
        return self.base_url.startswith("https://")

    @property
    def host_header(self) -> dict[str, str]:
        """The Host header a request needs (none: the URL's own)."""
        return {"Host": self.server_name} if self.server_name else {}

    def ssl_context(self) -> ssl.SSLContext | bool:
        """What verifies the server: the lab's CA for HTTPS (the system's without one)."""
        if not self.tls:
            return False        # plain HTTP: nothing to verify, and no context to build
        if self.ca_pem is None:
            return True
        return ssl.create_default_context(cadata=self.ca_pem.decode("ascii"))

    def describe(self) -> str:
        """The target in words, for messages: the URL and the name asked for."""
        name = f" as {self.server_name}" if self.server_name else ""
        via = f" (port 80 redirects to {self.redirect})" if self.redirect else ""
        return f"{self.base_url}{name}{via}"

    def httpx_client(self, **options: object) -> httpx.Client:
        """An httpx client for this target: its base URL, Host, SNI and CA."""
        hooks: dict[str, list] = {}
        if self.server_name and self.tls:
            name = self.server_name

            def sni(request: httpx.Request) -> None:
                # httpx takes SNI from the URL's host (127.0.0.1: none); httpcore's
                # sni_hostname extension names the server the certificate is checked for.
                request.extensions["sni_hostname"] = name

            hooks["request"] = [sni]
        return httpx.Client(base_url=self.base_url, verify=self.ssl_context(),
                            headers=self.host_header, event_hooks=hooks,
                            **options)  # type: ignore[arg-type]

"""The user's site as the lab's clients reach it: TLS, the name they ask for, port 80's redirect.

Pure (no Docker). The lab's TLS certificate, key and CA, for every name the TLS servers give,
are placed at the paths the file names (other files NGINX reads are copied from beside the
conf); the clients ask for one of those names (SNI and Host). Where port 80 only redirects to
HTTPS, the clients follow it (``plain_http_redirect``; ``Lab.client_target``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from lab.config import NginxConfig
from lab.errors import ConfigError
from lab.expectations import NginxPolicy
from lab.topology.nginx_policy import if_https_redirect
from lab.topology.nginx_tree import Directive, walk
from lab.topology.tls import ffdhe2048_pem
from lab.topology.user_files import container_path

# Files NGINX reads that the lab replaces with its own TLS material.
_TLS_FILES = {"ssl_certificate": "cert", "ssl_certificate_key": "key",
              "ssl_trusted_certificate": "ca", "ssl_client_certificate": "ca"}
# Files NGINX reads that the lab can only copy from beside your conf.
_OTHER_FILES = ("ssl_dhparam", "auth_basic_user_file", "ssl_password_file",
                "ssl_session_ticket_key", "ssl_crl", "ssl_stapling_file")
_UNNAMED = ("_", "", "localhost")


def _servers(tree: Sequence[Directive]) -> list[Directive]:
    """Every server block of the http block, in file order."""
    return [d for http in tree if http.name == "http" for d in http.block or ()
            if d.name == "server"]


def check_certificates(tree: Sequence[Directive]) -> None:
    """Every server listening with ``ssl`` names a certificate (its own or the http block's):
    NGINX refuses to start otherwise ("no ssl_certificate is defined"), and the lab places its
    certificate only where the file names one."""
    for http in (d for d in tree if d.name == "http"):
        shared = any(d.name == "ssl_certificate" for d in http.block or ())
        for server in (d for d in http.block or () if d.name == "server"):
            block = server.block or ()
            ssl = next((d for d in block if d.name == "listen" and "ssl" in d.args[1:]), None)
            if ssl is not None and not shared and not any(d.name == "ssl_certificate"
                                                          for d in block):
                raise ConfigError(f"{ssl.file}:{ssl.line}: listen {' '.join(ssl.args)} with no "
                                  "ssl_certificate for its server: NGINX refuses to start "
                                  "(no \"ssl_certificate\" is defined)",
                                  hint="name the certificate (the lab places its own there), "
                                  "or remove ssl from the listen")


def files_named(tree: Sequence[Directive], folder: Path
                ) -> tuple[dict[str, str], dict[str, bytes]]:
    """The files the configuration names that the lab provides: container path -> "cert" |
    "key" | "ca" (the lab's TLS material), and container path -> bytes (copied from beside the
    conf, or RFC 7919's group for a missing dhparam)."""
    tls: dict[str, str] = {}
    copied: dict[str, bytes] = {}
    for d in walk(tree):
        where = f"{d.file}:{d.line}"
        if d.name in _TLS_FILES and d.args:
            if "$" in d.args[0]:
                raise ConfigError(f"{where}: {d.name} {d.args[0]}: a variable; the lab places "
                                  "its certificate at fixed paths")
            if d.args[0].startswith("data:"):
                continue
            tls[container_path(d.args[0])] = _TLS_FILES[d.name]
        elif d.name in _OTHER_FILES and d.args and d.args[0] != "off":
            value = d.args[0]
            beside = folder / value if not os.path.isabs(value) else None
            if (beside is None or not beside.is_file()) and d.name == "ssl_dhparam":
                # Public parameters, not a secret: RFC 7919's ffdhe2048 group stands in for
                # the file (what Mozilla's TLS guidance ships as one).
                copied[container_path(value)] = ffdhe2048_pem()
                continue
            if beside is None or not beside.is_file():
                raise ConfigError(f"{where}: {d.name} {value}: a file the lab cannot provide",
                                  hint="put it beside the conf and name it by a relative "
                                  "path, or remove the line (TLS 1.3 and ECDHE need no "
                                  "dhparam)")
            copied[container_path(value)] = beside.read_bytes()
    return tls, copied


def tls_server_names(tree: Sequence[Directive]) -> tuple[tuple[str, str], ...]:
    """Every concrete name a TLS server block (``listen ... ssl``) answers to, with its
    file:line, in file order; wildcards, regexes and the catch-all ``_`` are no name a client
    can ask for."""
    named: dict[str, str] = {}
    for server in _servers(tree):
        if not any("ssl" in d.args for d in server.block or () if d.name == "listen"):
            continue
        for d in (d for d in server.block or () if d.name == "server_name"):
            for name in d.args:
                if name in _UNNAMED or name.startswith(("~", ".")) or "*" in name \
                        or "$" in name:
                    continue
                named.setdefault(name.lower().rstrip("."), f"{d.file}:{d.line}")
    return tuple(named.items())


def client_name(names: Sequence[tuple[str, str]], configured: str, tls: bool) -> str:
    """The name the lab's clients ask for (SNI and Host): lab.toml's [nginx] server_name when
    it is one of the TLS servers' names, else the first of those names.

    lab.toml's default name stands for "not given": a config travels between processes as
    JSON with every field filled in, so "given" cannot be told from "default" later, and the
    default can only be right for a file that names no TLS server."""
    if not names or not tls:
        return configured
    if configured.lower() in {name for name, _ in names}:
        return configured.lower()
    if configured == NginxConfig.model_fields["server_name"].default:
        return names[0][0]
    listed = ", ".join(f"{name} ({where})" for name, where in names)
    raise ConfigError(f"lab.toml's [nginx] server_name {configured!r} is none of the names your "
                      f"TLS servers answer to: {listed}; the lab's clients ask for one of them",
                      hint=f"remove [nginx] server_name (the lab then uses {names[0][0]!r}), or "
                      "set it to one of these names")


def plain_http_redirect(policy: NginxPolicy, tree: Sequence[Directive], path: str = "/",
                        port: int = 80, *, host: str | None = None) -> str | None:
    """Where a plain request for ``path`` on ``port`` (asking for ``host``) is redirected:
    ``NginxPolicy.redirects`` (a server's own, also inside ``if ($scheme = http)``, or its
    location's), else a redirect to HTTPS inside certbot's ``if ($host = NAME)`` for the name
    the clients ask for, which the policy cannot read (it depends on the name asked for)."""
    found = policy.redirects(path, port)
    index = policy.server_for(port)
    if found is not None or index is None or port in policy.servers[index].tls_ports \
            or not host:
        return found
    servers = _servers(tree)
    if index >= len(servers):
        return None
    asked = {f"$host={host.lower()}", f"$server_name={host.lower()}"}
    return if_https_redirect(servers[index].block or (), lambda c: c.lower() in asked)


def followed_redirect(policy: NginxPolicy, tree: Sequence[Directive],
                      host: str, port: int = 80) -> str | None:
    """The redirect of "/" on the plain ``port`` the lab's clients (asking for ``host``)
    follow (to HTTPS on 443), None when it answers itself; ConfigError for one they cannot
    follow."""
    target = plain_http_redirect(policy, tree, port=port, host=host)
    if target is None:
        return None
    server = policy.server_for(port)
    servers = _servers(tree)
    where = servers[server].where if server is not None and server < len(servers) \
        else "nginx.conf"
    if not target.startswith("https://"):
        raise ConfigError(f"{where}: port {port} answers \"/\" with a redirect to {target}: the "
                          "lab follows a redirect to HTTPS only, and sends its traffic to NGINX "
                          "alone",
                          hint="rehearse the server the redirect leads to: let port 80 proxy "
                          "to the backends, or redirect it to https://")
    tls = sorted({p for s in policy.servers for p in s.tls_ports})
    if not tls:
        raise ConfigError(f"{where}: port {port} redirects to {target}, and no server listens "
                          "with ssl: nothing would answer the redirect",
                          hint="add the HTTPS server (listen 443 ssl) to the file")
    if 443 not in tls:
        raise ConfigError(f"{where}: port {port} redirects to {target}, and HTTPS is served on "
                          f"{', '.join(map(str, tls))}, not on 443, where the redirect leads",
                          hint="listen 443 ssl in the HTTPS server")
    return target

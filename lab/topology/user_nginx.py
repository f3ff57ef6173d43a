"""Your own NGINX configuration (``[nginx] conf``), made runnable in the lab.

Pure (no Docker): the files are read on this host, what the lab cannot provide is refused with
the file, line and reason (``ConfigError``), and ``UserNginx`` holds what the topology copies
into the nginx container.

A ``conf.d``-style file (``server``/``upstream`` blocks) runs inside the lab's stand-in for
Debian's stock nginx.conf (``worker_processes auto``, ``include`` of the file in ``http``), a
whole nginx.conf runs as it is. The file's folder is copied to ``/etc/lab/conf/``, so its
relative includes resolve as they do beside it. What the lab changes in the copy is
``user_nginx_edits``'s (its access log, and the addresses Docker cannot give a container);
how the upstream blocks become the lab's backends is ``user_upstreams``'s; the TLS material,
the name the clients ask for and port 80's redirect are ``user_site``'s.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.engine import FileSpec
from lab.errors import ConfigError
from lab.expectations import NginxPolicy
from lab.topology.nginx_policy import policy_from_tree
from lab.topology.nginx_tree import (
    Directive,
    parse_file_text,
    read_host_files,
    resolve_includes,
    walk,
)
from lab.topology.user_files import NGINX_PREFIX, existing_file
from lab.topology.user_nginx_edits import (
    inject_http_log,
    log_edits,
    rewrite_servers,
    user_edit,
    wrapper,
)
from lab.topology.user_site import (
    check_certificates,
    client_name,
    files_named,
    followed_redirect,
    tls_server_names,
)
from lab.topology.user_upstreams import backends, upstream_servers

WRAPPER = "lab-nginx.conf"          # the stand-in nginx.conf around a conf.d-style file
RENDERED_MAIN = "/etc/lab/nginx.conf"

# Directives the lab's NGINX (Debian bookworm's nginx 1.22, open source) cannot run, and why.
_ACTIVE = ("nginx_upstream_check_module (third-party; in neither Debian's nginx nor "
           "nginx-full, which bundles only auth-pam, dav-ext, echo, geoip2, subs-filter, "
           "upstream-fair): open-source NGINX has no active health checks, a failed backend "
           "is found only by failing client requests (passive: max_fails, fail_timeout)")
_PLUS = "NGINX Plus (commercial) only; open-source NGINX refuses it"
UNPROVIDABLE: Mapping[str, str] = {
    "check": _ACTIVE, "check_http_send": _ACTIVE, "check_http_expect_alive": _ACTIVE,
    "check_keepalive_requests": _ACTIVE, "check_shm_size": _ACTIVE, "check_status": _ACTIVE,
    "check_fastcgi_param": _ACTIVE, "check_http_status": _ACTIVE,
    "health_check": _PLUS, "match": _PLUS, "zone_sync": _PLUS, "sticky": _PLUS,
    "ntlm": _PLUS, "queue": _PLUS, "state": _PLUS, "least_time": _PLUS,
    # Directives of later open-source releases than the 1.22 the lab runs (nginx.org's
    # changes files): NGINX 1.22 stops at them ("unknown directive").
    "http2": "a directive of nginx 1.25.1 and later (1.22 takes `listen ... http2`)",
    "http3": "HTTP/3 arrived in nginx 1.25.0", "quic_retry": "HTTP/3 arrived in nginx 1.25.0",
    "quic_gso": "HTTP/3 arrived in nginx 1.25.0",
    "quic_host_key": "HTTP/3 arrived in nginx 1.25.0",
    "quic_bpf": "HTTP/3 arrived in nginx 1.25.0",
    "http3_hq": "HTTP/3 arrived in nginx 1.25.0",
    "ssl_object_cache_inheritable": "a directive of nginx 1.27.4 and later",
    "proxy_pass_trailers": "a directive of nginx 1.27.4 and later",
    "ssl_certificate_cache": "a directive of nginx 1.27.4 and later",
}


@dataclass(frozen=True)
class UserNginx:
    """A user's NGINX configuration as the lab runs it."""

    main: str                                  # container path NGINX starts with (-c)
    files: Mapping[str, str]                   # container path -> text, as copied
    shown: Mapping[str, str]                   # container path -> the host path it came from
    aliases: Mapping[str, tuple[str, ...]]     # backend node -> host names the upstreams use
    nodes: Mapping[str, str]                   # upstream address (host:port, host) -> node
    backend_port: int
    tls_paths: Mapping[str, str]               # container path -> "cert" | "key" | "ca"
    copied: Mapping[str, bytes]                # container path -> other files copied
    tree: tuple[Directive, ...]                # the whole tree NGINX will load (as far as known)
    notes: tuple[str, ...] = ()
    server_name: str = ""                      # what the lab's clients ask for (SNI, Host)
    server_names: tuple[str, ...] = ()         # every TLS server's names (the certificate's)
    pool: str = ""                             # the upstream block of the backends
    redirect: str | None = None                # port 80's redirect of "/" the clients follow
    plain_port: int | None = 80                # the site's plain-HTTP port NGINX listens on
    tls_port: int | None = 443                 # the site's TLS port

    def host_path(self, path: str) -> str:
        """The host file a container path came from (for messages)."""
        return self.shown.get(path, path)


def main_conf_path(config: Any) -> str:
    """The nginx.conf path NGINX starts with in this configuration's nginx container."""
    conf = config.nginx.conf
    if conf is None:
        return RENDERED_MAIN
    name = Path(conf).name
    return posixpath.join(NGINX_PREFIX, name if _is_whole(Path(conf)) else WRAPPER)


def _is_whole(path: Path) -> bool:
    try:
        tree = parse_file_text(path.read_text(encoding="utf-8"), str(path))
    except OSError as exc:
        raise ConfigError(f"[nginx] conf = {str(path)!r}: {exc.strerror or exc}") from None
    return any(d.name in ("http", "events") for d in tree)



def unprovidable(tree: Sequence[Directive], shown: Mapping[str, str]) -> list[str]:
    """``file:line: directive: why`` for every directive the lab's NGINX cannot run."""
    return [f"{d.file}:{d.line}: {d.name}: {UNPROVIDABLE[d.name]}"
            for d in walk(tree) if d.name in UNPROVIDABLE]


def _refuse(refused: Sequence[str]) -> None:
    """One ConfigError for every directive the lab's NGINX cannot run, grouped by reason."""
    by_reason: dict[str, list[str]] = {}
    for line in refused:
        where, name, reason = line.split(": ", 2)
        by_reason.setdefault(reason, []).append(f"{where}: {name}")
    text = "\n".join("  " + "\n  ".join(lines) + f"\n    why: {reason}"
                     for reason, lines in by_reason.items())
    raise ConfigError("the lab's NGINX (Debian bookworm's nginx 1.22, open source) cannot "
                      "run this configuration:\n" + text,
                      hint="remove these lines to rehearse what NGINX really does; "
                      "`lab lint` explains what that means for failover")


def _container_copy(path: Path) -> tuple[dict[str, str], dict[str, str], str, bool]:
    """The conf's folder as the nginx container holds it: container path -> text, container
    path -> the host path it came from, the main file, and whether the conf is a whole
    nginx.conf (else the lab's stand-in around it is the main file)."""
    folder = path.parent
    try:
        host_files = read_host_files(path)
    except OSError as exc:
        raise ConfigError(f"[nginx] conf: cannot read {exc.filename}: {exc.strerror}") from None
    files: dict[str, str] = {}
    shown: dict[str, str] = {}
    for host_path, text in host_files.items():
        relative = os.path.relpath(host_path, folder)
        if relative.startswith(".."):
            raise ConfigError(f"{host_path}: included from outside {folder}; the lab copies "
                              "the conf's folder only", hint="keep includes beside the conf")
        container = posixpath.join(NGINX_PREFIX, Path(relative).as_posix())
        files[container] = text
        shown[container] = host_path
    whole = _is_whole(path)
    if whole:
        return files, shown, posixpath.join(NGINX_PREFIX, path.name), whole
    main = posixpath.join(NGINX_PREFIX, WRAPPER)
    if main in files:
        raise ConfigError(f"{folder / WRAPPER}: the lab's own file name; rename yours")
    files[main] = wrapper(path.name)
    shown[main] = f"the lab's stand-in nginx.conf around {path}"
    return files, shown, main, whole


def _whole_http(path: Path, tree: Sequence[Directive], main_file: str) -> Directive:
    """A whole nginx.conf's http block, where the lab adds its access log; ConfigError for a
    whole nginx.conf NGINX or the lab cannot run."""
    http = [d for d in tree if d.name == "http"]
    if len(http) != 1:
        raise ConfigError(f"{path}: a whole nginx.conf needs exactly one http block")
    if not any(d.name == "events" for d in tree):
        raise ConfigError(f"{path}: a whole nginx.conf without an events block: NGINX "
                          "refuses it (no \"events\" section in configuration)",
                          hint="add `events {}`, or give the lab only your server and "
                          "upstream blocks (a conf.d file)")
    if http[0].file != main_file:
        raise ConfigError(f"{http[0].file}:{http[0].line}: the lab adds its "
                          "access log in the http block; write it in the main file")
    return http[0]


def _listen_ports(tree: Sequence[Directive]) -> set[int]:
    ports: set[int] = set()
    for http in (d for d in tree if d.name == "http"):
        for server in (d for d in http.block or () if d.name == "server"):
            for listen in (d for d in server.block or () if d.name == "listen" and d.args):
                text = listen.args[0].rsplit(":", 1)[-1]
                if text.isdigit():
                    ports.add(int(text))
    return ports


def _site_ports(path: Path, tree: Sequence[Directive], static: NginxPolicy,
                notes: list[str]) -> tuple[int | None, int | None]:
    """The site's (plain, TLS) ports: 80 and 443 where it listens there, else the ports of
    the servers that proxy; a note for each port the lab does not publish."""
    # A site behind a cloud load balancer listens on 3000 or 9999; the lab publishes the
    # site's ports on 127.0.0.1 and sends its clients there.
    plain_port, tls_port = static.site_ports()
    if plain_port is None and tls_port is None:
        raise ConfigError(f"{path}: no server block proxies to an upstream on any port it "
                          "listens on: the lab's clients would reach no backend",
                          hint="proxy_pass to the upstream block of the backends")
    listening = _listen_ports(tree) | {p for p in (plain_port, tls_port) if p}
    for port_ in sorted(listening - {plain_port, tls_port}):
        notes.append(f"port {port_} is not published: the lab's clients use "
                     + " and ".join(str(p) for p in (plain_port, tls_port) if p))
    return plain_port, tls_port


def _client_notes(ports: tuple[int | None, int | None], redirect: str | None,
                  server_name: str, names: Sequence[tuple[str, str]]) -> list[str]:
    """How the lab's clients reach the site, one note each."""
    plain_port, tls_port = ports
    notes = []
    if redirect is not None:
        notes.append(f"port {plain_port} redirects to {redirect}: the lab's clients follow it to "
                     f"port {tls_port} as {server_name} (SNI and Host), trusting the lab's CA")
    elif plain_port is None:
        notes.append(f"the site serves HTTPS only (port {tls_port}): the lab's clients ask for "
                     f"{server_name} there, trusting the lab's CA")
    if len(names) > 1:
        notes.append(f"the lab's certificate covers {', '.join(n for n, _ in names)}")
    return notes


def user_nginx(config: Any, *, strict: bool = True) -> UserNginx | None:
    """The user's NGINX files ready to copy, or None when the lab renders its own; without
    ``strict``, directives the lab's NGINX cannot run are kept (``lab lint`` explains them)."""
    conf = config.nginx.conf
    if conf is None:
        return None
    path = existing_file(conf, "[nginx] conf")
    if not path.is_file():
        raise ConfigError(f"[nginx] conf = {conf!r}: not a file")
    files, shown, main, whole = _container_copy(path)
    tree = resolve_includes(files, main, shown=shown, missing_ok=True)
    refused = unprovidable(tree, shown)
    if refused and strict:
        _refuse(refused)
    notes: list[str] = []
    if whole:
        http = _whole_http(path, tree, shown[main])
        files[main] = inject_http_log(files[main], http, f"{path}:{http.line}")
        files[main] = user_edit(files[main], tree, shown[main], notes)
    files = log_edits(files, tree, notes, shown)
    upstream_servers(tree)                   # the backends are named, and the lab can run them
    # The backend pool is the block the traffic's "/" reaches (following a redirect to
    # HTTPS), or lab.toml's [nginx] upstream: read as NGINX will run it.
    static = policy_from_tree(tree, upstream=config.nginx.upstream)
    ports = _site_ports(path, tree, static, notes)
    mapped = backends(tree, static.upstream.name, config.backend.replicas)
    files = rewrite_servers(files, mapped.rewrites, shown)
    notes += mapped.notes
    tls_paths, copied = files_named(tree, path.parent)
    check_certificates(tree)
    names = tls_server_names(tree)
    server_name = client_name(names, config.nginx.server_name, bool(tls_paths))
    redirect = followed_redirect(static, tree, server_name, ports[0]) \
        if ports[0] is not None else None
    notes += _client_notes(ports, redirect, server_name, names)
    return UserNginx(main, files, shown, {k: tuple(v) for k, v in mapped.aliases.items()},
                     mapped.nodes, mapped.port, tls_paths, copied,
                     resolve_includes(files, main, shown=shown, missing_ok=True), tuple(notes),
                     server_name, tuple(n for n, _ in names), static.upstream.name, redirect,
                     *ports)


def user_nginx_policy(config: Any, user: UserNginx, *, path: str = "/") -> NginxPolicy:
    """The policy of the user's files as they would run (static; no nginx -T)."""
    return policy_from_tree(user.tree, path=path, nodes=user.nodes,
                            upstream=config.nginx.upstream)


def client_server_name(config: Any) -> str:
    """The TLS name the lab's clients ask for with this configuration: lab.toml's, or the
    first name of the user's TLS servers (lab.toml's when the files cannot be read: the
    error is reported where they are read)."""
    if config.nginx.conf is None:
        return config.nginx.server_name
    try:
        user = user_nginx(config, strict=False)
    except ConfigError:
        return config.nginx.server_name
    return user.server_name if user is not None else config.nginx.server_name


def nodes_of(config: Any) -> dict[str, str] | None:
    """Upstream address -> node for this configuration (None: the rendered conf's names)."""
    user = user_nginx(config)
    return dict(user.nodes) if user is not None else None


# -- the nginx container ---------------------------------------------------------------------


def nginx_file_specs(user: UserNginx, tls: Any) -> tuple[FileSpec, ...]:
    """The files of the nginx container for a user's configuration: theirs, the lab's TLS
    material at the paths they name (and at /etc/lab/tls, where the lab's probes read it)."""
    material = {"cert": (tls.cert_pem, 0o644), "key": (tls.key_pem, 0o600),
                "ca": (tls.ca_pem, 0o644)}
    specs = [FileSpec(path, text.encode()) for path, text in user.files.items()]
    specs += [FileSpec(path, *material[kind]) for path, kind in user.tls_paths.items()]
    specs += [FileSpec(path, data) for path, data in user.copied.items()]
    specs += [FileSpec("/etc/lab/tls/server.crt", tls.cert_pem),
              FileSpec("/etc/lab/tls/server.key", tls.key_pem, 0o600),
              FileSpec("/etc/lab/tls/ca.crt", tls.ca_pem)]
    return tuple(specs)


def nginx_command(user: UserNginx) -> tuple[str, ...]:
    """How the nginx container starts NGINX on a user's configuration."""
    return ("nginx", "-c", user.main, "-g", "daemon off;")


def show_host_paths(text: str, user: UserNginx) -> str:
    """NGINX's own messages with container paths replaced by the files they came from."""
    for container, host in sorted(user.shown.items(), key=lambda item: -len(item[0])):
        text = text.replace(container, host)
    return text

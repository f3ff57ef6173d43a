"""Your own configuration files, made runnable in the lab: ``[nginx] conf``, ``[pgbouncer] ini``.

Pure (no Docker): each function reads the files on this host, refuses what the lab cannot
provide with the file, line and reason (``ConfigError``), and returns what the topology
copies into the containers.

NGINX: a ``conf.d``-style file (``server``/``upstream`` blocks) runs inside the lab's stand-in
for Debian's stock nginx.conf (``worker_processes auto``, ``include`` of the file in ``http``),
a whole nginx.conf runs as it is. The file's folder is copied to ``/etc/lab/conf/``, so its
relative includes resolve as they do beside it. What the lab changes, each on the line it is
on (line numbers stay those of your file): its access log (``LABLOG`` lines on stdout, which
every check reads) beside yours, ``access_log off`` becoming that log, and the address of an
upstream server Docker cannot give a container (``_backends`` says which and why), and nothing
else. The backend pool's distinct addresses become backend-1, ... (host names as network
aliases); the lab's TLS certificate, key and CA, for every name the TLS servers give, are
placed at the paths the file names. Where port 80 only redirects to HTTPS, the lab's clients
follow it (``plain_http_redirect``; ``Lab.client_target``).

PgBouncer: the file is kept, except what points at a database or authenticates against it:
each ``[databases]`` entry gets the lab's host, port, database and user; listen address and
port, ``auth_file``, log and pid file are the lab's; the lab's admin user is added to
``admin_users``/``stats_users``. The userlist's credentials are the lab's own.
"""

from __future__ import annotations

import ipaddress
import os
import posixpath
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.errors import ConfigError
from lab.expectations import NginxPolicy
from lab.topology.nginx_conf import (
    Directive,
    parse_file_text,
    policy_from_tree,
    read_host_files,
    resolve_includes,
)
from lab.topology.pgbouncer_ini import read_ini
from lab.topology.render import (
    ACCESS_LOG_FIELDS,
    ACCESS_LOG_TAG,
    PGBOUNCER_ADMIN_USER,
    PGBOUNCER_PORT,
)
from lab.topology.tls import ffdhe2048_pem

NGINX_PREFIX = "/etc/lab/conf"
WRAPPER = "lab-nginx.conf"          # the stand-in nginx.conf around a conf.d-style file
RENDERED_MAIN = "/etc/lab/nginx.conf"
LOG_FORMAT = "lab_history"
LAB_ACCESS_LOG = f"access_log /dev/stdout {LOG_FORMAT};"
OTHER_NODES = ("postgres", "pgbouncer", "redis", "nginx")

# Directives the lab's NGINX (Debian bookworm's nginx 1.22, open source) cannot run, and why.
_ACTIVE = ("nginx_upstream_check_module (third-party; in neither Debian's nginx nor "
           "nginx-full, which bundles only auth-pam, dav-ext, echo, geoip2, subs-filter, "
           "upstream-fair): open-source NGINX has no active health checks, a failed backend "
           "is found only by failing client requests (passive: max_fails, fail_timeout)")
# Where the servers of an upstream block that is not the backend pool point in the lab's copy:
# a closed port on NGINX's own loopback (the discard port), refused at once.
ABSENT_SERVICE = "127.0.0.1:9"
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
# Files NGINX reads that the lab replaces with its own TLS material.
_TLS_FILES = {"ssl_certificate": "cert", "ssl_certificate_key": "key",
              "ssl_trusted_certificate": "ca", "ssl_client_certificate": "ca"}
# Files NGINX reads that the lab can only copy from beside your conf.
_OTHER_FILES = ("ssl_dhparam", "auth_basic_user_file", "ssl_password_file",
                "ssl_session_ticket_key", "ssl_crl", "ssl_stapling_file")


def _existing(path: str, what: str) -> Path:
    found = Path(path)
    if not found.exists():
        raise ConfigError(f"{what} = {path!r}: no such file", hint="paths in lab.toml are "
                          "relative to lab.toml's folder")
    return found


# -- NGINX ----------------------------------------------------------------------------------


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


def _wrapper(include: str) -> str:
    log = "\\t".join((ACCESS_LOG_TAG, *ACCESS_LOG_FIELDS))
    return f"""# The lab's stand-in for Debian's stock /etc/nginx/nginx.conf, around your file.
user www-data;
worker_processes auto;
pid /run/nginx.pid;
error_log /dev/stderr;
include /etc/nginx/modules-enabled/*.conf;
events {{
    worker_connections 768;
}}
http {{
    sendfile on;
    tcp_nopush on;
    types_hash_max_size 2048;
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3;
    ssl_prefer_server_ciphers on;
    log_format {LOG_FORMAT} '{log}';
    {LAB_ACCESS_LOG}
    gzip on;
    include {include};
}}
"""


_QUOTED_OR_COMMENT = re.compile(r"""'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*"|#.*$""")


def _code_end(line: str) -> int:
    """Where a line's code ends: at its comment (a # outside quotes), else its end."""
    for match in _QUOTED_OR_COMMENT.finditer(line):
        if match.group(0).startswith("#"):
            return match.start()
    return len(line)


def _edit_line(text: str, line: int, edit: Any, where: str) -> str:
    lines = text.split("\n")
    original = lines[line - 1]
    code_end = _code_end(original)
    changed = edit(original[:code_end])
    if changed is None:
        raise ConfigError(f"{where}: the lab cannot place its access log here: write this "
                          "access_log on one line", hint="the lab logs every request beside "
                          "your own logs, on the same line, so that line numbers stay yours")
    lines[line - 1] = changed + original[code_end:]
    return "\n".join(lines)


_ACCESS_LOG = re.compile(r"\baccess_log\b([^;]*);")


def _log_edits(files: dict[str, str], tree: Sequence[Directive], http_files: set[str],
               notes: list[str], shown: Mapping[str, str]) -> dict[str, str]:
    """Add the lab's access log beside every access_log below http, and replace ``off``."""
    edits: list[tuple[str, int, str]] = []          # (file, line, kind)

    def visit(block: Sequence[Directive], depth: int) -> None:
        for d in block:
            if d.name == "access_log" and d.args and d.file:
                off = d.args[0] == "off"
                if depth == 0:
                    # The lab's own http-level log is already there: only "off" must go.
                    if off:
                        edits.append((d.file, d.line, "null"))
                else:
                    edits.append((d.file, d.line, "replace" if off else "beside"))
            if d.block is not None:
                visit(d.block, depth + (d.name != "http"))

    http = [d for d in tree if d.name == "http"]
    visit(http[0].block or () if http else (), 0)
    out = dict(files)
    # Directives name the file as shown (the host path); edits go to the container copy.
    container = {host: path for path, host in shown.items()}
    for file, line, kind in sorted(set(edits), key=lambda e: (e[0], -e[1])):
        where = f"{file}:{line}"

        def edit(code: str, kind: str = kind) -> str | None:
            match = _ACCESS_LOG.search(code)
            if match is None:
                return None
            if kind == "beside":
                return code[:match.end()] + " " + LAB_ACCESS_LOG + code[match.end():]
            # "off" would silence the lab's log of this level too.
            new = LAB_ACCESS_LOG if kind == "replace" else "access_log /dev/null;"
            return code[:match.start()] + new + code[match.end():]

        out[container[file]] = _edit_line(out[container[file]], line, edit, where)
        if kind != "beside":
            notes.append(f"{where}: access_log off: the lab logs these requests "
                         "(its checks read every request's log line)")
    return out


def _inject_http_log(text: str, http: Directive, where: str) -> str:
    """A whole nginx.conf: the lab's log format and log, on the line of ``http {``."""
    log = "\\t".join((ACCESS_LOG_TAG, *ACCESS_LOG_FIELDS))
    addition = f" log_format {LOG_FORMAT} '{log}'; {LAB_ACCESS_LOG}"

    def edit(code: str) -> str | None:
        index = code.find("{", code.find("http"))
        if index < 0:
            return None
        return code[:index + 1] + addition + code[index + 1:]

    return _edit_line(text, http.line, edit, where)


_USER = re.compile(r"\buser\b[^;]*;")
# The account Debian's nginx package creates, which the lab's image runs its workers as.
LAB_NGINX_USER = "www-data"


def _user_edit(text: str, tree: Sequence[Directive], main: str, notes: list[str]) -> str:
    """``user nginx;`` (the official image's account) names an account the lab's Debian image
    lacks, and NGINX refuses to start (getpwnam failed); which account the workers run as
    changes no routing, so the lab's copy names Debian's."""
    for d in tree:
        if d.name != "user" or d.file != main or d.args[:1] == (LAB_NGINX_USER,):
            continue
        where = f"{d.file}:{d.line}"

        def edit(code: str) -> str | None:
            match = _USER.search(code)
            if match is None:
                return None
            return code[:match.start()] + f"user {LAB_NGINX_USER};" + code[match.end():]

        text = _edit_line(text, d.line, edit, where)
        notes.append(f"{where}: user {' '.join(d.args)}: the lab's copy runs NGINX's workers as "
                     f"{LAB_NGINX_USER} (Debian's account for NGINX); the account changes no "
                     "routing")
    return text


def _split_address(address: str) -> tuple[str, int]:
    if address.startswith("["):
        host, _, port = address[1:].partition("]:")
        return host, int(port) if port.isdigit() else 80
    host, sep, port = address.rpartition(":")
    if not sep:
        return address, 80
    if not port.isdigit():
        raise ValueError(port)
    return host, int(port)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class _Server:
    """One ``server`` line of an upstream block, its address split."""

    directive: Directive
    block: str
    host: str
    port: int
    order: int                  # its place in the tree, in the order NGINX reads it

    @property
    def address(self) -> str:
        return self.directive.args[0]

    @property
    def where(self) -> str:
        return f"{self.directive.file}:{self.directive.line}"


def _upstream_servers(tree: Sequence[Directive]) -> dict[str, tuple[Directive, list[_Server]]]:
    """Upstream name -> (its block, its server lines), every address checked for what the
    lab can give a backend."""
    blocks: dict[str, tuple[Directive, list[_Server]]] = {}
    for http in (d for d in tree if d.name == "http"):
        for upstream in (d for d in http.block or () if d.name == "upstream" and d.args):
            servers: list[_Server] = []
            for server in (d for d in upstream.block or () if d.name == "server" and d.args):
                address = server.args[0]
                where = f"{server.file}:{server.line}"
                if address.startswith("unix:"):
                    raise ConfigError(f"{where}: upstream server {address}: a unix socket; the "
                                      "lab runs each backend in its own container",
                                      hint="name backends by host:port")
                if "$" in address:
                    raise ConfigError(f"{where}: upstream server {address}: a variable; the lab "
                                      "maps fixed host names and addresses only")
                try:
                    host, port = _split_address(address)
                except ValueError:
                    raise ConfigError(f"{where}: upstream server {address}: not host:port") \
                        from None
                if host in OTHER_NODES:
                    raise ConfigError(f"{where}: upstream server {address}: {host!r} is the "
                                      f"lab's own {host} node, not a backend")
                servers.append(_Server(server, upstream.args[0], host, port,
                                       sum(len(s) for _, s in blocks.values()) + len(servers)))
            blocks[upstream.args[0]] = (upstream, servers)
    return blocks


_NODE_NAME = re.compile(r"backend-[1-9]\d*")


def _aliasable(host: str, node: str) -> bool:
    """Whether Docker's DNS can answer ``host`` with ``node``'s container: a host name, and
    not another lab node's name."""
    return not _is_ip(host) and (not _NODE_NAME.fullmatch(host) or host == node)


@dataclass(frozen=True)
class _Backends:
    """How the upstream blocks' addresses become the lab's backends."""

    aliases: dict[str, list[str]]              # node -> host names resolving to it
    nodes: dict[str, str]                      # address (as written, and as rewritten) -> node
    port: int                                  # the port every backend listens on
    rewrites: tuple[tuple[_Server, str], ...]  # server lines whose address the copy replaces
    notes: tuple[str, ...]


def _backends(tree: Sequence[Directive], pool: str, replicas: int) -> _Backends:
    """The backend pool's distinct addresses as backend-1..N (in file order), the other
    blocks' servers as the same backends, and the lines whose address must be rewritten.

    A host name becomes a network alias of its backend (Docker's DNS answers it), and the
    line stays as written. An address Docker cannot alias is rewritten on its own line in the
    container copy to ``backend-N:PORT`` (line numbers stay the user's): an IP address (each
    lab has its own subnet, and 127.0.0.1 is NGINX's own loopback), a host already taken by
    another backend (``app:8081``, ``app:8082``: one host, several servers), and a port other
    than the pool's first (each backend container listens on one port: the reference backend
    reads one LAB_PORT, a contract's image one port_env). Rewriting keeps one mechanism for
    all of them; NGINX's choices (order, weights, failure counting) depend on the server
    lines, not on the numbers in them. Giving each backend its own port instead would
    change every consumer of the one backend port (plan, probes, the access-log address map)
    and still fail for a contract without port_env.
    """
    blocks = _upstream_servers(tree)
    if not any(servers for _, servers in blocks.values()):
        raise ConfigError("no upstream block names a server: the lab needs the backends "
                          "your NGINX proxies to", hint="add an upstream block")
    block, servers = blocks[pool]
    if not servers:
        raise ConfigError(f"{block.file}:{block.line}: upstream {pool}, the backend pool, "
                          "names no server")
    port = servers[0].port
    distinct = list(dict.fromkeys((s.host, s.port) for s in servers))
    if len(distinct) != replicas:
        listed = ", ".join(f"{h}:{p}" for h, p in distinct)
        raise ConfigError(
            f"{block.file}:{block.line}: upstream {pool}, the backend pool, names "
            f"{len(distinct)} backend address{'es' * (len(distinct) != 1)} ({listed}); the lab "
            f"runs {replicas} backends "
            "and maps each address to one",
            hint=f"set [backend] replicas = {len(distinct)} in lab.toml, or name only your "
            "backends in this upstream block")
    # A host already named like one of the lab's nodes keeps that node, so that its name
    # never resolves to two containers; the others take the free names in file order.
    names = [f"backend-{i}" for i in range(1, len(distinct) + 1)]
    node_of: dict[tuple[str, int], str] = {}
    for key in distinct:
        if key[0] in names and key[0] not in node_of.values():
            node_of[key] = key[0]
    free = iter(n for n in names if n not in node_of.values())
    for key in distinct:
        if key not in node_of:
            node_of[key] = next(free)
    host_node: dict[str, str] = {}
    rewritten: dict[tuple[str, int], str] = {}
    for key in distinct:
        node = node_of[key]
        host = key[0]
        taken = host_node.setdefault(host, node) != node
        if taken or not _aliasable(host, node) or key[1] != port:
            rewritten[key] = f"{node}:{port}"
    nodes: dict[str, str] = {}
    rewrites: list[tuple[_Server, str]] = []
    notes = [f"upstream {pool} ({block.file}:{block.line}) is the backend pool: "
             + ", ".join(f"{h}:{p} -> {node_of[(h, p)]}" for h, p in distinct)]
    for server in servers:
        key = (server.host, server.port)
        nodes[server.address] = node_of[key]
        if key in rewritten:
            rewrites.append((server, rewritten[key]))
    absent: list[tuple[str, Directive, _Server]] = []
    for name, (other, others) in blocks.items():
        if name == pool:
            continue
        reached: list[str] = []
        for server in others:
            key = (server.host, server.port)
            if key in node_of:
                node = node_of[key]
                new = rewritten.get(key)
            elif server.host in host_node:
                # The pool's hosts on another port (a websocket pool on the same servers): the
                # same backends, on the one port they listen on.
                node = host_node[server.host]
                new = f"{node}:{port}" if not _aliasable(server.host, node) \
                    or server.port != port else None
            else:
                # Another service (an auth API, a frontend): not part of the rehearsal. Its
                # servers point at a closed port of NGINX's own loopback, so NGINX starts (it
                # resolves every upstream host at start) and its locations answer 502 at once.
                absent.append((name, other, server))
                continue
            nodes[server.address] = node
            if new is not None:
                rewrites.append((server, new))
            reached.append(node)
        if reached:
            moved = [s for s in others if s.port != port]
            notes.append(f"upstream {name} ({other.file}:{other.line}) reaches "
                         f"{', '.join(dict.fromkeys(reached))}, the pool's backends"
                         + (f"; they listen on {port} only, so its port "
                            f"{', '.join(sorted({str(s.port) for s in moved}))} reads {port} in "
                            "the lab's copy" if moved else ""))
    rewrites += [(server, ABSENT_SERVICE) for _, _, server in absent]
    for name in dict.fromkeys(name for name, _, _ in absent):
        other = next(o for n, o, _ in absent if n == name)
        notes.append(f"upstream {name} ({other.file}:{other.line}) is another service, not the "
                     f"backend pool: the lab's copy points its servers at {ABSENT_SERVICE} "
                     "(nothing listens there), so NGINX starts and the locations proxying to it "
                     "answer 502")
    why: dict[tuple[str, str], list[tuple[_Server, str]]] = {}
    for server, new in rewrites:
        if new == ABSENT_SERVICE:
            continue
        reason = ("Docker names containers, it cannot give one your IP address"
                  if _is_ip(server.host) else
                  f"each backend container listens on one port, {port}"
                  if server.port != port else
                  "one host name cannot stand for several backend containers")
        why.setdefault((server.directive.file, reason), []).append((server, new))
        nodes[new] = nodes[server.address]
    for (file, reason), lines in why.items():
        notes.append(f"{file}: the lab's copy reads " + ", ".join(
            f"{new} for {server.address} (line {server.directive.line})"
            for server, new in lines) + f", on the same lines: {reason}")
    aliases: dict[str, list[str]] = {}
    for host, node in host_node.items():
        nodes.setdefault(host, node)
        if _aliasable(host, node) and host != node:
            aliases.setdefault(node, []).append(host)
    for node in node_of.values():
        nodes.setdefault(node, node)
        nodes.setdefault(f"{node}:{port}", node)
    return _Backends(aliases, nodes, port, tuple(rewrites), tuple(notes))


_SERVER_LINE = r"\bserver\s+(['\"]?){address}\1(?=[\s;])"


def _rewrite_servers(files: dict[str, str], rewrites: Sequence[tuple[_Server, str]],
                     shown: Mapping[str, str]) -> dict[str, str]:
    """The container copies with each rewritten server's address replaced on its own line."""
    out = dict(files)
    container = {host: path for path, host in shown.items()}
    by_line: dict[tuple[str, int], list[tuple[_Server, str]]] = {}
    for server, new in rewrites:
        by_line.setdefault((server.directive.file, server.directive.line), []).append(
            (server, new))
    for (file, line), edits in by_line.items():
        def edit(code: str, edits: list[tuple[_Server, str]] = edits) -> str | None:
            # Several servers may share a line (upstream u { server a; server b; }): each is
            # found after the previous one, in the order NGINX read them.
            position = 0
            for server, new in sorted(edits, key=lambda e: e[0].order):
                pattern = re.compile(_SERVER_LINE.format(address=re.escape(server.address)))
                match = pattern.search(code, position)
                if match is None:
                    return None
                start = match.start() + match.group(0).index(server.address)
                code = code[:start] + new + code[start + len(server.address):]
                position = start + len(new)
            return code

        where = f"{file}:{line}"
        try:
            out[container[file]] = _edit_line(out[container[file]], line, edit, where)
        except ConfigError:
            raise ConfigError(f"{where}: the lab cannot replace this server's address: write "
                              "the server directive on one line",
                              hint="the lab replaces an address on its own line, so that line "
                              "numbers stay yours") from None
    return out


def _listen_ports(tree: Sequence[Directive]) -> set[int]:
    ports: set[int] = set()
    for http in (d for d in tree if d.name == "http"):
        for server in (d for d in http.block or () if d.name == "server"):
            for listen in (d for d in server.block or () if d.name == "listen" and d.args):
                text = listen.args[0].rsplit(":", 1)[-1]
                if text.isdigit():
                    ports.add(int(text))
    return ports


def _walk(block: Sequence[Directive]):
    for d in block:
        yield d
        if d.block is not None:
            yield from _walk(d.block)


def unprovidable(tree: Sequence[Directive], shown: Mapping[str, str]) -> list[str]:
    """``file:line: directive: why`` for every directive the lab's NGINX cannot run."""
    return [f"{d.file}:{d.line}: {d.name}: {UNPROVIDABLE[d.name]}"
            for d in _walk(tree) if d.name in UNPROVIDABLE]


def user_nginx(config: Any, *, strict: bool = True) -> UserNginx | None:
    """The user's NGINX files ready to copy, or None when the lab renders its own; without
    ``strict``, directives the lab's NGINX cannot run are kept (``lab lint`` explains them)."""
    conf = config.nginx.conf
    if conf is None:
        return None
    path = _existing(conf, "[nginx] conf")
    if not path.is_file():
        raise ConfigError(f"[nginx] conf = {conf!r}: not a file")
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
    user_main = posixpath.join(NGINX_PREFIX, path.name)
    whole = _is_whole(path)
    if whole:
        main = user_main
    else:
        main = posixpath.join(NGINX_PREFIX, WRAPPER)
        if main in files:
            raise ConfigError(f"{folder / WRAPPER}: the lab's own file name; rename yours")
        files[main] = _wrapper(path.name)
        shown[main] = f"the lab's stand-in nginx.conf around {path}"
    tree = resolve_includes(files, main, shown=shown, missing_ok=True)
    refused = unprovidable(tree, shown)
    if refused and strict:
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
    notes: list[str] = []
    http = [d for d in tree if d.name == "http"]
    if whole:
        if len(http) != 1:
            raise ConfigError(f"{path}: a whole nginx.conf needs exactly one http block")
        if not any(d.name == "events" for d in tree):
            raise ConfigError(f"{path}: a whole nginx.conf without an events block: NGINX "
                              "refuses it (no \"events\" section in configuration)",
                              hint="add `events {}`, or give the lab only your server and "
                              "upstream blocks (a conf.d file)")
        if http[0].file != shown[user_main]:
            raise ConfigError(f"{http[0].file}:{http[0].line}: the lab adds its "
                              "access log in the http block; write it in the main file")
        files[user_main] = _inject_http_log(files[user_main], http[0],
                                            f"{path}:{http[0].line}")
        files[user_main] = _user_edit(files[user_main], tree, shown[user_main], notes)
    files = _log_edits(files, tree, set(files), notes, shown)
    if not any(servers for _, servers in _upstream_servers(tree).values()):
        raise ConfigError("no upstream block names a server: the lab needs the backends "
                          "your NGINX proxies to", hint="add an upstream block")
    # The backend pool is the block the traffic's "/" reaches (following a redirect to
    # HTTPS), or lab.toml's [nginx] upstream: read as NGINX will run it.
    static = policy_from_tree(tree, upstream=config.nginx.upstream)
    # The site's ports: 80 and 443 where it listens there, else the ports of the servers that
    # proxy (a site behind a cloud load balancer listens on 3000 or 9999); the lab publishes
    # those on 127.0.0.1 and sends its clients there.
    plain_port, tls_port = static.site_ports()
    if plain_port is None and tls_port is None:
        raise ConfigError(f"{path}: no server block proxies to an upstream on any port it "
                          "listens on: the lab's clients would reach no backend",
                          hint="proxy_pass to the upstream block of the backends")
    listening = _listen_ports(tree) | {p for p in (plain_port, tls_port) if p}
    for port_ in sorted(listening - {plain_port, tls_port}):
        notes.append(f"port {port_} is not published: the lab's clients use "
                     + " and ".join(str(p) for p in (plain_port, tls_port) if p))
    backends = _backends(tree, static.upstream.name, config.backend.replicas)
    files = _rewrite_servers(files, backends.rewrites, shown)
    notes += backends.notes
    tls_paths, copied = _files_named(tree, shown, folder)
    _certificates_named(tree)
    names = tls_server_names(tree)
    server_name = _client_name(names, config.nginx.server_name, bool(tls_paths))
    redirect = _followed_redirect(static, tree, server_name, plain_port) \
        if plain_port is not None else None
    if redirect is not None:
        notes.append(f"port {plain_port} redirects to {redirect}: the lab's clients follow it to "
                     f"port {tls_port} as {server_name} (SNI and Host), trusting the lab's CA")
    elif plain_port is None:
        notes.append(f"the site serves HTTPS only (port {tls_port}): the lab's clients ask for "
                     f"{server_name} there, trusting the lab's CA")
    if len(names) > 1:
        notes.append(f"the lab's certificate covers {', '.join(n for n, _ in names)}")
    return UserNginx(main, files, shown, {k: tuple(v) for k, v in backends.aliases.items()},
                     backends.nodes, backends.port, tls_paths, copied,
                     resolve_includes(files, main, shown=shown, missing_ok=True), tuple(notes),
                     server_name, tuple(n for n, _ in names), static.upstream.name, redirect,
                     plain_port, tls_port)


def _certificates_named(tree: Sequence[Directive]) -> None:
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


def _container_path(value: str) -> str:
    # NGINX resolves relative file paths against its conf prefix (the main file's folder).
    return value if posixpath.isabs(value) else posixpath.join(NGINX_PREFIX, value)


def _files_named(tree: Sequence[Directive], shown: Mapping[str, str],
                 folder: Path) -> tuple[dict[str, str], dict[str, bytes]]:
    tls: dict[str, str] = {}
    copied: dict[str, bytes] = {}
    for d in _walk(tree):
        where = f"{d.file}:{d.line}"
        if d.name in _TLS_FILES and d.args:
            if "$" in d.args[0]:
                raise ConfigError(f"{where}: {d.name} {d.args[0]}: a variable; the lab places "
                                  "its certificate at fixed paths")
            if d.args[0].startswith("data:"):
                continue
            tls[_container_path(d.args[0])] = _TLS_FILES[d.name]
        elif d.name in _OTHER_FILES and d.args and d.args[0] != "off":
            value = d.args[0]
            beside = folder / value if not os.path.isabs(value) else None
            if (beside is None or not beside.is_file()) and d.name == "ssl_dhparam":
                # Public parameters, not a secret: RFC 7919's ffdhe2048 group stands in for
                # the file (what Mozilla's TLS guidance ships as one).
                copied[_container_path(value)] = ffdhe2048_pem()
                continue
            if beside is None or not beside.is_file():
                raise ConfigError(f"{where}: {d.name} {value}: a file the lab cannot provide",
                                  hint="put it beside the conf and name it by a relative "
                                  "path, or remove the line (TLS 1.3 and ECDHE need no "
                                  "dhparam)")
            copied[_container_path(value)] = beside.read_bytes()
    return tls, copied


_UNNAMED = ("_", "", "localhost")


def tls_server_names(tree: Sequence[Directive]) -> tuple[tuple[str, str], ...]:
    """Every concrete name a TLS server block (``listen ... ssl``) answers to, with its
    file:line, in file order; wildcards, regexes and the catch-all ``_`` are no name a client
    can ask for."""
    named: dict[str, str] = {}
    for http in (d for d in tree if d.name == "http"):
        for server in (d for d in http.block or () if d.name == "server"):
            if not any("ssl" in d.args for d in server.block or () if d.name == "listen"):
                continue
            for d in (d for d in server.block or () if d.name == "server_name"):
                for name in d.args:
                    if name in _UNNAMED or name.startswith(("~", ".")) or "*" in name \
                            or "$" in name:
                        continue
                    named.setdefault(name.lower().rstrip("."), f"{d.file}:{d.line}")
    return tuple(named.items())


def _client_name(names: Sequence[tuple[str, str]], configured: str, tls: bool) -> str:
    """The name the lab's clients ask for (SNI and Host): lab.toml's [nginx] server_name when
    it is one of the TLS servers' names, else the first of those names.

    lab.toml's default name stands for "not given": a config travels between processes as
    JSON with every field filled in, so "given" cannot be told from "default" later, and the
    default can only be right for a file that names no TLS server."""
    from lab.config import NginxConfig

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


def _server_block(tree: Sequence[Directive], index: int) -> str:
    servers = [d for http in tree if http.name == "http" for d in http.block or ()
               if d.name == "server"]
    return servers[index].where if index < len(servers) else "nginx.conf"


# Conditions of an ``if`` that hold for every plain-HTTP request (crossplane hands ``if`` its
# condition without the parentheses, spaces between the words).
_PLAIN_HTTP = frozenset({"$scheme=http", "$scheme!=https", "$https=", "$https!=on",
                         "$http_x_forwarded_proto!=https"})
_REDIRECT_CODES = frozenset({"301", "302", "303", "307", "308"})


def _https_redirect_in(block: Sequence[Directive]) -> str | None:
    for d in block:
        if d.name == "return" and len(d.args) == 2 and d.args[0] in _REDIRECT_CODES \
                and d.args[1].startswith("https://"):
            return d.args[1]
        if d.name == "return" and len(d.args) == 1 and d.args[0].startswith("https://"):
            return d.args[0]
        if d.name == "rewrite" and len(d.args) == 3 and d.args[2] in ("permanent", "redirect") \
                and d.args[1].startswith("https://"):
            return d.args[1]
    return None


def plain_http_redirect(policy: NginxPolicy, tree: Sequence[Directive], path: str = "/",
                        port: int = 80, *, host: str | None = None) -> str | None:
    """Where a plain request for ``path`` on ``port`` (asking for ``host``) is redirected:
    ``NginxPolicy.redirects``, and a redirect inside ``if ($scheme = http)`` at server level,
    which the policy's reading misses (it looks for the parenthesised condition crossplane
    strips), or inside certbot's ``if ($host = NAME)`` for the name the clients ask for."""
    found = policy.redirects(path, port)
    index = policy.server_for(port)
    if found is not None or index is None or port in policy.servers[index].tls_ports:
        return found
    servers = [d for http in tree if http.name == "http" for d in http.block or ()
               if d.name == "server"]
    if index >= len(servers):
        return None
    asked = {f"$host={host.lower()}", f"$server_name={host.lower()}"} if host else set()
    for d in servers[index].block or ():
        condition = "".join(d.args).replace('"', "").replace("'", "")
        if d.name == "if" and d.block is not None and (condition in _PLAIN_HTTP
                                                       or condition.lower() in asked):
            found = _https_redirect_in(d.block)
            if found is not None:
                return found
    return None


def _followed_redirect(policy: NginxPolicy, tree: Sequence[Directive],
                       host: str, port: int = 80) -> str | None:
    """The redirect of "/" on the plain ``port`` the lab's clients (asking for ``host``)
    follow (to HTTPS on 443), None when it answers itself; ConfigError for one they cannot
    follow."""
    target = plain_http_redirect(policy, tree, port=port, host=host)
    if target is None:
        return None
    server = policy.server_for(port)
    where = _server_block(tree, server) if server is not None else "nginx.conf"
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


def user_nginx_policy(config: Any, user: UserNginx, *, path: str = "/"):
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


# -- PgBouncer ------------------------------------------------------------------------------


@dataclass(frozen=True)
class UserPgBouncer:
    """A user's pgbouncer.ini as the lab runs it."""

    ini: str
    source: str
    notes: tuple[str, ...] = field(default_factory=tuple)


_REFUSED_AUTH = {"hba": "needs an auth_hba_file the lab does not have",
                 "cert": "needs client certificates the lab does not issue",
                 "pam": "needs PAM in the pooler's container"}


def user_pgbouncer(config: Any) -> UserPgBouncer | None:
    """The user's pgbouncer.ini with the lab's database address and credentials substituted."""
    p, pg = config.pgbouncer, config.postgres
    if p.userlist is not None:
        _existing(p.userlist, "[pgbouncer] userlist")
    if p.ini is None:
        return None
    path = _existing(p.ini, "[pgbouncer] ini")
    text = path.read_text(encoding="utf-8")
    ini = read_ini(text, file=str(path))
    if not any(name == "pgbouncer" for name, _ in ini.sections):
        raise ConfigError(f"{path}: no [pgbouncer] section")
    databases = [e for e in ini.entries if e.section == "databases"]
    if not any(e.name in (pg.database, "*") for e in databases):
        names = ", ".join(e.name for e in databases) or "none"
        raise ConfigError(f"{path}: [databases] serves {names}, not the lab's database "
                          f"{pg.database!r}", hint=f"set [postgres] database = "
                          f"{databases[0].name!r} in lab.toml" if databases else
                          "add a [databases] entry")
    notes = ["[databases]: host, port, dbname, user and password are the lab's PostgreSQL's",
             "the userlist's credentials are the lab's own"]
    lines = text.split("\n")
    for entry in databases:
        try:
            words = shlex.split(entry.value)
        except ValueError as exc:
            raise ConfigError(f"{path} line {entry.line}: {exc}") from None
        kept = [w for w in words if w.partition("=")[0] not in
                ("host", "port", "dbname", "user", "password", "auth_user")]
        dbname = pg.database if entry.name != "*" else None
        lab = ["host=postgres", "port=5432", f"user={pg.user}"] + \
              ([f"dbname={dbname}"] if dbname else [])
        lines[entry.line - 1] = f"{entry.name} = {' '.join(lab + kept)}"
    settings = {e.name.lower(): e for e in ini.entries if e.section == "pgbouncer"}
    auth = settings.get("auth_type")
    if auth is not None and auth.value in _REFUSED_AUTH:
        raise ConfigError(f"{path} line {auth.line}: auth_type = {auth.value}: "
                          f"{_REFUSED_AUTH[auth.value]}", hint="use md5 or scram-sha-256")
    for name in ("auth_query", "auth_user", "auth_hba_file"):
        if name in settings:
            raise ConfigError(f"{path} line {settings[name].line}: {name}: the lab's PostgreSQL "
                              "has no such lookup; PgBouncer authenticates from the userlist")
    admins = [a.strip() for a in settings["admin_users"].value.split(",")] \
        if "admin_users" in settings else []
    stats = [a.strip() for a in settings["stats_users"].value.split(",")] \
        if "stats_users" in settings else []
    replaced = {
        "listen_addr": "0.0.0.0", "listen_port": str(PGBOUNCER_PORT),
        "auth_file": "/etc/pgbouncer/userlist.txt",
        "admin_users": ", ".join([a for a in admins if a] + [PGBOUNCER_ADMIN_USER]),
        "stats_users": ", ".join([a for a in stats if a] + [PGBOUNCER_ADMIN_USER]),
        # The container's log is PgBouncer's stderr; a log file's folder may not exist there.
        "logfile": "", "pidfile": "",
    }
    if auth is None or auth.value not in ("md5", "scram-sha-256", "plain", "trust", "any"):
        replaced["auth_type"] = "scram-sha-256"
    for name, value in replaced.items():
        if name in settings:
            lines[settings[name].line - 1] = f"{name} = {value}"
    missing = [f"{k} = {v}" for k, v in replaced.items() if k not in settings]
    if missing:
        # After the [pgbouncer] section's last setting (PgBouncer ignores a second section of
        # the same name): only lines of a later section move.
        last = max(e.line for e in ini.entries if e.section == "pgbouncer") \
            if settings else next(line for name, line in ini.sections if name == "pgbouncer")
        lines[last:last] = missing
        later = [name for name, line in ini.sections if line > last]
        if later:
            notes.append(f"{len(missing)} settings added at the end of [pgbouncer]: lines of "
                         f"[{later[0]}] and after move down by {len(missing)}")
    return UserPgBouncer("\n".join(lines) + "\n", str(path), tuple(notes))


# -- all of it ------------------------------------------------------------------------------


@dataclass(frozen=True)
class UserTopology:
    """What of the topology comes from the user's files, and the port the backends listen on."""

    nginx: UserNginx | None
    pgbouncer: UserPgBouncer | None
    backend_port: int
    user_backend: bool

    @property
    def notes(self) -> tuple[str, ...]:
        """What the lab changed in the user's files, or could not provide, one line each."""
        return (self.nginx.notes if self.nginx else ()) + \
            (self.pgbouncer.notes if self.pgbouncer else ())


def user_topology(config: Any) -> UserTopology:
    """The user's files read and checked (ConfigError naming file and line), without Docker."""
    nginx = user_nginx(config)
    pgbouncer = user_pgbouncer(config)
    contract = config.backend.contract
    if config.backend.build is not None:
        _existing(config.backend.build, "[backend] build")
    if nginx is not None:
        port = nginx.backend_port
        if contract is not None and contract.port_env is None and contract.port != port:
            raise ConfigError(f"the upstream servers listen on port {port} and the backend "
                              f"contract says port {contract.port}",
                              hint="make [backend.contract] port match the upstream, or name "
                              "the variable the image reads its port from (port_env)")
    elif contract is not None:
        port = contract.port
    else:
        from lab.topology.render import BACKEND_PORT

        port = BACKEND_PORT
    return UserTopology(nginx, pgbouncer, port, contract is not None)


def nginx_file_specs(user: UserNginx, tls: Any) -> tuple[Any, ...]:
    """The files of the nginx container for a user's configuration: theirs, the lab's TLS
    material at the paths they name (and at /etc/lab/tls, where the lab's probes read it)."""
    from lab.engine import FileSpec

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

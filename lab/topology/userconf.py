"""Your own configuration files, made runnable in the lab: ``[nginx] conf``, ``[pgbouncer] ini``.

Pure (no Docker): each function reads the files on this host, refuses what the lab cannot
provide with the file, line and reason (``ConfigError``), and returns what the topology
copies into the containers.

NGINX: a ``conf.d``-style file (``server``/``upstream`` blocks) runs inside the lab's stand-in
for Debian's stock nginx.conf (``worker_processes auto``, ``include`` of the file in ``http``),
a whole nginx.conf runs as it is. The file's folder is copied to ``/etc/lab/conf/``, so its
relative includes resolve as they do beside it. What the lab changes, each on the line it is
on (line numbers stay those of your file): its access log (``LABLOG`` lines on stdout, which
every check reads) beside yours, ``access_log off`` becoming that log, and nothing else. The
hosts the upstream blocks name become network aliases of the backends (the first host
backend-1, ...), the lab's TLS certificate, key and CA are placed at the paths the file names.

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

NGINX_PREFIX = "/etc/lab/conf"
WRAPPER = "lab-nginx.conf"          # the stand-in nginx.conf around a conf.d-style file
RENDERED_MAIN = "/etc/lab/nginx.conf"
LOG_FORMAT = "lab_history"
LAB_ACCESS_LOG = f"access_log /dev/stdout {LOG_FORMAT};"
OTHER_NODES = ("postgres", "pgbouncer", "redis", "nginx")
PUBLISHED_PORTS = (80, 443)

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
    "ntlm": _PLUS, "queue": _PLUS, "state": _PLUS,
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


def _upstream_hosts(tree: Sequence[Directive], shown: Mapping[str, str],
                    replicas: int) -> tuple[dict[str, list[str]], dict[str, str], int | None]:
    hosts: list[str] = []
    ports: dict[int, str] = {}
    nodes: dict[str, str] = {}
    for http in (d for d in tree if d.name == "http"):
        for upstream in (d for d in http.block or () if d.name == "upstream"):
            for server in (d for d in upstream.block or () if d.name == "server" and d.args):
                address = server.args[0]
                where = f"{server.file}:{server.line}"
                if address.startswith("unix:"):
                    raise ConfigError(f"{where}: upstream server {address}: a unix socket; the "
                                      "lab runs each backend in its own container",
                                      hint="name backends by host:port")
                try:
                    host, port = _split_address(address)
                except ValueError:
                    raise ConfigError(f"{where}: upstream server {address}: not host:port") \
                        from None
                try:
                    ipaddress.ip_address(host)
                except ValueError:
                    pass
                else:
                    raise ConfigError(
                        f"{where}: upstream server {address}: an IP address the lab cannot give "
                        "a backend (each lab has its own subnet)",
                        hint="name the backends by host name, e.g. backend-1.internal:3000")
                if host in OTHER_NODES:
                    raise ConfigError(f"{where}: upstream server {address}: {host!r} is the "
                                      f"lab's own {host} node, not a backend")
                if "$" in host:
                    raise ConfigError(f"{where}: upstream server {address}: a variable; the lab "
                                      "maps fixed host names only")
                if host not in hosts:
                    hosts.append(host)
                ports.setdefault(port, where)
    if not hosts:
        raise ConfigError("no upstream block names a server: the lab needs the backends "
                          "your NGINX proxies to", hint="add an upstream block")
    if len(hosts) != replicas:
        raise ConfigError(
            f"the upstream blocks name {len(hosts)} backend hosts ({', '.join(hosts)}); the lab "
            f"runs {replicas} backends and maps each host to one",
            hint=f"set [backend] replicas = {len(hosts)} in lab.toml, or name only your "
            "backends in upstream blocks")
    if len(ports) > 1:
        listed = ", ".join(f"{port} ({where})" for port, where in ports.items())
        raise ConfigError(f"the upstream servers use different ports: {listed}; the lab runs "
                          "one backend image listening on one port")
    aliases: dict[str, list[str]] = {}
    for index, host in enumerate(hosts, start=1):
        node = f"backend-{index}"
        if host != node:
            aliases.setdefault(node, []).append(host)
        nodes[host] = node
    port = next(iter(ports))
    for host, node in list(nodes.items()):
        nodes[f"{host}:{port}"] = node
    return aliases, nodes, port


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
        if http[0].file != shown[user_main]:
            raise ConfigError(f"{http[0].file}:{http[0].line}: the lab adds its "
                              "access log in the http block; write it in the main file")
        files[user_main] = _inject_http_log(files[user_main], http[0],
                                            f"{path}:{http[0].line}")
    files = _log_edits(files, tree, set(files), notes, shown)
    aliases, nodes, port = _upstream_hosts(tree, shown, config.backend.replicas)
    listening = _listen_ports(tree)
    if 80 not in listening:
        raise ConfigError(f"{path}: no server listens on port 80; the lab sends its traffic to "
                          "NGINX's port 80 (and HTTPS to 443)",
                          hint="add `listen 80;` to the server that proxies to the backends")
    for port_ in sorted(listening - set(PUBLISHED_PORTS)):
        notes.append(f"port {port_} is not published: the lab reaches NGINX on 80 and 443 only")
    tls_paths, copied = _files_named(tree, shown, folder)
    _check_server_names(tree, shown, config.nginx.server_name, bool(tls_paths))
    return UserNginx(main, files, shown, {k: tuple(v) for k, v in aliases.items()}, nodes,
                     port or 80, tls_paths, copied,
                     resolve_includes(files, main, shown=shown, missing_ok=True), tuple(notes))


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
            if beside is None or not beside.is_file():
                raise ConfigError(f"{where}: {d.name} {value}: a file the lab cannot provide",
                                  hint="put it beside the conf and name it by a relative "
                                  "path, or remove the line (TLS 1.3 and ECDHE need no "
                                  "dhparam)")
            copied[_container_path(value)] = beside.read_bytes()
    return tls, copied


def _check_server_names(tree: Sequence[Directive], shown: Mapping[str, str], name: str,
                        tls: bool) -> None:
    named: list[tuple[str, str]] = []
    for http in (d for d in tree if d.name == "http"):
        for server in (d for d in http.block or () if d.name == "server"):
            ssl = any("ssl" in d.args for d in server.block or () if d.name == "listen")
            for d in (d for d in server.block or () if d.name == "server_name"):
                if ssl:
                    named += [(a, f"{d.file}:{d.line}") for a in d.args]
    concrete = [(a, w) for a, w in named if a not in ("_", "", "localhost")
                and not a.startswith(("~", "*", ".")) and "*" not in a]
    if tls and concrete and name not in {a for a, _ in concrete}:
        first, where = concrete[0]
        raise ConfigError(f"{where}: the TLS server is named {first!r}, and lab.toml's "
                          f"[nginx] server_name is {name!r}: the lab's certificate is issued "
                          "for lab.toml's name", hint=f"set [nginx] server_name = {first!r}")


def user_nginx_policy(config: Any, user: UserNginx, *, path: str = "/"):
    """The policy of the user's files as they would run (static; no nginx -T)."""
    return policy_from_tree(user.tree, path=path, nodes=user.nodes,
                            upstream=config.nginx.upstream)


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

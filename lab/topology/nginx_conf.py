"""The policy NGINX really runs, read back from its configuration.

The text is either one nginx.conf (the rendered one) or what ``nginx -T`` prints in the
running container: every file NGINX loaded, each after a ``# configuration file PATH:`` line.
crossplane (the maintained ``nginx-crossplane`` fork) lexes and parses each file into a
syntax tree; includes are resolved here against the files the dump holds, because a dump is
exactly what NGINX loaded (globs already expanded, absolute paths of the container).
What the directives *mean* (inheritance from http to server to location, time units, the
longest-prefix location, limit_req's stored rate) is the lab's own reading below, since no
parser gives semantics.

Checks derive their expectations from this, not from ``LabConfig``: a hand-edited,
user-supplied or deliberately broken nginx.conf then yields the expectations of what NGINX
actually loads. Where a directive is absent, NGINX's own default applies (nginx 1.22,
docs/semantics.md §1)::

    max_fails 1, fail_timeout 10s, proxy_connect_timeout 60s, proxy_read_timeout 60s,
    proxy_next_upstream "error timeout", worker_processes 1, limit_req_status 503

Only what the checks need is interpreted; the rest is parsed (so that an unbalanced brace or
an unterminated quote is still an error) and otherwise ignored.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import posixpath
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import crossplane

from lab.errors import ConfigError
from lab.expectations import (
    LocationPolicy,
    NginxPolicy,
    RateLimitRule,
    ServerPolicy,
    UpstreamPolicy,
    UpstreamServer,
)

DEFAULT_MAX_FAILS = 1
DEFAULT_FAIL_TIMEOUT_S = 10.0
DEFAULT_CONNECT_TIMEOUT_S = 60.0
DEFAULT_READ_TIMEOUT_S = 60.0
DEFAULT_NEXT_UPSTREAM = ("error", "timeout")
DEFAULT_WORKER_PROCESSES = 1
DEFAULT_LIMIT_REQ_STATUS = 503

_HINT = "render nginx.conf from lab.toml again, or fix the directive named above"
_DUMP_HEADER = re.compile(r"^# configuration file (.+):$", re.MULTILINE)


# --- syntax tree --------------------------------------------------------------------------


@dataclass(frozen=True)
class Directive:
    """One directive of the tree: its name, arguments, where it is written, and its block."""

    name: str
    args: tuple[str, ...]
    line: int
    block: tuple[Directive, ...] | None = None
    file: str = ""

    @property
    def where(self) -> str:
        """``file:line`` (or ``line N`` for text without a file name)."""
        return f"{self.file}:{self.line}" if self.file else f"line {self.line}"


_Directive = Directive


def _tree(payload: Sequence[Mapping], file: str) -> tuple[Directive, ...]:
    return tuple(Directive(d["directive"], tuple(d.get("args", ())), d["line"],
                           _tree(d["block"], file) if "block" in d else None, file)
                 for d in payload if d["directive"] != "#")


def _crossplane_error(error: Mapping, shown: str) -> ConfigError:
    # crossplane appends " in FILE:LINE"; the lab names the file the user knows.
    message = re.sub(r" in \S+:\d+$", "", str(error.get("error", "parse error")))
    return ConfigError(f"{shown}:{error.get('line', '?')}: {message}", hint=_HINT)


def parse_file_text(text: str, file: str = "nginx.conf", *, shown: str | None = None
                    ) -> tuple[Directive, ...]:
    """One file's directives (its includes left unresolved); ConfigError on a syntax error."""
    payload = crossplane.parse_string(text, filename=file, single=True, check_ctx=False,
                                      check_args=False, catch_errors=False)
    config = payload["config"][0]
    if payload["errors"] or config["errors"]:
        raise _crossplane_error((payload["errors"] or config["errors"])[0], shown or file)
    return _tree(config["parsed"], shown or file)


def split_dump(text: str) -> dict[str, str]:
    """``nginx -T`` output as {path: content}, in the order NGINX loaded the files."""
    heads = list(_DUMP_HEADER.finditer(text))
    files: dict[str, str] = {}
    for index, head in enumerate(heads):
        end = heads[index + 1].start() if index + 1 < len(heads) else len(text)
        # nginx separates files with one blank line after each file's content.
        body = text[head.end() + 1:end]
        files[head.group(1)] = body[:-1] if body.endswith("\n\n") else body
    return files


def is_dump(text: str) -> bool:
    """Whether ``text`` is ``nginx -T`` output rather than one nginx.conf."""
    return _DUMP_HEADER.search(text) is not None and text.lstrip().startswith("# configuration")


def resolve_includes(files: Mapping[str, str], main: str, *,
                     shown: Mapping[str, str] | None = None,
                     missing_ok: bool = False) -> tuple[Directive, ...]:
    """The main file's tree with every ``include`` replaced by the included files' directives.

    Relative include paths are relative to the main file's folder (NGINX's conf prefix when
    started with ``-c``). An include that names no file in ``files`` is an error, except with
    ``missing_ok`` for absolute paths (left to the image: ``/etc/nginx/mime.types``)."""
    shown = shown or {}
    prefix = posixpath.dirname(main)
    parsed: dict[str, tuple[Directive, ...]] = {}

    def tree_of(path: str) -> tuple[Directive, ...]:
        if path not in parsed:
            parsed[path] = parse_file_text(files[path], path, shown=shown.get(path))
        return parsed[path]

    def expand(block: Sequence[Directive], stack: tuple[str, ...]) -> tuple[Directive, ...]:
        out: list[Directive] = []
        for d in block:
            if d.name == "include" and d.args:
                pattern = d.args[0]
                absolute = posixpath.isabs(pattern)
                target = pattern if absolute else posixpath.normpath(
                    posixpath.join(prefix, pattern))
                if glob.has_magic(target):
                    matched = sorted(p for p in files if fnmatch.fnmatchcase(p, target))
                else:
                    matched = [target] if target in files else []
                if not matched and not glob.has_magic(target):
                    if missing_ok and absolute:
                        continue
                    raise ConfigError(f"{d.where}: include {pattern}: no such file",
                                      hint="includes are resolved relative to the main file's "
                                      "folder")
                for path in matched:
                    if path in stack:
                        raise ConfigError(f"{d.where}: include {pattern} includes itself")
                    out.extend(expand(tree_of(path), (*stack, path)))
                continue
            if d.block is not None:
                d = Directive(d.name, d.args, d.line, expand(d.block, stack), d.file)
            out.append(d)
        return tuple(out)

    return expand(tree_of(main), (main,))


def read_tree(text: str) -> tuple[Directive, ...]:
    """The whole configuration tree of one nginx.conf or of an ``nginx -T`` dump."""
    if is_dump(text):
        files = split_dump(text)
        return resolve_includes(files, next(iter(files)))
    return parse_file_text(text, "", shown="nginx.conf")


def read_host_files(main: str | os.PathLike[str]) -> dict[str, str]:
    """A configuration on this host: the main file and every file its relative includes name
    (relative to the main file's folder), as {path: text}. Absolute includes are left to the
    image NGINX runs in (``/etc/nginx/mime.types``)."""
    main = os.path.abspath(main)
    files: dict[str, str] = {}
    prefix = os.path.dirname(main)

    def visit(path: str) -> None:
        if path in files:
            return
        with open(path, encoding="utf-8") as handle:
            files[path] = handle.read()
        for d in _walk(parse_file_text(files[path], path)):
            if d.name != "include" or not d.args or os.path.isabs(d.args[0]):
                continue
            pattern = os.path.join(prefix, d.args[0])
            for found in sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]:
                if os.path.isfile(found):
                    visit(os.path.normpath(found))
                else:
                    raise ConfigError(f"{d.where}: include {d.args[0]}: no such file "
                                      f"({found})", hint="includes are resolved relative to "
                                      "the main file's folder")

    visit(main)
    return files


def _walk(block: Sequence[Directive]) -> Iterator[Directive]:
    for d in block:
        yield d
        if d.block is not None:
            yield from _walk(d.block)


def walk(block: Sequence[Directive]) -> Iterator[Directive]:
    """Every directive of a tree, depth first."""
    return _walk(block)


def _children(block: Sequence[_Directive] | None, name: str) -> list[_Directive]:
    return [d for d in (block or ()) if d.name == name]


def _last(block: Sequence[_Directive] | None, name: str) -> _Directive | None:
    found = _children(block, name)
    return found[-1] if found else None


# --- values -------------------------------------------------------------------------------

# nginx's ngx_parse_time units; a bare number is seconds.
_TIME_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0,
               "M": 2592000.0, "y": 31536000.0}
_TIME_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|M|y)?")


def parse_time_s(value: str, *, where: str = "time") -> float:
    """An nginx time value ("500ms", "10s", "1m30s", "5") in seconds; ConfigError otherwise."""
    pos, total = 0, 0.0
    if not value:
        raise ConfigError(f"{where}: empty time value", hint=_HINT)
    while pos < len(value):
        match = _TIME_PART.match(value, pos)
        if match is None:
            raise ConfigError(f"{where}: invalid time value {value!r}", hint=_HINT)
        number, unit = match.groups()
        if unit is None and match.end() != len(value):
            raise ConfigError(f"{where}: invalid time value {value!r}", hint=_HINT)
        total += int(number) * _TIME_UNITS[unit or "s"]
        pos = match.end()
    return total


def _int(value: str, where: str, *, minimum: int = 0) -> int:
    if not value.isdigit() or int(value) < minimum:
        raise ConfigError(f"{where}: expected an integer >= {minimum}, got {value!r}",
                          hint=_HINT)
    return int(value)


def _rate_per_s(value: str, where: str) -> float:
    match = re.fullmatch(r"(\d+)r/([sm])", value)
    if match is None:
        raise ConfigError(f"{where}: invalid rate {value!r} (want N r/s or N r/m)",
                          hint=_HINT)
    milli = int(match.group(1)) * 1000
    if match.group(2) == "m":
        # nginx stores milli-requests per second as an integer: the remainder is lost.
        milli //= 60
    if milli <= 0:
        raise ConfigError(f"{where}: rate {value!r} is zero", hint=_HINT)
    return milli / 1000


# --- policy extraction --------------------------------------------------------------------


def _upstream_server(directive: _Directive, nodes: Mapping[str, str]) -> UpstreamServer:
    where = f"{directive.where}: server"
    if not directive.args:
        raise ConfigError(f"{where}: missing address", hint=_HINT)
    address = directive.args[0]
    host = address.rsplit(":", 1)[0] if ":" in address and not address.startswith("unix:") \
        else address
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    max_fails, fail_timeout, backup, down = DEFAULT_MAX_FAILS, DEFAULT_FAIL_TIMEOUT_S, False, False
    weight, max_conns = 1, 0
    for param in directive.args[1:]:
        key, _, value = param.partition("=")
        if key == "max_fails":
            max_fails = _int(value, f"{where} max_fails")
        elif key == "fail_timeout":
            fail_timeout = parse_time_s(value, where=f"{where} fail_timeout")
        elif key == "weight":
            weight = _int(value, f"{where} weight", minimum=1)
        elif key == "max_conns":
            max_conns = _int(value, f"{where} max_conns")
        elif key == "slow_start":
            parse_time_s(value, where=f"{where} slow_start")
        elif param == "backup":
            backup = True
        elif param == "down":
            down = True
        elif param in ("resolve",) or key in ("route", "service"):
            pass
        else:
            raise ConfigError(f"{where}: unknown parameter {param!r}", hint=_HINT)
    # A user's upstream names hosts (backend-1.internal:3000) or addresses; the checks want
    # nodes.
    node = nodes.get(address) or nodes.get(host) or host
    return UpstreamServer(node, address, weight, max_fails, fail_timeout, backup, down,
                          max_conns)


_BALANCERS = {"least_conn": "least_conn", "ip_hash": "ip_hash", "hash": "hash",
              "random": "random", "least_time": "least_time"}


def _upstream_policy(name: str, block: Sequence[_Directive], scope: _Scope, location: str, *,
                     worker_processes: int,
                     nodes: Mapping[str, str] | None = None) -> UpstreamPolicy:
    members = tuple(_upstream_server(d, nodes or {}) for d in _children(block, "server"))
    if not members:
        raise ConfigError(f"nginx.conf: upstream {name!r} has no server", hint=_HINT)
    primary = [s for s in members if not s.backup and not s.down]
    # The group's values are the first primary server's; each server keeps its own in
    # ``members`` (UpstreamPolicy.peer), which is what the checks read for one backend.
    first = primary[0] if primary else members[0]
    balancing, hash_key = "round_robin", ""
    for directive in block:
        if directive.name in _BALANCERS:
            balancing = _BALANCERS[directive.name]
            if directive.name == "hash" and directive.args:
                hash_key = directive.args[0]
    keepalive = _last(block, "keepalive")
    return UpstreamPolicy(
        name=name,
        servers=tuple(s.node for s in primary),
        max_fails=first.max_fails,
        fail_timeout_s=first.fail_timeout_s,
        connect_timeout_s=scope.connect_timeout_s,
        read_timeout_s=scope.read_timeout_s,
        next_upstream=scope.next_upstream,
        zone=_last(block, "zone") is not None,
        worker_processes=worker_processes,
        balancing=balancing,
        next_upstream_tries=scope.tries,
        backup_servers=tuple(s.node for s in members if s.backup and not s.down),
        members=members,
        next_upstream_timeout_s=scope.next_upstream_timeout_s,
        location=location,
        keepalive=_int(_one_arg(keepalive), f"{keepalive.where}: keepalive")
        if keepalive is not None else 0,
        http_version=scope.http_version,
        connection_header=scope.connection_header,
        hash_key=hash_key,
    )


@dataclass(frozen=True)
class _Scope:
    """Directive values inherited from http -> server -> location (nginx's merge rule)."""

    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S
    next_upstream: tuple[str, ...] = DEFAULT_NEXT_UPSTREAM
    tries: int = 0
    next_upstream_timeout_s: float = 0.0
    http_version: str = "1.0"
    connection_header: str | None = None
    limit_req: tuple[_Directive, ...] = ()
    headers: tuple[_Directive, ...] = ()

    def enter(self, block: Sequence[_Directive]) -> _Scope:
        connect, read = self.connect_timeout_s, self.read_timeout_s
        if (d := _last(block, "proxy_connect_timeout")) is not None:
            connect = parse_time_s(_one_arg(d), where=f"{d.where}: proxy_connect_timeout")
        if (d := _last(block, "proxy_read_timeout")) is not None:
            read = parse_time_s(_one_arg(d), where=f"{d.where}: proxy_read_timeout")
        next_upstream = self.next_upstream
        if (d := _last(block, "proxy_next_upstream")) is not None:
            if not d.args:
                raise ConfigError(f"{d.where}: proxy_next_upstream needs a value",
                                  hint=_HINT)
            next_upstream = () if d.args == ("off",) else d.args
        tries = self.tries
        if (d := _last(block, "proxy_next_upstream_tries")) is not None:
            tries = _int(_one_arg(d), f"{d.where}: proxy_next_upstream_tries")
        retry_timeout = self.next_upstream_timeout_s
        if (d := _last(block, "proxy_next_upstream_timeout")) is not None:
            retry_timeout = parse_time_s(_one_arg(d),
                                         where=f"{d.where}: proxy_next_upstream_timeout")
        version = self.http_version
        if (d := _last(block, "proxy_http_version")) is not None:
            version = _one_arg(d)
        # proxy_set_header, limit_req and add_header are inherited only when the level
        # defines none of its own.
        connection = self.connection_header
        set_headers = _children(block, "proxy_set_header")
        if set_headers:
            connection = next((d.args[1] for d in reversed(set_headers)
                               if len(d.args) == 2 and d.args[0].lower() == "connection"), None)
        limit_req = tuple(_children(block, "limit_req")) or self.limit_req
        headers = tuple(_children(block, "add_header")) or self.headers
        return _Scope(connect, read, next_upstream, tries, retry_timeout, version, connection,
                      limit_req, headers)


def _one_arg(directive: _Directive) -> str:
    if len(directive.args) != 1:
        raise ConfigError(f"{directive.where}: {directive.name} takes one value",
                          hint=_HINT)
    return directive.args[0]


_MODIFIERS = ("=", "^~", "~", "~*")
_REDIRECT_CODES = {"301", "302", "303", "307", "308"}


@dataclass(frozen=True)
class _Location:
    prefix: str
    scope: _Scope
    proxy_pass: str | None
    regex: bool = False
    modifier: str = ""
    redirect: str | None = None
    where: str = ""
    fallback: str | None = None      # try_files' named location (@api), taken when no file


def _redirect_of(block: Sequence[_Directive]) -> str | None:
    """The URL a ``return 3xx URL`` (or a permanent/redirect ``rewrite``) directly in this
    block sends every request to, if any."""
    for d in block:
        if d.name == "return" and len(d.args) == 2 and d.args[0] in _REDIRECT_CODES:
            return d.args[1]
        if d.name == "return" and len(d.args) == 1 and d.args[0].startswith(("http://",
                                                                            "https://")):
            return d.args[0]
        if (d.name == "rewrite" and len(d.args) == 3 and d.args[2] in ("permanent", "redirect")
                and d.args[1].startswith("https://")):
            return d.args[1]
    return None


def _http_redirect(block: Sequence[_Directive]) -> str | None:
    """A server's redirect of plain HTTP: a server-level ``return``, or one inside
    ``if ($scheme = http)`` / ``if ($scheme != https)`` / ``if ($https = "")``."""
    direct = _redirect_of(block)
    if direct is not None:
        return direct
    for d in block:
        if d.name != "if" or d.block is None:
            continue
        # crossplane hands the condition without its parentheses: ['$scheme', '=', 'http'].
        condition = "".join(d.args).replace('"', "").replace("'", "").replace(" ", "")
        condition = condition.removeprefix("(").removesuffix(")")
        if condition in ("$scheme=http", "$scheme!=https", "$https=",
                         "$http_x_forwarded_proto!=https", "$https!=on"):
            found = _redirect_of(d.block)
            if found is not None and found.startswith("https://"):
                return found
    return None


def _locations(block: Sequence[_Directive], scope: _Scope) -> Iterator[_Location]:
    for directive in block:
        if directive.name != "location" or directive.block is None:
            continue
        if not directive.args:
            raise ConfigError(f"{directive.where}: location without a path",
                              hint=_HINT)
        inner = scope.enter(directive.block)
        proxy = _last(directive.block, "proxy_pass")
        # Modifiers (=, ^~, ~, ~*) precede the path; regex locations keep their pattern.
        prefix = directive.args[-1]
        modifier = directive.args[0] if len(directive.args) > 1 and \
            directive.args[0] in _MODIFIERS else ("@" if prefix.startswith("@") else "")
        regex = modifier in ("~", "~*")
        tried = _last(directive.block, "try_files")
        fallback = tried.args[-1] if tried is not None and tried.args and \
            tried.args[-1].startswith("@") else None
        yield _Location(prefix, inner, _one_arg(proxy) if proxy is not None else None, regex,
                        modifier, _redirect_of(directive.block), directive.where, fallback)
        yield from _locations(directive.block, inner)


def _headers(
    directives: Sequence[_Directive],
) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    pairs: list[tuple[str, str]] = []
    always: list[str] = []
    for d in directives:
        if len(d.args) not in (2, 3) or (len(d.args) == 3 and d.args[2] != "always"):
            raise ConfigError(f"{d.where}: add_header takes a name, a value and "
                              "an optional 'always'", hint=_HINT)
        pairs.append((d.args[0], d.args[1]))
        if len(d.args) == 3:
            always.append(d.args[0])
    return tuple(pairs), tuple(always)


def _limit_rules(location: _Location, zones: dict[str, tuple[float, str]]) -> list[RateLimitRule]:
    rules = []
    for d in location.scope.limit_req:
        zone, burst, nodelay, delay = None, 0, False, 0
        for arg in d.args:
            key, _, value = arg.partition("=")
            if key == "zone":
                zone = value
            elif key == "burst":
                burst = _int(value, f"{d.where}: limit_req burst")
            elif key == "delay":
                delay = _int(value, f"{d.where}: limit_req delay")
            elif arg == "nodelay":
                nodelay = True
            else:
                raise ConfigError(f"{d.where}: limit_req: unknown parameter {arg!r}",
                                  hint=_HINT)
        if zone is None:
            raise ConfigError(f"{d.where}: limit_req without zone=", hint=_HINT)
        if zone not in zones:
            raise ConfigError(f"{d.where}: limit_req zone {zone!r} is not defined "
                              "by any limit_req_zone", hint=_HINT)
        rate, key = zones[zone]
        rules.append(RateLimitRule(zone, location.prefix, rate, burst, nodelay, delay, key))
    return rules


def _limit_zones(http: Sequence[_Directive]) -> dict[str, tuple[float, str]]:
    zones: dict[str, tuple[float, str]] = {}
    for d in _children(http, "limit_req_zone"):
        name, rate = None, None
        key = d.args[0] if d.args else ""
        for arg in d.args[1:]:
            k, _, value = arg.partition("=")
            if k == "zone":
                name = value.split(":", 1)[0]
            elif k == "rate":
                rate = _rate_per_s(value, f"{d.where}: limit_req_zone rate")
        if not key or name is None or rate is None:
            raise ConfigError(f"{d.where}: limit_req_zone needs a key, zone= "
                              "and rate=", hint=_HINT)
        zones[name] = (rate, key)
    return zones


def _worker_processes(main: Sequence[_Directive]) -> int:
    d = _last(main, "worker_processes")
    if d is None:
        return DEFAULT_WORKER_PROCESSES
    value = _one_arg(d)
    if value == "auto":
        # nginx starts one worker per CPU it can see; containers see the host's CPUs.
        return os.cpu_count() or 1
    return _int(value, f"{d.where}: worker_processes", minimum=1)


def _best_location(locations: Sequence[_Location], path: str) -> _Location | None:
    # Longest matching prefix wins (regex and named locations are not needed by the lab).
    best = None
    for location in locations:
        if (location.regex or location.prefix.startswith("@")
                or not path.startswith(location.prefix)):
            continue
        if best is None or len(location.prefix) > len(best.prefix):
            best = location
    return best


def _listen_ports(block: Sequence[_Directive]) -> tuple[tuple[int, ...], tuple[int, ...],
                                                         tuple[int, ...]]:
    ports, tls, default = [], [], []
    for d in _children(block, "listen"):
        if not d.args:
            continue
        text = d.args[0].rsplit(":", 1)[-1] if not d.args[0].startswith("unix:") else ""
        if not text.isdigit():
            if d.args[0].startswith("["):
                continue
            text = "80" if not text else text
            if not text.isdigit():
                continue
        port = int(text)
        ports.append(port)
        if "ssl" in d.args[1:]:
            tls.append(port)
        if "default_server" in d.args[1:] or "default" in d.args[1:]:
            default.append(port)
    return tuple(ports) or (80,), tuple(tls), tuple(default)


def _target(proxy_pass: str) -> str:
    return re.sub(r"^(https?|grpcs?)://", "", proxy_pass).split("/", 1)[0]


def parse_nginx_policy(text: str, *, path: str = "/",
                       nodes: Mapping[str, str] | None = None,
                       upstream: str | None = None) -> NginxPolicy:
    """The typed policy of one nginx.conf or an ``nginx -T`` dump; timeouts are those in force
    for ``path``; ``nodes`` maps upstream addresses (``host:port`` or ``host``) to node names;
    ``upstream`` names the backend pool (default: the group ``path`` is proxied to)."""
    return policy_from_tree(read_tree(text), path=path, nodes=nodes, upstream=upstream)


def pool_upstream(main: Sequence[Directive], *, path: str = "/") -> str | None:
    """The name of the upstream block a request for ``path`` is proxied to (following a
    redirect of plain HTTP to HTTPS), or the only upstream block; None when neither."""
    try:
        policy = policy_from_tree(main, path=path)
    except ConfigError:
        return None
    return policy.upstream.name


def policy_from_tree(main: Sequence[Directive], *, path: str = "/",
                     nodes: Mapping[str, str] | None = None,
                     upstream: str | None = None) -> NginxPolicy:
    """The typed policy of a configuration tree whose includes are resolved."""
    http_blocks = [d for d in _children(main, "http") if d.block is not None]
    if len(http_blocks) != 1:
        raise ConfigError("nginx.conf: expected exactly one http { } block", hint=_HINT)
    http = http_blocks[0].block or ()
    http_scope = _Scope().enter(http)
    zones = _limit_zones(http)
    upstreams = {d.args[0]: d.block for d in _children(http, "upstream")
                 if d.args and d.block is not None}
    if not upstreams:
        raise ConfigError("nginx.conf: no upstream block", hint=_HINT)
    workers = _worker_processes(main)

    servers: list[ServerPolicy] = []
    rules: list[RateLimitRule] = []
    located: list[LocationPolicy] = []
    for index, server in enumerate(_children(http, "server")):
        block = server.block or ()
        scope = http_scope.enter(block)
        pairs, always = _headers(scope.headers)
        listen = tuple(" ".join(d.args) for d in _children(block, "listen"))
        names = tuple(a for d in _children(block, "server_name") for a in d.args)
        ports, tls_ports, default_ports = _listen_ports(block)
        servers.append(ServerPolicy(listen, bool(tls_ports), names, pairs, always, ports,
                                    tls_ports, default_ports, _http_redirect(block)))
        own = list(_locations(block, scope))
        named = {loc.prefix: loc for loc in own if loc.prefix.startswith("@")}
        for location in own:
            for rule in _limit_rules(location, zones):
                if rule not in rules:
                    rules.append(rule)
            if location.proxy_pass is None and location.fallback in named:
                # try_files falls through to its named location when no file matches, and the
                # lab's NGINX has none of the site's files: the named location answers.
                fallback = named[location.fallback]
                location = _Location(location.prefix, fallback.scope, fallback.proxy_pass,
                                     location.regex, location.modifier, fallback.redirect,
                                     location.where)
            target = _target(location.proxy_pass) if location.proxy_pass else None
            policy = None
            if target is not None and target in upstreams:
                policy = _upstream_policy(target, upstreams[target], location.scope,
                                          location.prefix, worker_processes=workers,
                                          nodes=nodes)
            located.append(LocationPolicy(index, location.modifier, location.prefix, policy,
                                          target, location.redirect, location.where))
    partial = NginxPolicy(_placeholder(), tuple(rules), 0, tuple(servers), tuple(located),
                          tuple(upstreams))
    if upstream is not None:
        if upstream not in upstreams:
            raise ConfigError(f"[nginx] upstream = {upstream!r}: no such upstream block "
                              f"(blocks: {', '.join(upstreams)})", hint=_HINT)
        found = partial.upstream_for(path)
        pool = found if found is not None and found.name == upstream else next(
            (loc.upstream for loc in located if loc.upstream is not None
             and loc.upstream.name == upstream), None) or _upstream_policy(
            upstream, upstreams[upstream], http_scope, "", worker_processes=workers,
            nodes=nodes)
    else:
        pool = partial.upstream_for(path)
        reached = partial.location_for(path, partial.client_port(path))
        if pool is None and reached is not None and reached.proxied is not None:
            raise ConfigError(f"{reached.where}: proxy_pass names {reached.proxied!r}, which is "
                              "no upstream block: NGINX proxies it to that one address, with "
                              "nothing to fail over to", hint="proxy to an upstream block of "
                              "the backends")
        if pool is None:
            proxied = {loc.upstream.name for loc in located if loc.upstream is not None}
            if len(upstreams) == 1 or len(proxied) == 1:
                name = next(iter(proxied)) if len(proxied) == 1 else next(iter(upstreams))
                pool = next((loc.upstream for loc in located if loc.upstream is not None
                             and loc.upstream.name == name), None) or _upstream_policy(
                    name, upstreams[name], http_scope, "", worker_processes=workers,
                    nodes=nodes)
            else:
                raise ConfigError(f"nginx.conf: no location proxies {path!r} and there are "
                                  f"several upstreams to choose from ({', '.join(upstreams)})",
                                  hint="name the backend pool in lab.toml: [nginx] upstream = "
                                  "\"NAME\"")
    status = DEFAULT_LIMIT_REQ_STATUS
    if (d := _last(http, "limit_req_status")) is not None:
        status = _int(_one_arg(d), f"{d.where}: limit_req_status")
        if not 400 <= status <= 599:
            raise ConfigError(f"{d.where}: limit_req_status must be 400-599",
                              hint=_HINT)
    return NginxPolicy(pool, tuple(rules), status, tuple(servers), tuple(located),
                       tuple(upstreams))


def _placeholder() -> UpstreamPolicy:
    # NginxPolicy's routing methods need no pool; the real one replaces this at once.
    return UpstreamPolicy("", (), 0, 0.0, 0.0, 0.0, (), False, 1, "round_robin")


@dataclass(frozen=True)
class Route:
    """Where a request path goes in a configuration: its location and what is in force there."""

    location: str
    where: str                         # file:line of the location
    upstream: str | None               # the proxy_pass target's host part, None: not proxied
    next_upstream: tuple[str, ...]


def route(main: Sequence[Directive], path: str, *, port: int = 80) -> Route | None:
    """The location a request for ``path`` on ``port`` reaches (the first server listening
    there, longest prefix), or None when no server or location takes it."""
    http = [d for d in _children(main, "http") if d.block is not None]
    if not http:
        return None
    http_scope = _Scope().enter(http[0].block or ())
    for server in _children(http[0].block, "server"):
        block = server.block or ()
        ports = {d.args[0].rsplit(":", 1)[-1] for d in _children(block, "listen") if d.args}
        if str(port) not in ports and not (port == 80 and not ports):
            continue
        scope = http_scope.enter(block)
        locations = list(_locations(block, scope))
        best = _best_location(locations, path)
        if best is None:
            return None
        line = next((d.where for d in _walk(block) if d.name == "location"
                     and d.args and d.args[-1] == best.prefix), server.where)
        target = (re.sub(r"^https?://", "", best.proxy_pass).split("/", 1)[0]
                  if best.proxy_pass else None)
        return Route(best.prefix, line, target, best.scope.next_upstream)
    return None

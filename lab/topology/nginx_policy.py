"""The policy NGINX really runs, read from its configuration's syntax tree.

What the directives *mean* (inheritance from http to server to location, the longest-prefix
location, a server's redirect of plain HTTP, limit_req's zones and rules) is the lab's own
reading here, over the tree ``lab.topology.nginx_tree`` parses, since no parser gives
semantics.

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

import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from lab.errors import ConfigError
from lab.expectations import (
    LocationPolicy,
    NginxPolicy,
    RateLimitRule,
    ServerPolicy,
    UpstreamPolicy,
    UpstreamServer,
)
from lab.topology.nginx_tree import (
    HINT,
    Directive,
    children,
    last,
    one_arg,
    parse_int,
    parse_rate_per_s,
    parse_time_s,
    read_tree,
    walk,
)

DEFAULT_MAX_FAILS = 1
DEFAULT_FAIL_TIMEOUT_S = 10.0
DEFAULT_CONNECT_TIMEOUT_S = 60.0
DEFAULT_READ_TIMEOUT_S = 60.0
DEFAULT_NEXT_UPSTREAM = ("error", "timeout")
DEFAULT_WORKER_PROCESSES = 1
DEFAULT_LIMIT_REQ_STATUS = 503

def _upstream_server(directive: Directive, nodes: Mapping[str, str]) -> UpstreamServer:
    where = f"{directive.where}: server"
    if not directive.args:
        raise ConfigError(f"{where}: missing address", hint=HINT)
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
            max_fails = parse_int(value, f"{where} max_fails")
        elif key == "fail_timeout":
            fail_timeout = parse_time_s(value, where=f"{where} fail_timeout")
        elif key == "weight":
            weight = parse_int(value, f"{where} weight", minimum=1)
        elif key == "max_conns":
            max_conns = parse_int(value, f"{where} max_conns")
        elif key == "slow_start":
            parse_time_s(value, where=f"{where} slow_start")
        elif param == "backup":
            backup = True
        elif param == "down":
            down = True
        elif param in ("resolve",) or key in ("route", "service"):
            pass
        else:
            raise ConfigError(f"{where}: unknown parameter {param!r}", hint=HINT)
    # A user's upstream names hosts (backend-1.internal:3000) or addresses; the checks want
    # nodes.
    node = nodes.get(address) or nodes.get(host) or host
    return UpstreamServer(node, address, weight, max_fails, fail_timeout, backup, down,
                          max_conns)


_BALANCERS = {"least_conn": "least_conn", "ip_hash": "ip_hash", "hash": "hash",
              "random": "random", "least_time": "least_time"}


def _upstream_policy(name: str, block: Sequence[Directive], scope: _Scope, location: str, *,
                     worker_processes: int,
                     nodes: Mapping[str, str] | None = None) -> UpstreamPolicy:
    members = tuple(_upstream_server(d, nodes or {}) for d in children(block, "server"))
    if not members:
        raise ConfigError(f"nginx.conf: upstream {name!r} has no server", hint=HINT)
    primary = [s for s in members if not s.backup and not s.down]
    # The group's values are the first primary server's; each server keeps its own in
    # ``members`` (UpstreamPolicy.peer), which is what the checks read for one backend.
    first = primary[0] if primary else members[0]
    balancing, hash_key, consistent = "round_robin", "", False
    for directive in block:
        if directive.name in _BALANCERS:
            balancing = _BALANCERS[directive.name]
            if directive.name == "hash" and directive.args:
                hash_key = directive.args[0]
                consistent = directive.args[1:] == ("consistent",)
    keepalive = last(block, "keepalive")
    return UpstreamPolicy(
        name=name,
        servers=tuple(s.node for s in primary),
        max_fails=first.max_fails,
        fail_timeout_s=first.fail_timeout_s,
        connect_timeout_s=scope.connect_timeout_s,
        read_timeout_s=scope.read_timeout_s,
        next_upstream=scope.next_upstream,
        zone=last(block, "zone") is not None,
        worker_processes=worker_processes,
        balancing=balancing,
        next_upstream_tries=scope.tries,
        backup_servers=tuple(s.node for s in members if s.backup and not s.down),
        members=members,
        next_upstream_timeout_s=scope.next_upstream_timeout_s,
        location=location,
        keepalive=parse_int(one_arg(keepalive), f"{keepalive.where}: keepalive")
        if keepalive is not None else 0,
        http_version=scope.http_version,
        connection_header=scope.connection_header,
        hash_key=hash_key,
        hash_consistent=consistent,
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
    limit_req: tuple[Directive, ...] = ()
    headers: tuple[Directive, ...] = ()

    def enter(self, block: Sequence[Directive]) -> _Scope:
        connect, read = self.connect_timeout_s, self.read_timeout_s
        if (d := last(block, "proxy_connect_timeout")) is not None:
            connect = parse_time_s(one_arg(d), where=f"{d.where}: proxy_connect_timeout")
        if (d := last(block, "proxy_read_timeout")) is not None:
            read = parse_time_s(one_arg(d), where=f"{d.where}: proxy_read_timeout")
        next_upstream = self.next_upstream
        if (d := last(block, "proxy_next_upstream")) is not None:
            if not d.args:
                raise ConfigError(f"{d.where}: proxy_next_upstream needs a value",
                                  hint=HINT)
            next_upstream = () if d.args == ("off",) else d.args
        tries = self.tries
        if (d := last(block, "proxy_next_upstream_tries")) is not None:
            tries = parse_int(one_arg(d), f"{d.where}: proxy_next_upstream_tries")
        retry_timeout = self.next_upstream_timeout_s
        if (d := last(block, "proxy_next_upstream_timeout")) is not None:
            retry_timeout = parse_time_s(one_arg(d),
                                         where=f"{d.where}: proxy_next_upstream_timeout")
        version = self.http_version
        if (d := last(block, "proxy_http_version")) is not None:
            version = one_arg(d)
        # proxy_set_header, limit_req and add_header are inherited only when the level
        # defines none of its own.
        connection = self.connection_header
        set_headers = children(block, "proxy_set_header")
        if set_headers:
            connection = next((d.args[1] for d in reversed(set_headers)
                               if len(d.args) == 2 and d.args[0].lower() == "connection"), None)
        limit_req = tuple(children(block, "limit_req")) or self.limit_req
        headers = tuple(children(block, "add_header")) or self.headers
        return _Scope(connect, read, next_upstream, tries, retry_timeout, version, connection,
                      limit_req, headers)


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


def redirect_of(block: Sequence[Directive]) -> str | None:
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


def _if_condition(directive: Directive) -> str:
    """An ``if``'s condition as one word: ``($scheme = "http")`` reads ``$scheme=http``."""
    # crossplane hands the condition without its parentheses: ['$scheme', '=', 'http'].
    condition = "".join(directive.args).replace('"', "").replace("'", "").replace(" ", "")
    return condition.removeprefix("(").removesuffix(")")


def if_https_redirect(block: Sequence[Directive], holds: Callable[[str], bool]) -> str | None:
    """The redirect to HTTPS inside the first ``if`` of ``block`` whose condition (one word:
    ``$scheme=http``) ``holds`` and that redirects there."""
    for d in block:
        if d.name == "if" and d.block is not None and holds(_if_condition(d)):
            found = redirect_of(d.block)
            if found is not None and found.startswith("https://"):
                return found
    return None


# Conditions of an ``if`` that hold for every plain-HTTP request.
_PLAIN_HTTP = frozenset({"$scheme=http", "$scheme!=https", "$https=",
                         "$http_x_forwarded_proto!=https", "$https!=on"})


def _http_redirect(block: Sequence[Directive]) -> str | None:
    """A server's redirect of plain HTTP: a server-level ``return``, or one inside
    ``if ($scheme = http)`` / ``if ($scheme != https)`` / ``if ($https = "")``."""
    direct = redirect_of(block)
    if direct is not None:
        return direct
    return if_https_redirect(block, _PLAIN_HTTP.__contains__)


def _locations(block: Sequence[Directive], scope: _Scope) -> Iterator[_Location]:
    for directive in block:
        if directive.name != "location" or directive.block is None:
            continue
        if not directive.args:
            raise ConfigError(f"{directive.where}: location without a path",
                              hint=HINT)
        inner = scope.enter(directive.block)
        proxy = last(directive.block, "proxy_pass")
        # Modifiers (=, ^~, ~, ~*) precede the path; regex locations keep their pattern.
        prefix = directive.args[-1]
        modifier = directive.args[0] if len(directive.args) > 1 and \
            directive.args[0] in _MODIFIERS else ("@" if prefix.startswith("@") else "")
        regex = modifier in ("~", "~*")
        tried = last(directive.block, "try_files")
        fallback = tried.args[-1] if tried is not None and tried.args and \
            tried.args[-1].startswith("@") else None
        yield _Location(prefix, inner, one_arg(proxy) if proxy is not None else None, regex,
                        modifier, redirect_of(directive.block), directive.where, fallback)
        yield from _locations(directive.block, inner)


def _headers(
    directives: Sequence[Directive],
) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    pairs: list[tuple[str, str]] = []
    always: list[str] = []
    for d in directives:
        if len(d.args) not in (2, 3) or (len(d.args) == 3 and d.args[2] != "always"):
            raise ConfigError(f"{d.where}: add_header takes a name, a value and "
                              "an optional 'always'", hint=HINT)
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
                burst = parse_int(value, f"{d.where}: limit_req burst")
            elif key == "delay":
                delay = parse_int(value, f"{d.where}: limit_req delay")
            elif arg == "nodelay":
                nodelay = True
            else:
                raise ConfigError(f"{d.where}: limit_req: unknown parameter {arg!r}",
                                  hint=HINT)
        if zone is None:
            raise ConfigError(f"{d.where}: limit_req without zone=", hint=HINT)
        if zone not in zones:
            raise ConfigError(f"{d.where}: limit_req zone {zone!r} is not defined "
                              "by any limit_req_zone", hint=HINT)
        rate, key = zones[zone]
        rules.append(RateLimitRule(zone, location.prefix, rate, burst, nodelay, delay, key))
    return rules


def _limit_zones(http: Sequence[Directive]) -> dict[str, tuple[float, str]]:
    zones: dict[str, tuple[float, str]] = {}
    for d in children(http, "limit_req_zone"):
        name, rate = None, None
        key = d.args[0] if d.args else ""
        for arg in d.args[1:]:
            k, _, value = arg.partition("=")
            if k == "zone":
                name = value.split(":", 1)[0]
            elif k == "rate":
                rate = parse_rate_per_s(value, f"{d.where}: limit_req_zone rate")
        if not key or name is None or rate is None:
            raise ConfigError(f"{d.where}: limit_req_zone needs a key, zone= "
                              "and rate=", hint=HINT)
        zones[name] = (rate, key)
    return zones


def _worker_processes(main: Sequence[Directive]) -> int:
    d = last(main, "worker_processes")
    if d is None:
        return DEFAULT_WORKER_PROCESSES
    value = one_arg(d)
    if value == "auto":
        # nginx starts one worker per CPU it can see; containers see the host's CPUs.
        return os.cpu_count() or 1
    return parse_int(value, f"{d.where}: worker_processes", minimum=1)


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


def _listen_ports(block: Sequence[Directive]) -> tuple[tuple[int, ...], tuple[int, ...],
                                                         tuple[int, ...]]:
    ports, tls, default = [], [], []
    for d in children(block, "listen"):
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


@dataclass(frozen=True)
class _Http:
    """The http block as the policy reads it: what every server and location draws on."""

    block: Sequence[Directive]
    scope: _Scope
    zones: dict[str, tuple[float, str]]
    upstreams: dict[str, tuple[Directive, ...]]
    workers: int
    nodes: Mapping[str, str] | None

    def upstream(self, name: str, scope: _Scope, location: str) -> UpstreamPolicy:
        """The upstream block ``name`` with the timers in force in ``scope``."""
        return _upstream_policy(name, self.upstreams[name], scope, location,
                                worker_processes=self.workers, nodes=self.nodes)


def _read_http(main: Sequence[Directive], nodes: Mapping[str, str] | None) -> _Http:
    http_blocks = [d for d in children(main, "http") if d.block is not None]
    if len(http_blocks) != 1:
        raise ConfigError("nginx.conf: expected exactly one http { } block", hint=HINT)
    http = http_blocks[0].block or ()
    scope = _Scope().enter(http)
    zones = _limit_zones(http)
    upstreams = {d.args[0]: d.block for d in children(http, "upstream")
                 if d.args and d.block is not None}
    if not upstreams:
        raise ConfigError("nginx.conf: no upstream block", hint=HINT)
    return _Http(http, scope, zones, upstreams, _worker_processes(main), nodes)


def _server_policy(block: Sequence[Directive], scope: _Scope) -> ServerPolicy:
    pairs, always = _headers(scope.headers)
    listen = tuple(" ".join(d.args) for d in children(block, "listen"))
    names = tuple(a for d in children(block, "server_name") for a in d.args)
    ports, tls_ports, default_ports = _listen_ports(block)
    return ServerPolicy(listen, bool(tls_ports), names, pairs, always, ports, tls_ports,
                        default_ports, _http_redirect(block))


def _server_locations(http: _Http, index: int, block: Sequence[Directive], scope: _Scope,
                      rules: list[RateLimitRule]) -> list[LocationPolicy]:
    """The locations of server ``index``, each with the upstream it proxies to; the
    limit_req rules they apply are added to ``rules`` (each once)."""
    located: list[LocationPolicy] = []
    own = list(_locations(block, scope))
    named = {loc.prefix: loc for loc in own if loc.prefix.startswith("@")}
    for location in own:
        for rule in _limit_rules(location, http.zones):
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
        if target is not None and target in http.upstreams:
            policy = http.upstream(target, location.scope, location.prefix)
        located.append(LocationPolicy(index, location.modifier, location.prefix, policy,
                                      target, location.redirect, location.where))
    return located


def _block_pool(http: _Http, located: Sequence[LocationPolicy], name: str) -> UpstreamPolicy:
    """Upstream block ``name`` as the first location proxying to it sees it, else with the
    http block's timers."""
    return next((loc.upstream for loc in located if loc.upstream is not None
                 and loc.upstream.name == name), None) or http.upstream(name, http.scope, "")


def _pool(http: _Http, partial: NginxPolicy, path: str, upstream: str | None
          ) -> UpstreamPolicy:
    """The backend pool: lab.toml's ``upstream``, else the block ``path`` is proxied to, else
    the only block (or the only one proxied to)."""
    located = partial.locations
    if upstream is not None and upstream not in http.upstreams:
        raise ConfigError(f"[nginx] upstream = {upstream!r}: no such upstream block "
                          f"(blocks: {', '.join(http.upstreams)})", hint=HINT)
    found = partial.upstream_for(path)
    if upstream is not None:
        if found is not None and found.name == upstream:
            return found
        return _block_pool(http, located, upstream)
    if found is not None:
        return found
    reached = partial.location_for(path, partial.client_port(path))
    if reached is not None and reached.proxied is not None:
        raise ConfigError(f"{reached.where}: proxy_pass names {reached.proxied!r}, which is "
                          "no upstream block: NGINX proxies it to that one address, with "
                          "nothing to fail over to", hint="proxy to an upstream block of "
                          "the backends")
    proxied = {loc.upstream.name for loc in located if loc.upstream is not None}
    if len(http.upstreams) == 1 or len(proxied) == 1:
        name = next(iter(proxied)) if len(proxied) == 1 else next(iter(http.upstreams))
        return _block_pool(http, located, name)
    raise ConfigError(f"nginx.conf: no location proxies {path!r} and there are "
                      f"several upstreams to choose from ({', '.join(http.upstreams)})",
                      hint="name the backend pool in lab.toml: [nginx] upstream = "
                      "\"NAME\"")


def _limit_req_status(http: Sequence[Directive]) -> int:
    d = last(http, "limit_req_status")
    if d is None:
        return DEFAULT_LIMIT_REQ_STATUS
    status = parse_int(one_arg(d), f"{d.where}: limit_req_status")
    if not 400 <= status <= 599:
        raise ConfigError(f"{d.where}: limit_req_status must be 400-599", hint=HINT)
    return status


def policy_from_tree(main: Sequence[Directive], *, path: str = "/",
                     nodes: Mapping[str, str] | None = None,
                     upstream: str | None = None) -> NginxPolicy:
    """The typed policy of a configuration tree whose includes are resolved."""
    http = _read_http(main, nodes)
    servers: list[ServerPolicy] = []
    rules: list[RateLimitRule] = []
    located: list[LocationPolicy] = []
    for index, server in enumerate(children(http.block, "server")):
        block = server.block or ()
        scope = http.scope.enter(block)
        servers.append(_server_policy(block, scope))
        located += _server_locations(http, index, block, scope, rules)
    partial = NginxPolicy(_placeholder(), tuple(rules), 0, tuple(servers), tuple(located),
                          tuple(http.upstreams))
    pool = _pool(http, partial, path, upstream)
    return NginxPolicy(pool, tuple(rules), _limit_req_status(http.block), tuple(servers),
                       tuple(located), tuple(http.upstreams))


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
    http = [d for d in children(main, "http") if d.block is not None]
    if not http:
        return None
    http_scope = _Scope().enter(http[0].block or ())
    for server in children(http[0].block, "server"):
        block = server.block or ()
        ports = {d.args[0].rsplit(":", 1)[-1] for d in children(block, "listen") if d.args}
        if str(port) not in ports and not (port == 80 and not ports):
            continue
        scope = http_scope.enter(block)
        locations = list(_locations(block, scope))
        best = _best_location(locations, path)
        if best is None:
            return None
        line = next((d.where for d in walk(block) if d.name == "location"
                     and d.args and d.args[-1] == best.prefix), server.where)
        target = _target(best.proxy_pass) if best.proxy_pass else None
        return Route(best.prefix, line, target, best.scope.next_upstream)
    return None

"""Reading the policy NGINX runs back from a rendered nginx.conf."""

from __future__ import annotations

import pytest

from lab.config import LabConfig, RateLimitZone
from lab.errors import ConfigError
from lab.topology.nginx_policy import parse_nginx_policy
from lab.topology.render import render_nginx

MINIMAL = """
events {}
http {
    upstream backend {
        server backend-1:8000;
        server backend-2:8000;
    }
    server {
        listen 80;
        location / { proxy_pass http://backend; }
    }
}
"""


def test_rendered_defaults_round_trip() -> None:
    """The default LabConfig's rendered file yields the configured upstream policy."""
    config = LabConfig()
    policy = parse_nginx_policy(render_nginx(config))
    upstream = policy.upstream
    assert upstream.name == "backend"
    assert upstream.servers == config.backend_names
    assert upstream.max_fails == config.nginx.max_fails
    assert upstream.fail_timeout_s == config.nginx.fail_timeout_s
    assert upstream.connect_timeout_s == config.nginx.connect_timeout_s
    assert upstream.read_timeout_s == config.nginx.read_timeout_s
    assert upstream.next_upstream == config.nginx.next_upstream
    assert upstream.zone is True
    assert upstream.worker_processes == config.nginx.worker_processes
    assert upstream.balancing == "round_robin"
    assert policy.rate_limit_status == config.nginx.rate_limit_status


def test_rendered_rate_limits() -> None:
    """Each configured zone appears once per location with its rate and burst."""
    policy = parse_nginx_policy(render_nginx(LabConfig()))
    auth = policy.rate_limit_for("/api/auth/")
    assert len(auth) == 1
    rule = auth[0]
    assert (rule.zone, rule.rate_per_s, rule.burst, rule.nodelay) == ("auth", 10, 5, True)
    assert rule.key == "$binary_remote_addr"
    assert {r.location for r in policy.rate_limits} == {"/api/auth/", "/api/", "/webhooks/"}
    assert policy.rate_limit_for("/") == ()


def test_rendered_overrides() -> None:
    """Overridden fields of lab.toml show up in the parsed policy."""
    config = LabConfig().with_overrides(
        "nginx", max_fails=0, fail_timeout_s=4, connect_timeout_s=0.25, read_timeout_s=2,
        next_upstream=("error",), zone=False, worker_processes=4, rate_limit_status=503,
        rate_limits=(RateLimitZone(name="slow", location="/slow/", rate_per_s=2, burst=3,
                                   nodelay=False),))
    policy = parse_nginx_policy(render_nginx(config))
    upstream = policy.upstream
    assert (upstream.max_fails, upstream.fail_timeout_s) == (0, 4)
    assert (upstream.connect_timeout_s, upstream.read_timeout_s) == (0.25, 2)
    assert upstream.next_upstream == ("error",)
    assert upstream.zone is False and upstream.worker_processes == 4
    assert not upstream.shared_counters
    assert policy.rate_limit_status == 503
    (rule,) = policy.rate_limits
    assert (rule.zone, rule.location, rule.burst, rule.nodelay) == ("slow", "/slow/", 3, False)


def test_rendered_headers_per_server() -> None:
    """The TLS server carries HSTS on top of the plain server's headers; the stub_status server
    carries the plain server's headers too."""
    policy = parse_nginx_policy(render_nginx(LabConfig()))
    plain, tls, status = policy.servers
    assert not plain.tls and tls.tls
    assert status.listen == ("8080",) and status.headers == plain.headers
    assert ("X-Frame-Options", "SAMEORIGIN") in plain.headers
    assert "Strict-Transport-Security" not in dict(plain.headers)
    assert dict(tls.headers)["Strict-Transport-Security"].startswith("max-age=31536000")
    assert "X-Frame-Options" in tls.always_headers


def test_nginx_defaults_when_directives_absent() -> None:
    """Absent directives take nginx's own defaults."""
    policy = parse_nginx_policy(MINIMAL)
    upstream = policy.upstream
    assert upstream.servers == ("backend-1", "backend-2")
    assert (upstream.max_fails, upstream.fail_timeout_s) == (1, 10.0)
    assert (upstream.connect_timeout_s, upstream.read_timeout_s) == (60.0, 60.0)
    assert upstream.next_upstream == ("error", "timeout")
    assert upstream.worker_processes == 1 and upstream.zone is False
    assert upstream.shared_counters
    assert policy.rate_limit_status == 503
    assert policy.rate_limits == ()


def test_location_overrides_http_level_timeouts() -> None:
    """A timeout set in the proxying location wins over the http level."""
    text = MINIMAL.replace("http {", "http {\n proxy_connect_timeout 2s;").replace(
        "location / { proxy_pass",
        "location / { proxy_connect_timeout 500ms; proxy_next_upstream off; proxy_pass")
    upstream = parse_nginx_policy(text).upstream
    assert upstream.connect_timeout_s == 0.5
    assert upstream.next_upstream == ()


def test_balancing_and_backup() -> None:
    """least_conn and backup servers are recognised; backups are not primary servers."""
    text = MINIMAL.replace("upstream backend {", "upstream backend {\n least_conn;").replace(
        "server backend-2:8000;", "server backend-2:8000; server backend-3:8000 backup;")
    upstream = parse_nginx_policy(text).upstream
    assert upstream.balancing == "least_conn"
    assert upstream.servers == ("backend-1", "backend-2")
    assert upstream.backup_servers == ("backend-3",)


def test_rate_per_minute_as_nginx_stores_it() -> None:
    """r/m rates lose their remainder as nginx's integer milli-requests do."""
    zone = "limit_req_zone $binary_remote_addr zone=z:1m rate=7r/m;"
    text = MINIMAL.replace("http {", "http {\n" + zone).replace(
        "location / {", "location / { limit_req zone=z burst=2 delay=1;")
    (rule,) = parse_nginx_policy(text).rate_limits
    assert rule.rate_per_s == (7 * 1000 // 60) / 1000
    assert (rule.burst, rule.delay, rule.nodelay) == (2, 1, False)


BROKEN = {
    "unbalanced brace": lambda t: t.replace("upstream backend {", "upstream backend {{"),
    "missing close": lambda t: t.rstrip().rstrip("}"),
    "stray close": lambda t: t + "\n}\n",
    "missing semicolon": lambda t: t.replace("fail_timeout=10s;", "fail_timeout=10s", 1),
    "unterminated quote": lambda t: t.replace('"SAMEORIGIN"', '"SAMEORIGIN'),
    "bad fail_timeout": lambda t: t.replace("fail_timeout=10s", "fail_timeout=ten", 1),
    "bad max_fails": lambda t: t.replace("max_fails=3", "max_fails=-1", 1),
    "bad connect timeout": lambda t: t.replace("timeout 1000ms", "timeout 1000us"),
    "bad rate": lambda t: t.replace("rate=10r/s", "rate=10r/h"),
    "unknown zone": lambda t: t.replace("limit_req zone=auth", "limit_req zone=nope"),
    "no upstream": lambda t: t.replace("upstream backend", "upstream other"),
    "bad worker_processes": lambda t: t.replace("worker_processes 2", "worker_processes many"),
    "bad limit_req_status": lambda t: t.replace("limit_req_status 429", "limit_req_status 200"),
    "unknown server parameter": lambda t: t.replace("max_fails=3 ", "max_fail=3 ", 1),
}


@pytest.mark.parametrize("breakage", sorted(BROKEN))
def test_broken_variants_raise_config_error(breakage: str) -> None:
    """Each deliberately broken variant of the rendered file raises ConfigError."""
    text = BROKEN[breakage](render_nginx(LabConfig()))
    assert text != render_nginx(LabConfig())
    with pytest.raises(ConfigError):
        parse_nginx_policy(text)


def test_worker_processes_auto_is_positive() -> None:
    """worker_processes auto resolves to at least one worker."""
    text = "worker_processes auto;\n" + MINIMAL
    assert parse_nginx_policy(text).upstream.worker_processes >= 1


SHAPES = """
events {}
http {
    upstream app {
        least_conn;
        server 10.0.0.11:3000 weight=3 max_fails=2 fail_timeout=5s;
        server 10.0.0.12:3000 max_conns=50;
        server 10.0.0.13:3000 backup;
        server 10.0.0.14:3000 down;
        keepalive 16;
    }
    upstream other { server 10.0.0.99:9000; }
    server {
        listen 80 default_server;
        server_name example.com;
        return 301 https://$host$request_uri;
    }
    server {
        listen 443 ssl http2;
        server_name example.com www.example.com;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        location / { proxy_pass http://app; }
        location = /exact { proxy_pass http://other; }
        location ^~ /static/ { root /srv; }
        location ~ \\.php$ { proxy_pass http://other; }
        location /api/ {
            proxy_next_upstream error timeout non_idempotent;
            proxy_next_upstream_tries 2;
            proxy_next_upstream_timeout 3s;
            proxy_connect_timeout 2s;
            proxy_pass http://app;
        }
    }
}
"""


def test_members_weights_and_per_server_settings() -> None:
    """Each server line keeps its own weight, max_fails, fail_timeout, backup and down."""
    nodes = {"10.0.0.11:3000": "backend-1", "10.0.0.12:3000": "backend-2",
             "10.0.0.13:3000": "backend-3"}
    upstream = parse_nginx_policy(SHAPES, nodes=nodes).upstream
    assert upstream.name == "app"
    assert upstream.servers == ("backend-1", "backend-2")
    assert upstream.backup_servers == ("backend-3",)
    assert upstream.weights == {"backend-1": 3, "backend-2": 1}
    assert (upstream.peer("backend-1").max_fails, upstream.peer("backend-1").fail_timeout_s) \
        == (2, 5.0)
    assert (upstream.peer("backend-2").max_fails, upstream.peer("backend-2").fail_timeout_s) \
        == (1, 10.0)
    assert upstream.peer("backend-2").max_conns == 50
    assert not upstream.uniform
    assert upstream.balancing == "least_conn"
    assert (upstream.keepalive, upstream.http_version, upstream.connection_header) \
        == (16, "1.1", "")


def test_redirect_followed_and_locations_matched_as_nginx_does() -> None:
    """Plain HTTP that port 80 redirects meets the HTTPS server's locations, in nginx's order."""
    policy = parse_nginx_policy(SHAPES)
    assert policy.redirects("/", 80) == "https://$host$request_uri"
    assert policy.upstream.location == "/"
    api = policy.upstream_for("/api/messages")
    assert api is not None
    assert (api.location, api.next_upstream_tries, api.next_upstream_timeout_s,
            api.connect_timeout_s) == ("/api/", 2, 3.0, 2.0)
    assert "non_idempotent" in api.next_upstream
    assert policy.upstream_for("/exact").name == "other"
    assert policy.upstream_for("/static/x.php") is None        # ^~ wins over the regex
    assert policy.upstream_for("/index.php").name == "other"   # the regex over the prefix /
    assert policy.upstream_names == ("app", "other")


def test_several_upstreams_pick_the_one_traffic_reaches() -> None:
    """With several upstream blocks the pool is the one "/" is proxied to, or the one named."""
    policy = parse_nginx_policy(SHAPES)
    assert policy.upstream.name == "app"
    assert parse_nginx_policy(SHAPES, upstream="other").upstream.name == "other"
    with pytest.raises(ConfigError, match="no such upstream"):
        parse_nginx_policy(SHAPES, upstream="nope")


def test_redirect_inside_if_scheme_is_read() -> None:
    """A server on 80 and 443 that redirects plain HTTP inside if ($scheme = http)."""
    text = """events {}
http {
    upstream app { server b1:80; server b2:80; }
    server {
        listen 80; listen 443 ssl; server_name x;
        if ($scheme = http) { return 301 https://$host$request_uri; }
        location / { proxy_pass http://app; }
    }
}"""
    policy = parse_nginx_policy(text)
    assert policy.redirects("/", 80) == "https://$host$request_uri"
    assert policy.redirects("/", 443) is None


def test_try_files_falls_through_to_its_named_location() -> None:
    """location / { try_files /dev/null @api; } is answered by @api (the lab's NGINX has none
    of the site's files), so "/" reaches the pool; a site on port 9999 is judged there."""
    text = """events {}
http {
    upstream app { server b1:80; server b2:80; }
    server {
        listen 9999;
        location / { try_files /dev/null @api; }
        location @api { proxy_pass http://app; }
    }
}"""
    policy = parse_nginx_policy(text)
    assert policy.site_ports() == (9999, None)
    assert policy.upstream.name == "app"
    assert policy.upstream_for("/health").name == "app"

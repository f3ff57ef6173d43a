"""Configuration files rendered from a ``LabConfig``: pure text, no Docker.

What the checks compare against is read back from these rendered files (``lab.topology.
nginx_policy``), so an expectation always follows the configuration NGINX really runs.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from lab.config import LabConfig

BACKEND_PORT = 8000
# NGINX's stub_status (the checklist's /nginx_status on 8080): served on the lab network and
# published on 127.0.0.1 like 80 and 443 (lab.topology.expect.documented_ports), for `lab watch`.
STATUS_PORT = 8080
STATUS_PATH = "/nginx_status"
PGBOUNCER_PORT = 6432
PGBOUNCER_ADMIN_USER = "labadmin"
ACCESS_LOG_TAG = "LABLOG"
ACCESS_LOG_FIELDS = (
    "$msec", "$request_time", "$request_method", "$request_uri", "$status", "$upstream_addr",
    "$upstream_status", "$upstream_response_time", "$limit_req_status", "$remote_addr",
    "$http_x_request_id", "$pid", "$upstream_connect_time",
    "$upstream_header_time",
)


@dataclass(frozen=True)
class LabSecrets:
    """Passwords and tokens generated per lab; none is ever stored in the repository."""

    superuser_password: str
    db_password: str
    pgbouncer_admin_password: str
    admin_token: str
    webhook_secret: str
    seed_password: str
    token_secret: str

    @classmethod
    def generate(cls) -> LabSecrets:
        return cls(*(secrets.token_urlsafe(18) for _ in range(7)))


def _ms(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


def render_nginx(config: LabConfig, *, backend_port: int = BACKEND_PORT) -> str:
    """nginx.conf: upstream with passive checks, TLS, security headers, rate limits, access log."""
    n = config.nginx
    servers = "\n".join(
        f"        server {name}:{backend_port} max_fails={n.max_fails} "
        f"fail_timeout={n.fail_timeout_s}s;"
        for name in config.backend_names
    )
    zone_line = "        zone backend 64k;\n" if n.zone else ""
    zones = "\n".join(
        f"    limit_req_zone $binary_remote_addr zone={z.name}:10m rate={z.rate_per_s}r/s;"
        for z in n.rate_limits
    )
    # Longest prefix wins in nginx, so /api/auth/ is limited by auth alone, not also by api.
    limited = "\n".join(
        f"        location {z.location} {{\n"
        f"            limit_req zone={z.name}"
        + (f" burst={z.burst}" if z.burst else "")
        + (" nodelay" if z.nodelay and z.burst else "")
        + ";\n            proxy_pass http://backend;\n        }"
        for z in n.rate_limits
    )
    headers = [
        'add_header X-RateLimit-Status $limit_req_status always;',
        'add_header Retry-After $lab_retry_after always;',
    ]
    if n.security_headers:
        headers += [
            'add_header X-Frame-Options "SAMEORIGIN" always;',
            'add_header X-Content-Type-Options "nosniff" always;',
            ("add_header Content-Security-Policy "
             "\"default-src 'self'; frame-ancestors 'self'\" always;"),
        ]
    http_headers = "\n".join(f"        {h}" for h in headers)
    https_headers = http_headers
    if n.hsts_max_age_s:
        https_headers += ('\n        add_header Strict-Transport-Security '
                          f'"max-age={n.hsts_max_age_s}; includeSubDomains" always;')
    log_format = "\\t".join((ACCESS_LOG_TAG, *ACCESS_LOG_FIELDS))

    def server(listen: str, header_block: str, tls: str = "") -> str:
        return f"""    server {{
        listen {listen};
        server_name {n.server_name} localhost;
{tls}{header_block}
        error_page {n.rate_limit_status} @ratelimited;
        location @ratelimited {{
            default_type application/json;
            return {n.rate_limit_status} '{{"error":"rate_limited"}}\\n';
        }}
{limited}
        location / {{
            proxy_pass http://backend;
        }}
    }}
"""

    tls = """        ssl_certificate /etc/lab/tls/server.crt;
        ssl_certificate_key /etc/lab/tls/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;
"""
    return f"""# Rendered by the lab for lab {config.name!r}; edit lab.toml, not this file.
worker_processes {n.worker_processes};
error_log /dev/stderr warn;
pid /tmp/nginx.pid;
events {{
    worker_connections 4096;
}}
http {{
    default_type application/octet-stream;
    log_format lab '{log_format}';
    access_log /dev/stdout lab;
    server_tokens off;
    client_max_body_size 1m;

    # Retry-After only on rate-limited answers: an empty value sends no header at all.
    map $status $lab_retry_after {{
        {n.rate_limit_status} 1;
        default "";
    }}

{zones}
    limit_req_status {n.rate_limit_status};

    upstream backend {{
{zone_line}{servers}
    }}

    proxy_connect_timeout {_ms(n.connect_timeout_s)};
    proxy_read_timeout {_ms(n.read_timeout_s)};
    proxy_send_timeout {_ms(n.read_timeout_s)};
    proxy_next_upstream {" ".join(n.next_upstream)};
    proxy_set_header Host $host;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_set_header X-Request-Id $http_x_request_id;

{server("80 default_server", http_headers)}
{server("443 ssl default_server", https_headers, tls)}
    server {{
        listen {STATUS_PORT};
        # Polled by `lab watch`; kept out of the access log the checks read.
        access_log off;
{http_headers}
        location = {STATUS_PATH} {{
            stub_status;
        }}
        location / {{
            return 404;
        }}
    }}
}}
"""


def render_pgbouncer_ini(config: LabConfig) -> str:
    p, pg = config.pgbouncer, config.postgres
    return f"""; Rendered by the lab for lab {config.name!r}.
[databases]
{pg.database} = host=postgres port=5432 dbname={pg.database}

[pgbouncer]
listen_addr = 0.0.0.0
listen_port = {PGBOUNCER_PORT}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = /etc/pgbouncer/userlist.txt
admin_users = {PGBOUNCER_ADMIN_USER}
stats_users = {PGBOUNCER_ADMIN_USER}
pool_mode = {p.pool_mode}
default_pool_size = {p.default_pool_size}
reserve_pool_size = {p.reserve_pool_size}
max_client_conn = {p.max_client_conn}
query_wait_timeout = {p.query_wait_timeout_s}
server_login_retry = {p.server_login_retry_s}
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
"""


def render_userlist(config: LabConfig, lab_secrets: LabSecrets) -> str:
    """Plaintext entries: PgBouncer then logs in to PostgreSQL 15 with SCRAM itself."""
    return (f'"{config.postgres.user}" "{lab_secrets.db_password}"\n'
            f'"{PGBOUNCER_ADMIN_USER}" "{lab_secrets.pgbouncer_admin_password}"\n')


def render_redis_conf(config: LabConfig) -> str:
    persistence = ('save 1 1\nappendonly yes\nappendfsync everysec\n' if config.redis.persistence
                   else 'save ""\nappendonly no\n')
    return f"""# Rendered by the lab for lab {config.name!r}.
bind 0.0.0.0
protected-mode no
port 6379
dir /var/lib/redis
{persistence}"""


def render_postgresql_conf(config: LabConfig) -> str:
    return f"""
# Added by the lab.
listen_addresses = '*'
max_connections = {config.postgres.max_connections}
fsync = on
synchronous_commit = {"on" if config.postgres.synchronous_commit else "off"}
wal_writer_delay = {config.postgres.wal_writer_delay_ms}ms
"""


def render_postgres_env(config: LabConfig, lab_secrets: LabSecrets) -> str:
    return (f"LAB_SUPERUSER_PASSWORD='{lab_secrets.superuser_password}'\n"
            f"LAB_DB_USER='{config.postgres.user}'\nLAB_DB_PASSWORD='{lab_secrets.db_password}'\n"
            f"LAB_DB_NAME='{config.postgres.database}'\n")

"""Your own files, made runnable: what the lab keeps, what it adds, what it refuses (with the
file and line), and the expectations that follow the files, all without Docker."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lab.config import load_config
from lab.errors import ConfigError
from lab.expectations import duration_names, evaluate_duration
from lab.topology.expect import claimed
from lab.topology.nginx_conf import parse_nginx_policy, split_dump
from lab.topology.pgbouncer_ini import parse_pgbouncer_ini
from lab.topology.userconf import (
    LAB_ACCESS_LOG,
    NGINX_PREFIX,
    main_conf_path,
    user_nginx,
    user_topology,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "checklist"
EJECTION_WAIT = "connect_timeout + max_fails * interval + 2"   # failover.yaml's wait


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """A copy of examples/checklist to edit."""
    target = tmp_path / "checklist"
    shutil.copytree(EXAMPLES, target)
    return target


def test_example_as_the_lab_runs_it() -> None:
    """The shipped example: aliases, port, TLS paths, the lab's log on the user's own line."""
    config = load_config(EXAMPLES / "lab.toml")
    user = user_topology(config)
    nginx = user.nginx
    assert nginx is not None and user.pgbouncer is not None and user.user_backend
    assert user.backend_port == 3000
    assert dict(nginx.aliases) == {f"backend-{i}": (f"backend-{i}.internal",) for i in (1, 2, 3)}
    assert nginx.main == main_conf_path(config) == f"{NGINX_PREFIX}/lab-nginx.conf"
    assert nginx.tls_paths["/etc/letsencrypt/live/api.example.com/privkey.pem"] == "key"
    original = (EXAMPLES / "backend.conf").read_text().split("\n")
    copied = nginx.files[f"{NGINX_PREFIX}/backend.conf"].split("\n")
    assert len(copied) == len(original)                     # line numbers stay the user's
    changed = [(a, b) for a, b in zip(original, copied, strict=True) if a != b]
    assert changed == [("    access_log /var/log/nginx/api.access.log;",
                        f"    access_log /var/log/nginx/api.access.log; {LAB_ACCESS_LOG}")]
    assert "include backend.conf;" in nginx.files[nginx.main]


def test_expectations_follow_the_users_file(example: Path) -> None:
    """A different max_fails/fail_timeout in the user's file moves the derived window."""
    before = claimed(load_config(example / "lab.toml"))
    conf = example / "backend.conf"
    conf.write_text(conf.read_text().replace("max_fails=3 fail_timeout=10s",
                                             "max_fails=5 fail_timeout=4s"))
    after = claimed(load_config(example / "lab.toml"))
    assert (before.upstream.max_fails, before.upstream.fail_timeout_s) == (3, 10.0)
    assert (after.upstream.max_fails, after.upstream.fail_timeout_s) == (5, 4.0)
    assert after.upstream.servers == ("backend-1", "backend-2", "backend-3")
    window = [evaluate_duration(EJECTION_WAIT, duration_names(e, 25.0)) for e in (before, after)]
    assert window[0] == pytest.approx(1 + 3 * 3 / 25 + 2)
    assert window[1] == pytest.approx(1 + 5 * 3 / 25 + 2)


def test_lab_toml_nginx_values_do_not_apply_to_a_users_file(example: Path) -> None:
    """With [nginx] conf, lab.toml's max_fails is not what the expectations use."""
    toml = example / "lab.toml"
    toml.write_text(toml.read_text().replace('[nginx]\n', '[nginx]\nmax_fails = 9\n'))
    assert claimed(load_config(toml)).upstream.max_fails == 3


def test_whole_nginx_conf_with_includes(tmp_path: Path) -> None:
    """A whole nginx.conf runs as the main file; its relative includes are copied and read."""
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "nginx.conf").write_text(
        "worker_processes 1;\nevents {}\nhttp {\n    include conf.d/*.conf;\n}\n")
    (tmp_path / "conf.d" / "app.conf").write_text(
        "upstream app { server a:8000 max_fails=2 fail_timeout=7s; server b:8000 max_fails=2 "
        "fail_timeout=7s; server c:8000 max_fails=2 fail_timeout=7s; }\n"
        "server { listen 80; location / { proxy_pass http://app; } }\n")
    (tmp_path / "lab.toml").write_text('[nginx]\nconf = "nginx.conf"\n')
    config = load_config(tmp_path / "lab.toml")
    user = user_nginx(config)
    assert user is not None
    assert user.main == f"{NGINX_PREFIX}/nginx.conf"
    assert set(user.files) == {f"{NGINX_PREFIX}/nginx.conf", f"{NGINX_PREFIX}/conf.d/app.conf"}
    assert "log_format lab_history" in user.files[user.main].split("\n")[2]   # on `http {`
    upstream = claimed(config).upstream
    assert (upstream.max_fails, upstream.fail_timeout_s, upstream.worker_processes) == (2, 7.0, 1)
    assert upstream.servers == ("backend-1", "backend-2", "backend-3")


def test_nginx_dump_is_read_with_its_includes() -> None:
    """``nginx -T`` output: every file it dumped, includes resolved against them."""
    dump = ("# configuration file /etc/lab/conf/lab-nginx.conf:\nevents {}\nhttp {\n"
            "    include /etc/nginx/mime.types;\n    include backend.conf;\n}\n\n"
            "# configuration file /etc/nginx/mime.types:\ntypes { text/html html; }\n\n"
            "# configuration file /etc/lab/conf/backend.conf:\n"
            "upstream u { server x:3000 max_fails=4; server y:3000 max_fails=4; }\n"
            "server { listen 80; location / { proxy_pass http://u; } }\n\n")
    assert list(split_dump(dump)) == ["/etc/lab/conf/lab-nginx.conf", "/etc/nginx/mime.types",
                                      "/etc/lab/conf/backend.conf"]
    policy = parse_nginx_policy(dump, nodes={"x:3000": "backend-1", "y": "backend-2"})
    assert policy.upstream.servers == ("backend-1", "backend-2")
    assert policy.upstream.max_fails == 4


REFUSALS = {
    "active check": (lambda t: t.replace("keepalive 32;",
                                         "keepalive 32;\n    check interval=3000;"),
                     r"backend\.conf:\d+: check\n.*third-party"),
    "ip address": (lambda t: t.replace("backend-2.internal:3000", "10.0.0.2:3000"),
                   r"backend\.conf:\d+: upstream server 10\.0\.0\.2:3000: an IP address"),
    "unix socket": (lambda t: t.replace("backend-2.internal:3000", "unix:/run/app.sock"),
                    "a unix socket"),
    "more hosts": (lambda t: t.replace("keepalive 32;", "server backend-4.internal:3000;"),
                   "name 4 backend hosts.*runs 3 backends"),
    "lab node": (lambda t: t.replace("backend-2.internal:3000", "redis:3000"),
                 "lab's own redis node"),
    "ports differ": (lambda t: t.replace("backend-2.internal:3000", "backend-2.internal:4000"),
                     "different ports"),
    "no port 80": (lambda t: t.replace("listen 80;", "listen 8080;"),
                   "no server listens on port 80"),
    "dhparam": (lambda t: t.replace("ssl_protocols",
                                    "ssl_dhparam /etc/ssl/dh.pem;\n    ssl_protocols"),
                r"ssl_dhparam /etc/ssl/dh\.pem: a file the lab cannot provide"),
    "syntax": (lambda t: t.rstrip().rstrip("}"), r"backend\.conf:\d+: unexpected end of file"),
    "include outside": (lambda t: "include ../other.conf;\n" + t, "no such file|outside"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refused_with_file_and_line(example: Path, case: str) -> None:
    """What the lab cannot run is refused before start, naming the file (and line)."""
    change, message = REFUSALS[case]
    conf = example / "backend.conf"
    conf.write_text(change(conf.read_text()))
    with pytest.raises(ConfigError, match=message):
        user_topology(load_config(example / "lab.toml"))


def test_missing_files_are_named(example: Path) -> None:
    """A missing conf, ini or userlist is one message naming the field and the path."""
    for name, field in (("backend.conf", r"\[nginx\] conf"),
                        ("pgbouncer.ini", r"\[pgbouncer\] ini"),
                        ("userlist.txt", r"\[pgbouncer\] userlist")):
        saved = (example / name).read_bytes()
        (example / name).unlink()
        with pytest.raises(ConfigError, match=field + ".*no such file"):
            user_topology(load_config(example / "lab.toml"))
        (example / name).write_bytes(saved)


def test_contract_port_must_match_the_upstream(example: Path) -> None:
    """Without port_env, the contract's port and the upstream's must agree."""
    toml = example / "lab.toml"
    toml.write_text(toml.read_text().replace('port = 3000\nport_env = "PORT"\n', "port = 8080\n"))
    with pytest.raises(ConfigError, match="port 3000 and the backend contract says port 8080"):
        user_topology(load_config(toml))


def test_pgbouncer_ini_substituted_and_kept() -> None:
    """The lab's address and credentials replace the user's; every other setting stays, on
    its line; the pool expectations are the user's."""
    config = load_config(EXAMPLES / "lab.toml")
    user = user_topology(config).pgbouncer
    assert user is not None
    original = (EXAMPLES / "pgbouncer.ini").read_text().split("\n")
    lines = user.ini.split("\n")
    assert lines[3] == "chat = host=postgres port=5432 user=chat_app dbname=chat"
    assert lines[6] == "listen_addr = 0.0.0.0"
    assert lines[12] == "admin_users = postgres, labadmin"
    for number in (14, 15, 16, 18, 19):                        # pool settings, as written
        assert lines[number] == original[number]
    assert "db.internal" not in user.ini and "chat_production" not in user.ini
    policy = parse_pgbouncer_ini(user.ini, database="chat")
    assert (policy.default_pool_size, policy.reserve_pool_size) == (30, 5)


def test_pgbouncer_refusals(example: Path) -> None:
    """An auth the lab cannot serve and a database it does not have are refused with lines."""
    ini = example / "pgbouncer.ini"
    text = ini.read_text()
    ini.write_text(text.replace("auth_type = md5", "auth_type = hba"))
    with pytest.raises(ConfigError, match=r"pgbouncer\.ini line 9: auth_type = hba"):
        user_topology(load_config(example / "lab.toml"))
    ini.write_text(text.replace("chat = host", "shop = host"))
    with pytest.raises(ConfigError, match="serves shop, not the lab's database 'chat'"):
        user_topology(load_config(example / "lab.toml"))


def test_contract_validation(example: Path) -> None:
    """A contract that observes job runs by logs needs its patterns, each capturing the job."""
    toml = example / "lab.toml"
    text = toml.read_text()
    toml.write_text(text.replace("(?P<job>[\\w-]+)$'\nskipped", "[\\w-]+$'\nskipped"))
    with pytest.raises(ConfigError, match=r"must capture \(\?P<job>"):
        load_config(toml)
    toml.write_text(text.replace('build = "backend"\n', ""))
    with pytest.raises(ConfigError, match="needs \\[backend.contract\\]|contract needs an image"):
        load_config(toml)

"""Your own files, made runnable: what the lab keeps, what it adds, what it refuses (with the
file and line), and the expectations that follow the files, all without Docker."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cryptography import x509

from lab.config import load_config
from lab.errors import ConfigError
from lab.expectations import duration_names, evaluate_duration
from lab.topology.expect import claimed
from lab.topology.nginx_policy import parse_nginx_policy
from lab.topology.nginx_tree import split_dump
from lab.topology.pgbouncer_ini import parse_pgbouncer_ini
from lab.topology.tls import make_tls
from lab.topology.user_files import NGINX_PREFIX
from lab.topology.user_nginx import main_conf_path, user_nginx
from lab.topology.user_nginx_edits import LAB_ACCESS_LOG
from lab.topology.user_topology import user_topology
from lab.topology.user_upstreams import ABSENT_SERVICE

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


def test_the_official_images_user_becomes_debians(tmp_path: Path) -> None:
    """`user nginx;` (the official image's account, absent from Debian) would stop NGINX
    (getpwnam failed): the lab's copy names www-data on the same line, and says so."""
    (tmp_path / "nginx.conf").write_text(
        "user  nginx;  # as in the image\nevents {}\nhttp {\n"
        "upstream app { server a:8000; server b:8000; server c:8000; }\n"
        "server { listen 80; location / { proxy_pass http://app; } }\n}\n")
    (tmp_path / "lab.toml").write_text('[nginx]\nconf = "nginx.conf"\n')
    user = user_nginx(load_config(tmp_path / "lab.toml"))
    assert user is not None
    assert user.files[user.main].split("\n")[0] == "user www-data;  # as in the image"
    assert any("nginx.conf:1: user nginx" in note for note in user.notes)


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
    "unix socket": (lambda t: t.replace("backend-2.internal:3000", "unix:/run/app.sock"),
                    "a unix socket"),
    "more hosts": (lambda t: t.replace("keepalive 32;", "server backend-4.internal:3000;"),
                   r"backend\.conf:16: upstream backend_servers, .* names 4 backend addresses"),
    "lab node": (lambda t: t.replace("backend-2.internal:3000", "redis:3000"),
                 "lab's own redis node"),
    "password file": (lambda t: t.replace("ssl_protocols",
                                          "auth_basic_user_file /etc/nginx/htpasswd;\n    "
                                          "ssl_protocols"),
                      r"auth_basic_user_file /etc/nginx/htpasswd: a file the lab cannot provide"),
    "syntax": (lambda t: t.rstrip().rstrip("}"), r"backend\.conf:\d+: unexpected end of file"),
    "include outside": (lambda t: "include ../other.conf;\n" + t, "no such file|outside"),
}


def _assert_refused(site: Path, change, message: str) -> None:
    """backend.conf of ``site`` changed by ``change`` is refused with ``message``."""
    conf = site / "backend.conf"
    conf.write_text(change(conf.read_text()))
    with pytest.raises(ConfigError, match=message):
        user_topology(load_config(site / "lab.toml"))


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refused_with_file_and_line(example: Path, case: str) -> None:
    """What the lab cannot run is refused before start, naming the file (and line)."""
    _assert_refused(example, *REFUSALS[case])


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


# -- the shapes public configurations have ---------------------------------------------------

REDIRECT = Path(__file__).resolve().parents[2] / "examples" / "checklist-redirect"


@pytest.fixture
def redirect_site(tmp_path: Path) -> Path:
    """A copy of examples/checklist-redirect to edit."""
    target = tmp_path / "site"
    shutil.copytree(REDIRECT, target)
    return target


def _changed(user_files: dict[str, str], original: str, name: str) -> list[tuple[str, str]]:
    copied = user_files[f"{NGINX_PREFIX}/{name}"].split("\n")
    lines = original.split("\n")
    assert len(copied) == len(lines)                         # line numbers stay the user's
    return [(a.strip(), b.strip()) for a, b in zip(lines, copied, strict=True)
            if a != b and "access_log" not in a]


def test_checklist_redirect_example_as_the_lab_runs_it() -> None:
    """Nothing but [nginx] conf: IP addresses become backend-1..3 on their own lines, the TLS
    name comes from the file, and port 80's redirect is what the clients follow."""
    config = load_config(REDIRECT / "lab.toml")
    user = user_topology(config)
    nginx = user.nginx
    assert nginx is not None and user.backend_port == 3000 and not user.user_backend
    assert nginx.server_name == "api.example.com" and nginx.server_names == ("api.example.com",)
    assert nginx.redirect == "https://$host$request_uri" and nginx.pool == "backend_servers"
    assert dict(nginx.aliases) == {}
    assert _changed(dict(nginx.files), (REDIRECT / "backend.conf").read_text(),
                    "backend.conf") == [
        (f"server 10.0.0.1{i}:3000 max_fails=3 fail_timeout=10s;",
         f"server backend-{i}:3000 max_fails=3 fail_timeout=10s;") for i in (1, 2, 3)]
    # The original addresses still name the nodes (the checks, the access-log reader).
    assert {nginx.nodes[f"10.0.0.1{i}:3000"] for i in (1, 2, 3)} == {
        "backend-1", "backend-2", "backend-3"}
    notes = "\n".join(user.notes)
    assert "10.0.0.11:3000 -> backend-1, 10.0.0.12:3000 -> backend-2" in notes
    assert "backend-1:3000 for 10.0.0.11:3000 (line 18)" in notes
    assert "follow it to port 443 as api.example.com" in notes
    expected = claimed(config)
    assert expected.server_name == "api.example.com"
    assert expected.upstream.servers == ("backend-1", "backend-2", "backend-3")
    assert expected.upstream.connect_timeout_s == 1.0      # the HTTPS server's, where "/" goes


@pytest.mark.parametrize("redirect", [
    "if ($scheme = http) {\n        return 301 https://$host$request_uri;\n    }",
    "if ($https = \"\") {\n        return 301 https://$host$request_uri;\n    }",
    "rewrite ^ https://$host$request_uri? permanent;",
    "location / {\n        return 308 https://api.example.com$request_uri;\n    }",
])
def test_every_written_form_of_the_redirect_is_followed(redirect_site: Path,
                                                        redirect: str) -> None:
    """return, rewrite ... permanent, a redirect inside if ($scheme = http), in location /."""
    conf = redirect_site / "backend.conf"
    conf.write_text(conf.read_text().replace("return 301 https://$host$request_uri;", redirect))
    nginx = user_nginx(load_config(redirect_site / "lab.toml"))
    assert nginx is not None and nginx.redirect is not None
    assert nginx.redirect.startswith("https://")


def test_server_name_from_the_file_or_from_lab_toml(redirect_site: Path) -> None:
    """lab.toml's server_name wins when it is one of the file's TLS names; any other is
    refused, naming the file's names; the certificate covers every one of them."""
    conf = redirect_site / "backend.conf"
    text = conf.read_text()
    conf.write_text(text.replace("server_name api.example.com;\n\n    ssl",
                                 "server_name api.example.com www.example.com;\n\n    ssl"))
    toml = redirect_site / "lab.toml"
    toml.write_text(toml.read_text() + 'server_name = "www.example.com"\n')
    nginx = user_nginx(load_config(toml))
    assert nginx is not None and nginx.server_name == "www.example.com"
    assert nginx.server_names == ("api.example.com", "www.example.com")
    tls = make_tls("unit", nginx.server_name, names=nginx.server_names)
    sans = x509.load_pem_x509_certificate(tls.cert_pem).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert sans == ["www.example.com", "api.example.com", "localhost"]
    toml.write_text(toml.read_text().replace("www.example.com", "shop.example.com"))
    with pytest.raises(ConfigError, match=r"server_name 'shop.example.com' is none of the names "
                       r"your TLS servers answer to: api\.example\.com \(.*backend\.conf:32\), "
                       r"www\.example\.com"):
        user_nginx(load_config(toml))


def test_addresses_the_lab_must_rewrite(redirect_site: Path) -> None:
    """One host on several ports (127.0.0.1:8081..8083), a host name beside IP addresses, a
    port other than the first: each rewritten on its own line, host names aliased."""
    conf = redirect_site / "backend.conf"
    text = conf.read_text()
    conf.write_text(text.replace("10.0.0.11:3000", "127.0.0.1:8081")
                    .replace("10.0.0.12:3000", "127.0.0.1:8082")
                    .replace("10.0.0.13:3000", "127.0.0.1:8083"))
    nginx = user_nginx(load_config(redirect_site / "lab.toml"))
    assert nginx is not None and nginx.backend_port == 8081
    assert [b for _, b in _changed(dict(nginx.files), conf.read_text(), "backend.conf")] == [
        f"server backend-{i}:8081 max_fails=3 fail_timeout=10s;" for i in (1, 2, 3)]
    conf.write_text(text.replace("10.0.0.11:3000", "app:3000").replace("10.0.0.12:3000",
                                                                      "app:3001"))
    nginx = user_nginx(load_config(redirect_site / "lab.toml"))
    assert nginx is not None and dict(nginx.aliases) == {"backend-1": ("app",)}
    assert [b for _, b in _changed(dict(nginx.files), conf.read_text(), "backend.conf")] == [
        "server backend-2:3000 max_fails=3 fail_timeout=10s;",
        "server backend-3:3000 max_fails=3 fail_timeout=10s;"]
    assert nginx.nodes["app:3001"] == "backend-2" and nginx.nodes["app"] == "backend-1"
    assert claimed(load_config(redirect_site / "lab.toml")).upstream.servers == (
        "backend-1", "backend-2", "backend-3")


def test_servers_on_one_line_are_each_rewritten(redirect_site: Path) -> None:
    """Two server directives on one line: both addresses replaced, the comment kept."""
    conf = redirect_site / "backend.conf"
    conf.write_text(conf.read_text().replace(
        "    server 10.0.0.11:3000 max_fails=3 fail_timeout=10s;\n"
        "    server 10.0.0.12:3000 max_fails=3 fail_timeout=10s;\n",
        "    server 10.0.0.11:3000; server 10.0.0.12:3000;  # 10.0.0.11:3000\n\n"))
    nginx = user_nginx(load_config(redirect_site / "lab.toml"))
    assert nginx is not None
    assert _changed(dict(nginx.files), conf.read_text(), "backend.conf")[0] == (
        "server 10.0.0.11:3000; server 10.0.0.12:3000;  # 10.0.0.11:3000",
        "server backend-1:3000; server backend-2:3000;  # 10.0.0.11:3000")


WEBSOCKETS = ("upstream ws {\n    server 10.0.0.11:3001;\n    server 10.0.0.12:3001;\n}\n"
              "upstream backend_servers {")
AUTH_API = "upstream auth_api {\n    server 10.0.9.9:9000;\n}\nupstream backend_servers {"


def test_other_upstream_blocks(redirect_site: Path) -> None:
    """The pool's hosts on another port (a websocket pool) are the same backends, on their
    one port; another service's block points at a closed port, so NGINX starts and its
    locations answer 502, and the note names the block and its line."""
    conf = redirect_site / "backend.conf"
    text = conf.read_text()
    conf.write_text(text.replace("upstream backend_servers {", WEBSOCKETS))
    nginx = user_nginx(load_config(redirect_site / "lab.toml"))
    assert nginx is not None and nginx.pool == "backend_servers"
    assert _changed(dict(nginx.files), conf.read_text(), "backend.conf")[:2] == [
        ("server 10.0.0.11:3001;", "server backend-1:3000;"),
        ("server 10.0.0.12:3001;", "server backend-2:3000;")]
    assert "upstream ws (" in "\n".join(nginx.notes)
    conf.write_text(text.replace("upstream backend_servers {", AUTH_API))
    other = user_nginx(load_config(redirect_site / "lab.toml"))
    assert other is not None
    assert ("server 10.0.9.9:9000;", f"server {ABSENT_SERVICE};") in _changed(
        dict(other.files), conf.read_text(), "backend.conf")
    assert any("upstream auth_api (" in n and "another service" in n for n in other.notes)
    assert "10.0.9.9:9000" not in other.nodes


def test_lab_toml_names_the_pool(redirect_site: Path) -> None:
    """[nginx] upstream picks the pool among several blocks; an unknown name is refused."""
    conf = redirect_site / "backend.conf"
    conf.write_text(conf.read_text().replace(
        "upstream backend_servers {",
        "upstream canary {\n    server 10.0.0.11:3000;\n    server 10.0.0.12:3000;\n"
        "    server 10.0.0.13:3000;\n}\nupstream backend_servers {"))
    toml = redirect_site / "lab.toml"
    toml.write_text(toml.read_text() + 'upstream = "canary"\n')
    nginx = user_nginx(load_config(toml))
    assert nginx is not None and nginx.pool == "canary"
    assert claimed(load_config(toml)).upstream.name == "canary"
    toml.write_text(toml.read_text().replace('"canary"', '"nope"'))
    with pytest.raises(ConfigError, match=r"\[nginx\] upstream = 'nope': no such upstream"):
        user_nginx(load_config(toml))


SHAPE_REFUSALS = {
    "redirect elsewhere": (
        lambda t: t.replace("return 301 https://$host$request_uri;",
                            "return 301 http://www.example.com$request_uri;"),
        r"backend\.conf:24: port 80 answers \"/\" with a redirect to http://www"),
    "redirect, no TLS": (lambda t: t.replace("listen 443 ssl http2;", "listen 8443;"),
                         "no server listens with ssl"),
    "TLS not on 443": (lambda t: t.replace("listen 443 ssl http2;", "listen 8443 ssl;"),
                       "served on 8443, not on 443"),
    "more addresses": (lambda t: t.replace("keepalive 32;", "server 10.0.0.14:3000 backup;"),
                       r"names 4 backend addresses \(10\.0\.0\.11:3000, .*10\.0\.0\.14:3000\)"),
    "variable": (lambda t: t.replace("10.0.0.12:3000", "$backend"), "a variable"),
}


@pytest.mark.parametrize("case", sorted(SHAPE_REFUSALS))
def test_shapes_the_lab_cannot_run_are_refused(redirect_site: Path, case: str) -> None:
    """A shape the lab cannot rehearse: one ConfigError naming file and line, before start."""
    _assert_refused(redirect_site, *SHAPE_REFUSALS[case])


def test_certbots_redirect_is_followed_for_the_name_the_clients_ask_for(
        redirect_site: Path) -> None:
    """certbot's port-80 server (if ($host = NAME) { return 301 ...; } return 404;) redirects
    the lab's clients, which ask for NAME."""
    conf = redirect_site / "backend.conf"
    conf.write_text(conf.read_text().replace(
        "    return 301 https://$host$request_uri;",
        "    if ($host = api.example.com) {\n        return 301 https://$host$request_uri;\n"
        "    } # managed by Certbot\n    return 404; # managed by Certbot"))
    nginx = user_nginx(load_config(redirect_site / "lab.toml"))
    assert nginx is not None and nginx.redirect == "https://$host$request_uri"


def test_a_site_on_other_ports_is_published_there(example: Path) -> None:
    """A site listening on 8080 (a container behind a cloud load balancer) is reached there:
    the lab publishes the site's own ports."""
    conf = example / "backend.conf"
    conf.write_text(conf.read_text().replace("listen 80;", "listen 8080;"))
    nginx = user_nginx(load_config(example / "lab.toml"))
    assert nginx is not None and (nginx.plain_port, nginx.tls_port) == (8080, 443)
    expected = claimed(load_config(example / "lab.toml"))
    assert {p.container_port for p in expected.documented_ports if p.role == "nginx"} == \
        {"8080/tcp", "443/tcp"}


def test_a_missing_dhparam_is_rfc_7919s_group(example: Path) -> None:
    """ssl_dhparam naming a file the lab was not given gets RFC 7919's ffdhe2048 group."""
    conf = example / "backend.conf"
    conf.write_text(conf.read_text().replace(
        "ssl_protocols", "ssl_dhparam /etc/ssl/dh.pem;\n    ssl_protocols"))
    nginx = user_nginx(load_config(example / "lab.toml"))
    assert nginx is not None
    pem = nginx.copied["/etc/ssl/dh.pem"].decode()
    assert pem.startswith("-----BEGIN DH PARAMETERS-----\nMIIBCAKCAQEA//////////+t+FRYort")


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: t.replace("    ssl_certificate ", "    # ssl_certificate "),
     r"listen 443 ssl http2 with no ssl_certificate"),
    (lambda t: t.replace("server_name api.example.com;", "server_name api.example.com;\n"
                         "    http2 on;"),
     r"backend\.conf:\d+: http2\n\s+why: a directive of nginx 1\.25\.1"),
], ids=["tls without certificate", "newer directive"])
def test_what_nginx_1_22_refuses_is_refused(example: Path, change, message: str) -> None:
    """What Debian's NGINX would refuse to start with is refused before anything starts."""
    conf = example / "backend.conf"
    conf.write_text(change(conf.read_text()))
    with pytest.raises(ConfigError, match=message):
        user_topology(load_config(example / "lab.toml"))


def test_a_whole_conf_without_events_is_refused(tmp_path: Path) -> None:
    """NGINX refuses a whole nginx.conf with no events block; so does the lab, at once."""
    (tmp_path / "nginx.conf").write_text(
        "http { upstream app { server a:80; server b:80; server c:80; }\n"
        "  server { listen 80; location / { proxy_pass http://app; } } }\n")
    (tmp_path / "lab.toml").write_text('[nginx]\nconf = "nginx.conf"\n')
    with pytest.raises(ConfigError, match="without an events block"):
        user_topology(load_config(tmp_path / "lab.toml"))

"""The model of NGINX's hash and ip_hash (tests/integration/test_nginx_hash_live.py holds it against
the real NGINX over 1,200 addresses; these keep what that run and a lab run showed)."""

from __future__ import annotations

import ipaddress

from lab.topology.nginx_hash import first_choice, gateway_for, steerable
from lab.topology.nginx_policy import parse_nginx_policy

SOCKETIO = """
events {}
http {
  upstream nodes {
    hash $remote_addr consistent;
    server server-john:3000;
    server server-paul:3000;
    server server-george:3000;
    server server-ringo:3000;
  }
  server { listen 80; location / { proxy_pass http://nodes; } }
}
"""
NODES = {"server-john:3000": "backend-1", "server-paul:3000": "backend-2",
         "server-george:3000": "backend-3", "server-ringo:3000": "backend-4"}


def _pool(text: str = SOCKETIO):
    return parse_nginx_policy(text, nodes=NODES).upstream


def test_consistent_is_read_from_the_hash_line() -> None:
    pool = _pool()
    assert (pool.balancing, pool.hash_key, pool.hash_consistent) == \
        ("hash", "$remote_addr", True)
    assert steerable(pool)


def test_the_socketio_pool_sends_the_default_gateway_where_nginx_did() -> None:
    # A lab run of tests/corpus/nginx/socketio-hash before the lab picked its gateway:
    # NGINX sent every request from 172.29.0.1 to server-george:3000.
    assert first_choice(_pool(), ipaddress.IPv4Address("172.29.0.1")) == "backend-3"


def test_the_gateway_is_the_first_candidate_nginx_sends_to_the_target() -> None:
    pool = _pool()
    subnet = ipaddress.IPv4Network("172.29.0.0/24")
    candidates = [subnet[i] for i in range(1, 128)]
    chosen = gateway_for(pool, candidates, "backend-1")
    assert chosen is not None and first_choice(pool, chosen) == "backend-1"
    assert all(first_choice(pool, a) != "backend-1" for a in candidates[:candidates.index(chosen)])
    assert gateway_for(pool, candidates, "backend-1") == chosen


def test_ip_hash_reads_three_octets_so_the_subnet_decides() -> None:
    pool = _pool(SOCKETIO.replace("hash $remote_addr consistent;", "ip_hash;"))
    subnet = ipaddress.IPv4Network("172.29.5.0/24")
    assert len({first_choice(pool, a) for a in subnet.hosts()}) == 1


def test_a_key_the_client_cannot_choose_is_not_steered() -> None:
    pool = _pool(SOCKETIO.replace("$remote_addr consistent", "$request_uri"))
    assert not steerable(pool)
    assert first_choice(pool, ipaddress.IPv4Address("172.29.0.1")) is None
    assert gateway_for(pool, [ipaddress.IPv4Address("172.29.0.1")], "backend-1") is None


def test_a_down_server_is_passed_over() -> None:
    text = SOCKETIO.replace("server server-george:3000;", "server server-george:3000 down;")
    pool = _pool(text)
    chosen = {first_choice(pool, ipaddress.IPv4Address(f"10.0.{i}.7")) for i in range(200)}
    assert chosen == {"backend-1", "backend-2", "backend-4"}

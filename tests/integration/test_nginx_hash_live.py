"""The lab's model of NGINX's hash and ip_hash against the real NGINX it runs.

One NGINX of the lab's image balances four upstream blocks (hash consistent and modulo on the
client address and on its binary form, and ip_hash) over four named servers of unequal
weights, one of them ``down``; every server is a closed port, ``proxy_next_upstream off`` and
``max_fails=0``, so each answer is a 502 naming the first server NGINX chose. The client
address is set per request with the realip module, so one host sends from 300 addresses.
"""

from __future__ import annotations

import ipaddress
import random
import uuid

import httpx
import pytest
from tenacity import retry, stop_after_delay, wait_fixed

from lab.engine import LABEL_KIND, LABEL_LAB, ContainerSpec, Engine, FileSpec
from lab.expectations import UpstreamPolicy, UpstreamServer
from lab.topology.nginx_hash import first_choice

SERVERS = (("server-john", 3001, 1, False), ("server-paul", 3002, 2, False),
           ("server-george", 3003, 1, False), ("server-ringo", 3004, 1, True))
BLOCKS = {"chash": "hash $remote_addr consistent", "modhash": "hash $remote_addr",
          "binchash": "hash $binary_remote_addr consistent", "iphash": "ip_hash"}


def _conf() -> str:
    lines = ["events {}", "http {", "  access_log off;"]
    for block, method in BLOCKS.items():
        lines.append(f"  upstream {block} {{ {method};")
        for host, port, weight, down in SERVERS:
            lines.append(f"    server {host}:{port} weight={weight} max_fails=0"
                         f"{' down' if down else ''};")
        lines.append("  }")
    lines += ["  server {", "    listen 8080;", "    set_real_ip_from 0.0.0.0/0;",
              "    real_ip_header X-Real-IP;", "    proxy_next_upstream off;",
              "    proxy_connect_timeout 1s;"]
    for block in BLOCKS:
        lines.append(f"    location /{block} {{ proxy_pass http://{block}; "
                     "add_header X-Up $upstream_addr always; }")
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def _policy(block: str) -> UpstreamPolicy:
    method = BLOCKS[block].split()
    members = tuple(UpstreamServer(f"backend-{port - 3000}", f"{host}:{port}", weight, 0,
                                   down=down) for host, port, weight, down in SERVERS)
    return UpstreamPolicy(
        name=block, servers=tuple(m.node for m in members if not m.down), max_fails=0,
        fail_timeout_s=10, connect_timeout_s=1, read_timeout_s=60, next_upstream=(),
        zone=False, worker_processes=1, balancing="ip_hash" if method[0] == "ip_hash" else "hash",
        members=members, hash_key=method[1] if method[0] == "hash" else "",
        hash_consistent=method[-1] == "consistent")


@pytest.fixture(scope="module")
def hashing_nginx(engine: Engine, lab_images: dict[str, str]):
    name = f"lab-pytest-hash-{uuid.uuid4().hex[:6]}"
    spec = ContainerSpec(
        name=name, image=lab_images["nginx"],
        labels={LABEL_LAB: f"pytest-hash-{uuid.uuid4().hex[:6]}", LABEL_KIND: "sidecar"},
        extra_hosts={host: "127.0.0.1" for host, *_ in SERVERS},
        files=(FileSpec("/etc/lab/hash.conf", _conf().encode()),),
        command=("nginx", "-c", "/etc/lab/hash.conf", "-g", "daemon off;"),
        publish={"8080/tcp": 0}, stop_timeout_s=1)
    engine.create_container(spec)
    try:
        engine.start(name)
        info = engine.inspect(name)
        assert info is not None
        url = f"http://127.0.0.1:{info.published['8080/tcp'][1]}"

        @retry(stop=stop_after_delay(10), wait=wait_fixed(0.1), reraise=True)
        def answering() -> None:
            httpx.get(f"{url}/chash", timeout=2)
        answering()
        yield url
    finally:
        engine.remove_container(name)


@pytest.mark.parametrize("block", list(BLOCKS))
def test_the_model_names_the_server_nginx_chooses(hashing_nginx: str, block: str) -> None:
    policy = _policy(block)
    rng = random.Random(block)
    # ip_hash reads three octets: vary them all; the rest vary the whole address.
    addresses = [ipaddress.IPv4Address(rng.getrandbits(32) | 0x01000000) for _ in range(300)]
    wrong, seen = [], set()
    with httpx.Client(base_url=hashing_nginx, timeout=5) as client:
        for address in addresses:
            response = client.get(f"/{block}", headers={"X-Real-IP": str(address)})
            assert response.status_code == 502, response.text
            port = int(response.headers["x-up"].rsplit(":", 1)[1])
            chosen = f"backend-{port - 3000}"
            seen.add(chosen)
            if first_choice(policy, address) != chosen:
                wrong.append((str(address), chosen, first_choice(policy, address)))
    assert not wrong, (f"{len(wrong)} of {len(addresses)} differ (address, nginx, model): "
                       f"{wrong[:5]}")
    # Every live server was chosen for some address, the down one never.
    assert seen == {"backend-1", "backend-2", "backend-3"}

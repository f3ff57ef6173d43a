"""Fixtures for the reference backend's tests: its Redis, HTTP client and a logged-in user.

Everything real comes from the lab's own topology (``running_lab``, provided by
``tests/conftest.py``); these fixtures only narrow it to what a backend test needs.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import httpx
import pytest

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout_s: float = 30) -> T:
    """Run one coroutine to completion on a fresh event loop, bounded in time."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout_s):
            return await coro

    return asyncio.run(bounded())


@pytest.fixture(scope="session")
def lock_redis_url(engine: Any, lab_images: dict[str, str]) -> Iterator[str]:
    """A Redis of its own for the lock service's tests, from the lab's image, via testcontainers.

    The lab's Redis is shared with three backends taking job locks; the lock tests expire,
    delete and re-seed keys, so they get an instance nobody else writes to. It carries the
    lab's labels, so a killed test run's container is removed by the next run (no Ryuk)."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    from lab.engine import LABEL_KIND, LABEL_LAB
    from lab.topology.lab import LABEL_EPHEMERAL, LABEL_OWNER, owner_id
    from tests.conftest import session_lab_name

    container = (
        DockerContainer(lab_images["redis"], labels={
            LABEL_LAB: session_lab_name("lock-redis"), LABEL_KIND: "node",
            LABEL_OWNER: owner_id(), LABEL_EPHEMERAL: "1"})
        .with_command("redis-server --save '' --appendonly no --protected-mode no --bind 0.0.0.0")
        .waiting_for(LogMessageWaitStrategy("Ready to accept connections").with_startup_timeout(30))
    )
    # Loopback only, like every port the lab publishes; with_bind_ports takes no host address,
    # but its ports mapping goes to docker-py as it is, which accepts (address, port).
    container.ports["6379/tcp"] = ("127.0.0.1", None)
    with container:
        yield f"redis://127.0.0.1:{container.get_exposed_port(6379)}/0"


@pytest.fixture
def job_name(lock_redis_url: str) -> Iterator[str]:
    """A job name no backend uses, whose lock, fence and tick keys are deleted afterwards."""
    import redis

    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.Redis.from_url(lock_redis_url, socket_timeout=2)
    try:
        client.delete(f"lab:lock:{name}", f"lab:fence:{name}", f"lab:tick:{name}")
    finally:
        client.close()


class PacedClient(httpx.Client):
    """An httpx client that waits out NGINX's rate limits (429) instead of failing on them.

    The lab's NGINX limits /api/ without burst, so two back-to-back test requests can be
    refused; a test about the backend must not depend on that. Bounded: 20 tries, ~4 s.
    """

    def request(self, *args: Any, **kwargs: Any) -> httpx.Response:  # type: ignore[override]
        for _ in range(20):
            response = super().request(*args, **kwargs)
            if response.status_code != 429:
                return response
            time.sleep(0.2)
        return response


@pytest.fixture(scope="session")
def http(running_lab: Any) -> Iterator[httpx.Client]:
    """An HTTP client for NGINX in front of the backends (short timeouts: nothing may hang)."""
    with PacedClient(base_url=running_lab.endpoints.nginx_http, timeout=10) as client:
        yield client


def wait_until(predicate: Any, timeout_s: float, interval_s: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns something truthy or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval_s)


def wait_nginx_healthy(http: httpx.Client, timeout_s: float = 20) -> None:
    """Wait until NGINX serves /health again (after a fault, backends may be ejected)."""
    def ok() -> bool:
        try:
            return http.get("/health").status_code == 200
        except httpx.HTTPError:
            return False

    assert wait_until(ok, timeout_s, 0.5), "nginx did not serve /health again"


@pytest.fixture(scope="session")
def user_token(http: httpx.Client, running_lab: Any) -> str:
    """A bearer token for the seeded user1@lab.test."""
    response = http.post("/api/auth/login", json={
        "email": "user1@lab.test", "password": running_lab.secrets.seed_password})
    assert response.status_code == 200, response.text
    return response.json()["token"]

"""Shared fixtures: one Docker engine, one image build and one running lab per test session.

Tests that need Docker are marked ``docker``; `pytest -m "not docker"` runs only the pure
ones. Docker tests never skip silently: without an engine they fail with the lab's message.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from lab.config import LabConfig
from lab.engine import Engine
from lab.errors import LabError
from lab.topology.images import ensure_images
from lab.topology.lab import Lab, remove_orphans

# testcontainers would pull its Ryuk reaper first, which fails without a registry; the
# lab's own label-based cleanup (remove_orphans) removes what a killed test run leaves.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")


def session_lab_name(suffix: str = "") -> str:
    """A lab name unique to this test process (labs of dead test runs are orphans)."""
    return f"pytest-{os.getpid()}{'-' + suffix if suffix else ''}"


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    """The Docker engine, with leftovers of earlier crashed runs removed first."""
    try:
        docker_engine = Engine.connect()
    except LabError as exc:
        pytest.fail(f"Docker tests need a Docker engine: {exc.render()}", pytrace=False)
    remove_orphans(docker_engine)
    yield docker_engine
    docker_engine.close()


@pytest.fixture(scope="session")
def lab_images(engine: Engine) -> dict[str, str]:
    """Every role's image, built once per test run (a no-op when the inputs are unchanged)."""
    refs = ensure_images(engine, LabConfig().build)
    return {role: ref.reference for role, ref in refs.items()}


@pytest.fixture(scope="session")
def running_lab(engine: Engine, lab_images: dict[str, str]) -> Iterator[Lab]:
    """A lab with the default configuration, shared by the tests that leave it as they found it."""
    lab = Lab(engine, LabConfig(name=session_lab_name()))
    try:
        lab.up(ephemeral=True)
        yield lab
    finally:
        lab.down()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that reaches the Docker engine, however indirectly, as ``docker``."""
    for item in items:
        if "engine" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.docker)

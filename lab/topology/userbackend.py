"""A backend of your own (``[backend] image`` or ``build``), run under its contract.

The image runs as it is, with one addition: a statically linked busybox at
``/usr/local/lib/failover-lab/busybox`` (a thin image derived from yours), so that the lab can
ask the backend's health endpoints with ``docker exec`` whatever the image contains, without
sending traffic to a container address. The lab pulls nothing for it: an ``image`` must be on
the Docker engine already (``docker load`` or ``docker build``), a ``build`` folder is built
from the lab's Debian base (its Dockerfile can start with ``ARG BASE`` / ``FROM ${BASE}``).
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Callable
from pathlib import Path

from lab.config import LabConfig
from lab.contract import BackendContract
from lab.engine import LABEL_IMAGE, LABEL_INPUTS, Engine
from lab.errors import ConfigError, ImageBuildError
from lab.topology import images as image_builder
from lab.topology.render import PGBOUNCER_PORT, LabSecrets

BUSYBOX = "/usr/local/lib/failover-lab/busybox"
REPOSITORY = f"{image_builder.REPOSITORY}/user-backend"
_IGNORED = (".git", "node_modules", "__pycache__")


def contract_of(config: LabConfig) -> BackendContract | None:
    """The backend contract in force (None: the reference backend)."""
    return config.backend.contract


def user_backend_env(config: LabConfig, secrets: LabSecrets, node: str,
                     port: int) -> dict[str, str]:
    """The environment a user's backend gets: the contract's variable names, the lab's values."""
    contract = config.backend.contract
    assert contract is not None
    pg = config.postgres
    env = dict(contract.env)
    env[contract.database_url_env] = (f"postgresql://{pg.user}:{secrets.db_password}@pgbouncer:"
                                      f"{PGBOUNCER_PORT}/{pg.database}")
    env[contract.redis_url_env] = "redis://redis:6379/0"
    if contract.node_id_env:
        env[contract.node_id_env] = node
    if contract.port_env:
        env[contract.port_env] = str(port)
    if contract.seed_password_env:
        env[contract.seed_password_env] = secrets.seed_password
    return env


def health_command(config: LabConfig, port: int, path: str) -> tuple[str, ...]:
    """``docker exec`` command asking a user's backend ``path`` (exit 0 on 2xx)."""
    # busybox's own `timeout` bounds it: its wget -T crashes (SIGSEGV) on a 2xx answer.
    return (BUSYBOX, "timeout", "3", BUSYBOX, "wget", "-q", "-O", "-",
            f"http://127.0.0.1:{port}{path}")


def _folder_tar(folder: Path) -> tuple[bytes, str]:
    digest = hashlib.sha256()
    buffer = io.BytesIO()
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and not any(part in _IGNORED for part in p.relative_to(folder).parts))
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path in files:
            name = str(path.relative_to(folder))
            data = path.read_bytes()
            digest.update(name.encode() + b"\0" + data + b"\0")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = path.stat().st_mode & 0o777
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue(), digest.hexdigest()


def _dockerfile_tar(text: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        data = text.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def ensure_user_backend(engine: Engine, config: LabConfig, *,
                        say: Callable[[str], None] = lambda text: None) -> str:
    """The image the lab runs for a user's backend: theirs plus the probe tool (built once)."""
    b = config.backend
    probe = image_builder.ensure_images(engine, config.build, roles=("probe",), say=say)["probe"]
    # ensure_images made sure of the base: the configured one, or the bootstrapped one.
    base = (config.build.base_image if engine.image_id(config.build.base_image)
            else image_builder.BOOTSTRAPPED_BASE)
    if b.build is not None:
        folder = Path(b.build)
        if not (folder / "Dockerfile").is_file():
            raise ConfigError(f"[backend] build = {b.build!r}: no Dockerfile in that folder")
        context, digest = _folder_tar(folder)
        digest = hashlib.sha256(f"{digest}\0{engine.image_id(base)}".encode()).hexdigest()
        source = f"{REPOSITORY}-src:{digest[:12]}"
        if engine.image_id(source) is None:
            say(f"building your backend from {folder}")
            engine.build(context, source, buildargs={"BASE": base},
                         labels={LABEL_IMAGE: "user-backend-src", LABEL_INPUTS: digest[:12]})
    else:
        source = b.image or ""
        if engine.image_id(source) is None and not engine.pull(source):
            raise ImageBuildError(f"[backend] image = {source!r} is not on this Docker engine "
                                  "and cannot be pulled",
                                  hint="`docker load` or `docker build -t` it first, or give "
                                  "[backend] build = \"folder\"")
    source_id = engine.image_id(source) or source
    digest = hashlib.sha256(f"{source_id}\0{probe.reference}".encode()).hexdigest()
    derived = f"{REPOSITORY}:{digest[:12]}"
    if engine.image_id(derived) is None:
        dockerfile = (f"FROM {probe.reference} AS probe\nFROM {source}\n"
                      f"COPY --from=probe /bin/busybox {BUSYBOX}\n")
        engine.build(_dockerfile_tar(dockerfile), derived, buildargs={},
                     labels={LABEL_IMAGE: "user-backend", LABEL_INPUTS: digest[:12]})
    return derived

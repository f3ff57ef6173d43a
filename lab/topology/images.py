"""The lab's images: one Dockerfile per role under ``images/``, all from one Debian base.

An image is tagged with a hash of its build inputs (its folder's files and the base image's
id), so a second ``lab up`` builds nothing and a changed Dockerfile rebuilds only its image.
Where the usual base (``debian:bookworm``) cannot be pulled, the base is bootstrapped once
with ``debootstrap --variant=minbase`` and ``docker import``.

A CA bundle (the host's system bundle by default) is placed as ``build-ca.pem`` in every
build context; images that fetch over HTTPS (pip in the backend) trust it, so builds work
behind TLS-intercepting proxies. It is not part of the hash: it changes trust, not content.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from lab import shipped
from lab.config import BuildConfig
from lab.engine import LABEL_IMAGE, LABEL_INPUTS, Engine
from lab.errors import ImageBuildError

ROLES: tuple[str, ...] = ("postgres", "pgbouncer", "redis", "backend", "nginx", "sidecar")
REPOSITORY = "failover-lab"
BOOTSTRAPPED_BASE = f"{REPOSITORY}/base:bookworm"
SYSTEM_CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")
_IGNORED = ("__pycache__", ".pyc", ".pytest_cache")


def images_dir() -> Path:
    """The shipped ``images/`` folder, wherever the lab is installed (lab.shipped)."""
    return shipped.images_dir()


@dataclass(frozen=True)
class ImageRef:
    """A role's image as the topology uses it."""

    role: str
    reference: str
    built: bool            # built by this call (False: it existed already)
    seconds: float = 0.0


def resolve_ca_bundle(config: BuildConfig) -> bytes:
    """The CA bundle to trust in builds: the named file, the host's bundle, or none."""
    if config.ca_bundle == "":
        return b""
    if config.ca_bundle is not None:
        path = Path(config.ca_bundle).expanduser()
        if not path.is_file():
            raise ImageBuildError(f"CA bundle {path} does not exist", hint="name a PEM file in [build] ca_bundle")
        return path.read_bytes()
    for candidate in SYSTEM_CA_BUNDLES:
        if Path(candidate).is_file():
            return Path(candidate).read_bytes()
    return b""


def _role_files(role: str) -> list[Path]:
    folder = images_dir() / role
    if not (folder / "Dockerfile").is_file():
        raise ImageBuildError(f"no Dockerfile for role {role} in {folder}")
    return sorted(p for p in folder.rglob("*") if p.is_file() and not any(i in str(p) for i in _IGNORED))


def inputs_hash(role: str, base_id: str) -> str:
    """Hash of everything that defines a role's image: its folder's files and the base."""
    digest = hashlib.sha256(f"{role}\0{base_id}\0".encode())
    folder = images_dir() / role
    for path in _role_files(role):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _context(role: str, ca_bundle: bytes) -> bytes:
    folder = images_dir() / role
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path in _role_files(role):
            archive.add(path, arcname=str(path.relative_to(folder)))
        info = tarfile.TarInfo("build-ca.pem")
        info.size = len(ca_bundle)
        archive.addfile(info, io.BytesIO(ca_bundle))
    return buffer.getvalue()


def _debootstrap_stream(mirror: str, workdir: Path) -> Iterator[bytes]:
    root = workdir / "rootfs"
    command = ["debootstrap", "--variant=minbase", "bookworm", str(root), mirror]
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise ImageBuildError(
            "debootstrap of the Debian bookworm base failed",
            details="\n".join((done.stdout + done.stderr).splitlines()[-20:]),
            hint="it needs root and the Debian mirror; set [build] debian_mirror",
        )
    with subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE) as tar:
        assert tar.stdout is not None
        while chunk := tar.stdout.read(1 << 20):
            yield chunk


def ensure_base(engine: Engine, config: BuildConfig, say: Callable[[str], None]) -> str:
    """The base image reference: present, pulled, or (no registry) bootstrapped once."""
    if engine.image_id(config.base_image):
        return config.base_image
    say(f"pulling {config.base_image} ...")
    if engine.pull(config.base_image):
        return config.base_image
    if engine.image_id(BOOTSTRAPPED_BASE):
        say(f"no registry reachable: using the bootstrapped base {BOOTSTRAPPED_BASE}")
        return BOOTSTRAPPED_BASE
    if config.base_image != BuildConfig().base_image:
        raise ImageBuildError(f"cannot pull the base image {config.base_image} and it is not local",
                              hint="load it with `docker load`, or use the default debian:bookworm")
    if shutil.which("debootstrap") is None:
        raise ImageBuildError("no registry reachable and debootstrap is not installed",
                              hint="`apt-get install debootstrap`, or `docker load` a debian:bookworm image")
    say("no registry reachable: bootstrapping a Debian bookworm base with debootstrap (once, ~30 s)")
    with tempfile.TemporaryDirectory(prefix="lab-rootfs-") as workdir:
        engine.import_rootfs(_debootstrap_stream(config.debian_mirror, Path(workdir)),
                             BOOTSTRAPPED_BASE, {LABEL_IMAGE: "base"})
    say(f"bootstrapped {BOOTSTRAPPED_BASE}")
    return BOOTSTRAPPED_BASE


def reference_for(role: str, digest: str) -> str:
    return f"{REPOSITORY}/{role}:{digest[:12]}"


def planned_references(engine: Engine, config: BuildConfig) -> dict[str, str] | None:
    """Each role's image reference for the current inputs, or None if the base is missing."""
    base = config.base_image if engine.image_id(config.base_image) else BOOTSTRAPPED_BASE
    base_id = engine.image_id(base)
    if base_id is None:
        return None
    return {role: reference_for(role, inputs_hash(role, base_id)) for role in ROLES}


def ensure_images(
    engine: Engine,
    config: BuildConfig,
    *,
    roles: tuple[str, ...] = ROLES,
    force: bool = False,
    say: Callable[[str], None] = lambda text: None,
    on_progress: Callable[[str, str], None] = lambda role, line: None,
) -> dict[str, ImageRef]:
    """Build what is missing (or everything, cold, with ``force``); returns each role's image."""
    import time

    base = ensure_base(engine, config, say)
    base_id = engine.image_id(base) or base
    ca_bundle = resolve_ca_bundle(config)
    wanted = {role: reference_for(role, inputs_hash(role, base_id)) for role in roles}
    missing = [r for r in roles if force or engine.image_id(wanted[r]) is None]
    refs = {r: ImageRef(r, wanted[r], built=False) for r in roles if r not in missing}
    if not missing:
        return refs

    def build(role: str) -> ImageRef:
        started = time.monotonic()
        on_progress(role, "starting")
        engine.build(
            _context(role, ca_bundle), wanted[role],
            buildargs={"BASE": base},
            labels={LABEL_IMAGE: role, LABEL_INPUTS: wanted[role].rsplit(":", 1)[1]},
            on_line=lambda line: on_progress(role, line),
            nocache=force,
        )
        # A stable name for people exploring with `docker compose` (compose/).
        engine.tag(wanted[role], f"{REPOSITORY}/{role}:latest")
        on_progress(role, "done")
        return ImageRef(role, wanted[role], built=True, seconds=time.monotonic() - started)

    # Builds mostly wait on the mirror; three at a time keeps two cores busy without thrashing.
    with ThreadPoolExecutor(max_workers=3) as pool:
        for ref in pool.map(build, missing):
            refs[ref.role] = ref
    return {role: refs[role] for role in roles}

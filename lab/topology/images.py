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

import fnmatch
import hashlib
import io
import shutil
import subprocess
import tarfile
import tempfile
import time
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
# In images/, copied into every build context and hashed into every role's inputs.
SHARED_FILES: tuple[str, ...] = ("dpkg-slim.cfg",)
DEPS_DIR = "deps"
# Longest builds first (the backend's pip install, PostgreSQL's packages), so the last build
# to finish is a short one.
BUILD_ORDER: tuple[str, ...] = ("backend", "postgres", "sidecar", "pgbouncer", "nginx", "redis")
# Three at a time: four made the two long builds slower on two cores (all six built in 42 s
# against 38 s with three, cold, one run each).
BUILD_WORKERS = 3
DEPS_PREFIX = "[deps] "


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
            raise ImageBuildError(f"CA bundle {path} does not exist",
                                  hint="name a PEM file in [build] ca_bundle")
        return path.read_bytes()
    for candidate in SYSTEM_CA_BUNDLES:
        if Path(candidate).is_file():
            return Path(candidate).read_bytes()
    return b""


def _files(folder: Path, *, skip: Path | None = None) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()
                  and not any(i in str(p) for i in _IGNORED)
                  and (skip is None or skip not in p.parents))


def _role_files(role: str) -> list[Path]:
    folder = images_dir() / role
    if not (folder / "Dockerfile").is_file():
        raise ImageBuildError(f"no Dockerfile for role {role} in {folder}")
    return _files(folder)


def _deps_folder(role: str) -> Path | None:
    """A role's dependencies image folder (``images/<role>/deps/``), if it has one."""
    folder = images_dir() / role / DEPS_DIR
    return folder if (folder / "Dockerfile").is_file() else None


def _digest(name: str, base_id: str, folder: Path, files: list[Path]) -> str:
    digest = hashlib.sha256(f"{name}\0{base_id}\0".encode())
    for path in files:
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    for shared in SHARED_FILES:
        digest.update(f"shared/{shared}".encode() + b"\0")
        digest.update((images_dir() / shared).read_bytes() + b"\0")
    return digest.hexdigest()


def inputs_hash(role: str, base_id: str) -> str:
    """Hash of everything that defines a role's image: its folder's files (its deps/ folder
    included), the files every image shares and the base."""
    return _digest(role, base_id, images_dir() / role, _role_files(role))


def deps_reference(role: str, base_id: str) -> str | None:
    """The tag of a role's dependencies image: a hash of its deps/ folder and the base only,
    so a change to the role's own code reuses it (the backend's pip layer)."""
    folder = _deps_folder(role)
    if folder is None:
        return None
    digest = _digest(f"{role}-deps", base_id, folder, _files(folder))
    return f"{REPOSITORY}/{role}-deps:{digest[:12]}"


def _context(folder: Path, ca_bundle: bytes) -> bytes:
    """A build context: the folder (without a deps/ folder), the shared files, the CA bundle."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path in _files(folder, skip=folder / DEPS_DIR):
            archive.add(path, arcname=str(path.relative_to(folder)))
        for shared in SHARED_FILES:
            archive.add(images_dir() / shared, arcname=shared)
        info = tarfile.TarInfo("build-ca.pem")
        info.size = len(ca_bundle)
        archive.addfile(info, io.BytesIO(ca_bundle))
    return buffer.getvalue()


def _slim_rules() -> list[str]:
    """dpkg's path-exclude / path-include lines of ``dpkg-slim.cfg``, in order."""
    text = (images_dir() / "dpkg-slim.cfg").read_text()
    return [line.strip() for line in text.splitlines() if line.startswith("path-")]


def _slim_rootfs(root: Path) -> None:
    """What debootstrap leaves that no image reads: apt's lists and caches (~80 MB; every
    Dockerfile runs apt-get update), and what ``dpkg-slim.cfg`` keeps out of later installs
    (matched as dpkg does: ``*`` also matches ``/``)."""
    for pattern in ("var/lib/apt/lists/*_*", "var/cache/apt/*.bin", "var/cache/apt/archives/*.deb"):
        for path in root.glob(pattern):
            path.unlink()
    rules = [rule.partition("=") for rule in _slim_rules()]
    excluded = [pattern for kind, _, pattern in rules if kind == "path-exclude"]
    included = [pattern for kind, _, pattern in rules if kind == "path-include"]
    for path in sorted(root.rglob("*"), reverse=True):  # children before their folders
        name = "/" + str(path.relative_to(root))
        if not any(fnmatch.fnmatch(name, p) for p in excluded) or any(
                fnmatch.fnmatch(name, p) for p in included):
            continue
        if path.is_dir() and not path.is_symlink():
            if not any(path.iterdir()):
                path.rmdir()
        else:
            path.unlink()
    dpkg_cfg = root / "etc/dpkg/dpkg.cfg.d"
    dpkg_cfg.mkdir(parents=True, exist_ok=True)
    (dpkg_cfg / "lab-slim").write_bytes((images_dir() / "dpkg-slim.cfg").read_bytes())


def _run(command: list[str], tool: str) -> None:
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise ImageBuildError(
            f"{tool} of the Debian bookworm base failed",
            details="\n".join((done.stdout + done.stderr).splitlines()[-20:]),
            hint="it needs root and the Debian mirror; set [build] debian_mirror",
        )


def _tar_stream(command: list[str]) -> Iterator[bytes]:
    with subprocess.Popen(command, stdout=subprocess.PIPE) as tar:
        assert tar.stdout is not None
        while chunk := tar.stdout.read(1 << 20):
            yield chunk


def _bootstrap_stream(mirror: str, workdir: Path) -> Iterator[bytes]:
    """A tar stream of a slim Debian bookworm minbase root filesystem (debootstrap)."""
    root = workdir / "rootfs"
    _run(["debootstrap", "--variant=minbase", "bookworm", str(root), mirror], "debootstrap")
    _slim_rootfs(root)
    yield from _tar_stream(["tar", "-C", str(root), "-c", "."])


def bootstrap_base(engine: Engine, config: BuildConfig, reference: str,
                   say: Callable[[str], None] = lambda text: None) -> str:
    """Bootstrap a slim Debian bookworm base with debootstrap and import it as ``reference``;
    returns the image id."""
    if shutil.which("debootstrap") is None:
        raise ImageBuildError("no registry reachable and debootstrap is not installed",
                              hint="`apt-get install debootstrap`, or `docker load` a "
                                   "debian:bookworm image")
    say("no registry reachable: bootstrapping a Debian bookworm base with debootstrap "
        "(once, ~30-60 s)")
    with tempfile.TemporaryDirectory(prefix="lab-rootfs-") as workdir:
        stream = _bootstrap_stream(config.debian_mirror, Path(workdir))
        image_id = engine.import_rootfs(stream, reference, {LABEL_IMAGE: "base"})
    say(f"bootstrapped {reference}")
    return image_id


def ensure_base(engine: Engine, config: BuildConfig, say: Callable[[str], None]) -> str:
    """The base image reference: present, pulled, or (no registry) bootstrapped once."""
    if engine.image_id(config.base_image):
        return config.base_image
    if config.base_image == BuildConfig().base_image and engine.image_id(BOOTSTRAPPED_BASE):
        # Bootstrapped because no registry answered before: no pull attempt on every `lab up`,
        # and the images (hashed over the base's id) stay valid if a registry appears later.
        return BOOTSTRAPPED_BASE
    say(f"pulling {config.base_image} ...")
    if engine.pull(config.base_image):
        return config.base_image
    if engine.image_id(BOOTSTRAPPED_BASE):
        say(f"no registry reachable: using the bootstrapped base {BOOTSTRAPPED_BASE}")
        return BOOTSTRAPPED_BASE
    if config.base_image != BuildConfig().base_image:
        raise ImageBuildError(f"cannot pull the base image {config.base_image} and it is not local",
                              hint="load it with `docker load`, or use the default debian:bookworm")
    bootstrap_base(engine, config, BOOTSTRAPPED_BASE, say)
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
    tag_latest: bool = True,
    say: Callable[[str], None] = lambda text: None,
    on_progress: Callable[[str, str], None] = lambda role, line: None,
) -> dict[str, ImageRef]:
    """Build what is missing (or everything, cold, with ``force``); returns each role's image.

    ``on_progress(role, line)`` gets "queued", "starting", each build output line (a
    dependencies image's prefixed with ``DEPS_PREFIX``) and "done". ``tag_latest=False``
    leaves the ``:latest`` tags (compose's) where they are: the cold benchmark's builds."""
    base = ensure_base(engine, config, say)
    base_id = engine.image_id(base) or base
    ca_bundle = resolve_ca_bundle(config)
    wanted = {role: reference_for(role, inputs_hash(role, base_id)) for role in roles}
    # One list request instead of an inspect per role: this runs before every `lab up`.
    present = {tag for _, tags, _ in engine.list_images(LABEL_IMAGE) for tag in tags}
    missing = [r for r in roles if force or wanted[r] not in present]
    refs = {r: ImageRef(r, wanted[r], built=False) for r in roles if r not in missing}
    if not missing:
        return refs
    missing.sort(key=lambda r: BUILD_ORDER.index(r) if r in BUILD_ORDER else len(BUILD_ORDER))
    for role in missing:
        on_progress(role, "queued")

    def build(role: str) -> ImageRef:
        started = time.monotonic()
        on_progress(role, "starting")
        buildargs = {"BASE": base}
        deps = deps_reference(role, base_id)
        if deps is not None:
            if force or deps not in present:
                engine.build(
                    _context(_deps_folder(role), ca_bundle), deps,  # type: ignore[arg-type]
                    buildargs={"BASE": base},
                    labels={LABEL_IMAGE: f"{role}-deps", LABEL_INPUTS: deps.rsplit(":", 1)[1]},
                    on_line=lambda line: on_progress(role, DEPS_PREFIX + line), nocache=force)
            buildargs["DEPS"] = deps
        engine.build(
            _context(images_dir() / role, ca_bundle), wanted[role],
            buildargs=buildargs,
            labels={LABEL_IMAGE: role, LABEL_INPUTS: wanted[role].rsplit(":", 1)[1]},
            on_line=lambda line: on_progress(role, line),
            nocache=force,
        )
        if tag_latest:
            # A stable name for people exploring with `docker compose` (compose/).
            engine.tag(wanted[role], f"{REPOSITORY}/{role}:latest")
        on_progress(role, "done")
        return ImageRef(role, wanted[role], built=True, seconds=time.monotonic() - started)

    with ThreadPoolExecutor(max_workers=BUILD_WORKERS) as pool:
        for ref in pool.map(build, missing):
            refs[ref.role] = ref
    return {role: refs[role] for role in roles}

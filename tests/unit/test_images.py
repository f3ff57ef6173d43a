"""Image inputs without Docker: what each hash covers, the dependencies image, the slim base."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.topology import images


@pytest.fixture
def image_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of images/ the tests may change."""
    import shutil

    tree = tmp_path / "images"
    shutil.copytree(images.images_dir(), tree)
    monkeypatch.setattr(images, "images_dir", lambda: tree)
    return tree


def test_every_role_has_a_dockerfile_and_the_shared_files_exist() -> None:
    """Each role builds from its own folder; the shared files are where the builds take them."""
    for role in images.ROLES:
        assert (images.images_dir() / role / "Dockerfile").is_file(), role
    for shared in images.SHARED_FILES:
        assert (images.images_dir() / shared).is_file(), shared
    assert set(images.BUILD_ORDER) == set(images.ROLES)


def test_backend_code_change_keeps_its_dependencies_image(image_tree: Path) -> None:
    """Editing the backend's code changes its image's hash but not its deps image's tag."""
    base = "sha256:base"
    role_before = images.inputs_hash("backend", base)
    deps_before = images.deps_reference("backend", base)
    (image_tree / "backend/lab_backend/app.py").write_text("# changed\n", encoding="utf-8")
    assert images.inputs_hash("backend", base) != role_before
    assert images.deps_reference("backend", base) == deps_before


def test_requirements_change_rebuilds_the_dependencies_and_the_role(image_tree: Path) -> None:
    """A changed requirements.txt gives both a new deps tag and a new role hash."""
    base = "sha256:base"
    role_before = images.inputs_hash("backend", base)
    deps_before = images.deps_reference("backend", base)
    requirements = image_tree / "backend/deps/requirements.txt"
    requirements.write_text(requirements.read_text() + "six==1.16.0\n", encoding="utf-8")
    assert images.deps_reference("backend", base) != deps_before
    assert images.inputs_hash("backend", base) != role_before


def test_shared_file_and_base_are_part_of_every_hash(image_tree: Path) -> None:
    """dpkg-slim.cfg and the base image id both change every role's hash."""
    before = {role: images.inputs_hash(role, "sha256:a") for role in images.ROLES}
    assert all(images.inputs_hash(role, "sha256:b") != before[role] for role in images.ROLES)
    (image_tree / "dpkg-slim.cfg").write_text("path-exclude=/usr/share/doc/*\n", encoding="utf-8")
    assert all(images.inputs_hash(role, "sha256:a") != before[role] for role in images.ROLES)


def test_only_the_backend_has_a_dependencies_image() -> None:
    """deps_reference names the backend's deps image; other roles have none."""
    assert images.deps_reference("backend", "x").startswith("failover-lab/backend-deps:")
    assert all(images.deps_reference(r, "x") is None for r in images.ROLES if r != "backend")


def test_the_build_context_leaves_out_deps_and_adds_the_shared_files(tmp_path: Path) -> None:
    """The backend's context has its code, dpkg-slim.cfg and build-ca.pem, not deps/."""
    import io
    import tarfile

    context = images._context(images.images_dir() / "backend", b"PEM")
    with tarfile.open(fileobj=io.BytesIO(context)) as archive:
        names = archive.getnames()
    assert "Dockerfile" in names and "lab_backend/app.py" in names
    assert "dpkg-slim.cfg" in names and "build-ca.pem" in names
    assert not any(n.startswith("deps") for n in names)
    deps = images._context(images.images_dir() / "backend/deps", b"")
    with tarfile.open(fileobj=io.BytesIO(deps)) as archive:
        expected = {"Dockerfile", "requirements.txt", "dpkg-slim.cfg", "build-ca.pem"}
        assert expected <= set(archive.getnames())


def test_slim_rootfs_drops_apt_lists_docs_and_translations_keeps_licences(tmp_path: Path) -> None:
    """A debootstrapped tree loses apt's lists and caches, docs, man pages and translations;
    copyright files, locale.alias and everything else stay, and later installs get the rules."""
    root = tmp_path / "root"
    keep = ["usr/share/doc/bash/copyright", "usr/share/locale/locale.alias", "usr/bin/bash",
            "var/lib/apt/lists/lock", "usr/share/zoneinfo/UTC"]
    drop = ["var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease",
            "var/cache/apt/pkgcache.bin", "var/cache/apt/archives/bash_5.2_amd64.deb",
            "usr/share/doc/bash/README", "usr/share/man/man1/bash.1.gz",
            "usr/share/locale/de/LC_MESSAGES/bash.mo", "usr/share/info/bash.info.gz"]
    for name in keep + drop:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x", encoding="utf-8")
    images._slim_rootfs(root)
    assert all((root / name).exists() for name in keep)
    assert not any((root / name).exists() for name in drop)
    assert not (root / "usr/share/locale/de").exists()
    assert not (root / "usr/share/man/man1").exists()
    rules = (root / "etc/dpkg/dpkg.cfg.d/lab-slim").read_text(encoding="utf-8")
    assert "path-exclude=/usr/share/doc/*" in rules

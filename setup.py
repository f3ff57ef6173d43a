"""Packaging beyond what pyproject.toml can say: the top-level ``scenarios/`` and ``images/``
folders are shipped inside the ``lab`` package as ``lab.shipped.scenarios`` and
``lab.shipped.images`` (see lab/shipped), each subfolder listed as a package of data so that
a wheel holds every build context file and an editable install maps them to the checkout.
The report's templates (``lab/report/templates``) are package data of ``lab.report``."""

from pathlib import Path

from setuptools import find_packages, setup

SHIPPED = {"lab.shipped.scenarios": "scenarios", "lab.shipped.images": "images"}
_SKIPPED = ("__pycache__", ".pytest_cache")


def shipped_packages() -> list[str]:
    """Every folder under the shipped roots, as a dotted package name."""
    packages = []
    for package, folder in SHIPPED.items():
        root = Path(folder)
        for directory in [root, *sorted(p for p in root.rglob("*") if p.is_dir())]:
            if not any(part in _SKIPPED for part in directory.parts):
                packages.append(".".join([package, *directory.relative_to(root).parts]))
    return packages


data = shipped_packages()
setup(
    packages=[*find_packages(include=["lab", "lab.*"]), *data],
    package_dir=SHIPPED,
    package_data={"lab": ["py.typed"], "lab.report": ["templates/*"],
                  **{package: ["*"] for package in data}},
    exclude_package_data={"": ["*.pyc"]},
)

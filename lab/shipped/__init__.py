"""The files the lab ships beside its code: scenario files and image build contexts.

They live in the repository's top-level ``scenarios/`` and ``images/`` folders; packaging
(setup.py) maps those folders to the packages ``lab.shipped.scenarios`` and
``lab.shipped.images``, so a wheel carries them and an editable install points at the
checkout. Both are found through the import system (``importlib.resources``), never
through the module's own location, so they are found wherever the lab is installed.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from lab.errors import LabError


def _folder(package: str) -> Path:
    try:
        resource = files(package)
    except ModuleNotFoundError:
        raise LabError(f"the installed lab has no {package} (its package data is missing)",
                       hint="reinstall: `pip install .` from a checkout, or `pip install -e .`",
                       ) from None
    if not isinstance(resource, Path) or not resource.is_dir():
        # A zipped install (zipimport) would need extracting; pip always installs unpacked.
        raise LabError(f"{package} is not a folder on disk ({resource})",
                       hint="install the lab with pip (unpacked), not as a zip")
    return resource


def scenarios_dir() -> Path:
    """The folder of shipped scenario files (``*.yaml``)."""
    return _folder("lab.shipped.scenarios")


def images_dir() -> Path:
    """The folder of image build contexts, one subfolder per role."""
    return _folder("lab.shipped.images")

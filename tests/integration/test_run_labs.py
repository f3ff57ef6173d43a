"""One `lab run` of several scenarios: a lab per distinct configuration, shared, all removed."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from lab.cli.app import app
from lab.engine import LABEL_LAB, Engine
from tests.conftest import session_lab_name

SHORT = """name: {name}
description: Send a few requests and check they were answered.
traffic:
  - {{client: reads, rate: 10}}
steps:
  - wait: 1
checks:
  - availability: {{client: reads}}
"""


def test_scenarios_share_a_lab_per_configuration(engine: Engine, lab_images: dict[str, str],
                                                 tmp_path: Path) -> None:
    """Two scenarios with the same configuration share one lab; one with lab: overrides gets a
    sibling lab; every lab the command started is gone afterwards."""
    files = []
    for index, overrides in enumerate(("", "", "lab:\n  backend: {job_interval_s: 3.0}\n")):
        path = tmp_path / f"short-{index}.yaml"
        path.write_text(SHORT.format(name=f"short-{index}") + overrides)
        files.append(str(path))
    name = session_lab_name("share")
    result = CliRunner().invoke(app, ["run", *files, "--name", name, "--json",
                                      "--report-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    labs = [document["lab"] for document in json.loads(result.stdout)]
    assert labs[0] == labs[1] == name
    assert labs[2].startswith(f"{name}-") and labs[2] != name
    assert result.stderr.count("lab: starting lab") == 2, result.stderr
    for lab in set(labs):
        assert not engine.list_containers({LABEL_LAB: lab}), lab

"""Every configuration of the corpus either runs or is refused before anything starts, with one
message (file and line where there is one): `lab lint` and `lab explain failover` on each, with
no Docker. No third outcome: no traceback, no "unexpected error"."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from lab.cli.app import app
from tests.corpus import entries

NGINX = [e for e in entries() if e.kind == "nginx"]
runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


@pytest.mark.parametrize("entry", NGINX, ids=lambda e: e.name)
def test_each_config_runs_or_is_refused_with_one_message(entry) -> None:
    """A config the lab should run is linted and explained; one it should refuse gets exit 2
    and one message naming where, before anything starts."""
    assert entry.lab is not None
    explained = _invoke("explain", "failover", "--config", str(entry.lab))
    linted = _invoke("lint", "--config", str(entry.lab))
    for result in (explained, linted):
        assert "Traceback" not in result.output
        assert "unexpected error" not in result.output, result.output
    if entry.refused:
        assert explained.exit_code == 2, (entry.expect, explained.output)
        message = explained.output.strip().splitlines()[0]
        assert message.startswith(("ConfigError:", "LabError:")), explained.output
        # The message names the file (and line) or the scenario field it refuses.
        assert re.search(r"[\w./-]+(:\d+)?", message)
    else:
        assert explained.exit_code == 0, (entry.expect, explained.output)
        assert linted.exit_code in (0, 1), (entry.expect, linted.output)
        assert "predicted" in explained.output.lower() or "expects:" in explained.output

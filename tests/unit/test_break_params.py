"""`lab break`'s parameters: validated by the fault's own model, worded as scenario files are."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from lab.cli.app import app
from lab.cli.faults import fault_spec
from lab.errors import ConfigError
from lab.faults.base import LatencyParams, LossParams


def test_parameters_become_the_faults_own_typed_model() -> None:
    """Numbers, choices and comma-separated lists arrive typed; the node is the target."""
    spec = fault_spec("backend-1", "loss", ["percent=30", "direction=in", "peers=nginx,redis"])
    assert spec.params == LossParams(target="backend-1", percent=30.0, direction="in",
                                     peers=("nginx", "redis"))
    latency = fault_spec("backend-2", "latency", ["delay_ms=150", "ports=8000"])
    assert latency.params == LatencyParams(target="backend-2", delay_ms=150, ports=(8000,))


@pytest.mark.parametrize(("argv", "message"), [
    (["backend-1", "kil"], "ConfigError: unknown fault 'kil' (faults: none, "),
    (["backend-1", "kill", "percent=5"],
     "ConfigError: lab break backend-1 kill: unknown parameter 'percent' (fault kill takes no "),
    (["backend-1", "loss"], "ConfigError: lab break backend-1 loss: percent: Field required"),
    (["backend-1", "loss", "percent=0"],
     "ConfigError: lab break backend-1 loss: percent: Input should be greater than 0"),
    (["backend-1", "loss", "percent=30", "colour=red"],
     "ConfigError: lab break backend-1 loss: unknown parameter 'colour' (fault loss takes peers,"),
    (["backend-1", "loss", "percent"],
     "ConfigError: lab break backend-1 loss: 'percent' is not key=value (fault loss takes "),
    (["backend-1", "kill", "target=backend-2"],
     "ConfigError: lab break backend-1 kill: unknown parameter 'target' (the node is the first"),
    (["backend-1", "throttle", "rate=fast"],
     "ConfigError: lab break backend-1 throttle: rate: String should match pattern"),
    (["backend-1", "kill", "--for", "5 parsecs"], "ConfigError: --for 5 parsecs:"),
    (["backend-1", "kill", "--for", "0s"], "ConfigError: --for 0s: must be more than 0"),
])
def test_bad_input_exits_2_with_one_line(argv: list[str], message: str) -> None:
    """A misspelt fault, an unknown or missing parameter: exit 2, one line naming the problem."""
    result = CliRunner().invoke(app, ["break", *argv, "--name", "no-such-lab-for-this-test"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(message), lines[0]


def test_the_same_wording_as_a_scenario_file() -> None:
    """The scenario loader and `lab break` say an unknown parameter the same way."""
    with pytest.raises(ConfigError) as error:
        fault_spec("backend-1", "kill", ["percent=5"])
    assert "unknown parameter 'percent' (fault kill takes" in error.value.message

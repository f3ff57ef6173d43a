"""Faults own their meaning: each definition's Effect, and how it agrees with what else the
definition says (NGINX's view of the target, whether its heal waits for readiness)."""

from __future__ import annotations

import pytest

from lab.expectations import FailureMode
from lab.faults import FAULTS, FaultDef
from lab.history import Effect


def _where(test) -> set[str]:
    return {d.name for d in FAULTS if test(d.effect)}


def test_the_built_in_faults_mean_what_the_checks_read() -> None:
    """The effects give exactly the sets the checks once named: the process ends (kill, stop,
    restart), drains first (stop, restart), dies abruptly (kill), is frozen (freeze), and the
    target is out until the heal (kill, stop, freeze, partition, reset; a restart is over at
    once)."""
    assert _where(lambda e: e.ends) == {"kill", "stop", "restart"}
    assert _where(lambda e: e.drains) == {"stop", "restart"}
    assert _where(lambda e: e.ends_abruptly) == {"kill"}
    assert _where(lambda e: e.freezes) == {"freeze", "process-stop"}
    assert _where(lambda e: e.outage) == {"kill", "stop", "freeze", "partition", "reset",
                                          "process-stop"}
    assert _where(lambda e: e.slows) == {"loss", "throttle", "latency", "cpu-starve"}
    assert FAULTS.get("none").effect == Effect()


@pytest.mark.parametrize("definition", list(FAULTS), ids=lambda d: d.name)
def test_each_definition_agrees_with_itself(definition: FaultDef) -> None:
    """A fault NGINX sees as unreachable ends or cuts off its target, a frozen one freezes it,
    and a heal that waits for readiness follows a fault on the process itself."""
    effect = definition.effect
    if definition.failure_mode is FailureMode.UNREACHABLE:
        assert effect.ends or effect.cuts_off
    if definition.failure_mode is FailureMode.FROZEN:
        assert effect.freezes
    assert definition.lifecycle == (effect.ends or effect.freezes)
    assert definition.band.colour.startswith("#") and definition.band.legend


def test_an_effect_says_itself_and_refuses_nonsense() -> None:
    """The effect in words, for people and the reference; draining a process that does not
    end is refused."""
    assert FAULTS.get("restart").effect.text() == "ends (SIGTERM, drains), started again at once"
    assert FAULTS.get("kill").effect.text() == "ends (abruptly)"
    assert FAULTS.get("none").effect.text() == "nothing"
    with pytest.raises(TypeError, match="must end it"):
        Effect(drains=True)

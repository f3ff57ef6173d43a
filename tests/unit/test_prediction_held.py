"""Predictions held against the run: each prediction with a range says whether what its check
measured fell in it (the configuration's model tested on the run, apart from both verdicts).
Simulated runs (``nginx_sim``) judged through the registry, as ``lab run`` judges them."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from nginx_sim import Fault, Nginx, Simulation, Stream, expectations

from lab.checks import CHECKS, CheckContext, CheckResult, Verdict, run_check
from lab.checks.registry import objective_hooks, predict
from lab.expectations import FailureMode
from lab.objectives import defaults
from lab.scenarios.judge import held as hold
from lab.scenarios.loader import load_scenario
from lab.verdict import Measured, Prediction

pytestmark = pytest.mark.covers("check:ejection", "check:readmission", "check:availability")

READS = (Stream(20.0, jitter_s=0.025),)
MODES = {"unreachable": FailureMode.UNREACHABLE, "refused": FailureMode.REFUSED,
         "frozen": FailureMode.FROZEN}


def held(check: str, params: dict[str, str], real: Nginx, claimed: Nginx,
         mode: str = "unreachable", seed: int = 1, predicted_from: Nginx | None = None
         ) -> Prediction:
    """``check``'s prediction from ``predicted_from`` (else ``claimed``), held against a
    simulated run of ``real`` judged against ``claimed``."""
    history = Simulation(nginx=real, streams=READS, fault=Fault(mode=mode), duration_s=14
                         ).run(seed)
    definition = CHECKS.get(check)
    spec = definition.params(**params)
    objectives = defaults().values
    context = CheckContext(history=history, expectations=expectations(claimed.policy()),
                           failure_modes={"backend-1": MODES[mode]}, rate_per_s=20.0,
                           planned_s=14.0)
    before = replace(context, history=type(history)(),
                     expectations=expectations((predicted_from or claimed).policy()))
    (prediction,) = predict(definition, spec, before, objectives)
    result = run_check(definition, spec, context, objectives)
    (hook,) = [h for h in objective_hooks(definition) if h.measure is not None]
    return prediction.compare(hook.measure(result))


def test_a_range_holds_when_the_measurement_meets_it() -> None:
    prediction = Prediction("ejection", "ejection", "<= 50 s", "within 1.2 s", True, "", high=1.2)
    assert prediction.compare(Measured.exactly(0.8, "0.8 s")).held is True
    assert prediction.compare(Measured.exactly(1.3, "1.3 s")).held is False
    # An interval (a share of n requests) holds when it meets the range at all.
    share = Prediction("availability", "availability", ">= 0.999", "up to 1 in 3", False, "",
                       high=1 / 3)
    assert share.compare(Measured(0.30, 0.40, "0.35")).held is True
    assert share.compare(Measured(0.34, 0.40, "0.37")).held is False
    # "never": kept in rotation throughout a 9 s window is [9, inf).
    never = Prediction("ejection", "ejection", "<= 50 s", "never ejected", False, "",
                       low=math.inf, high=math.inf)
    assert never.compare(Measured(9.0, math.inf, "kept")).held is True
    assert never.compare(Measured.exactly(1.0, "1 s")).held is False
    assert prediction.compare(Measured(9.0, math.inf, "kept")).held is False


def test_a_statement_or_nothing_measured_is_not_compared() -> None:
    statement = Prediction("ejection", "ejection", "<= 50 s", "not by timed-out tries", None, "")
    assert statement.compare(Measured.exactly(1.0, "1 s")).held is None
    bounded = Prediction("ejection", "ejection", "<= 50 s", "within 1 s", True, "", high=1.0)
    assert bounded.compare(None).held is None


@pytest.mark.parametrize("mode", ["unreachable", "refused"])
def test_the_honest_configuration_holds_every_prediction(mode: str) -> None:
    """NGINX running the configuration it was predicted from: ejection, re-admission and
    availability each fall in their predicted range."""
    config = replace(Nginx(), connect_timeout_s=1.0)
    for check, params in (("ejection", {"target": "backend-1"}),
                          ("readmission", {"target": "backend-1"}), ("availability", {})):
        prediction = held(check, params, config, config, mode)
        assert prediction.held is True, (check, prediction.predicted, prediction.compared)


def test_a_failing_backend_without_retries_holds_its_share() -> None:
    """No retry and no ejection: about 1 in 3 requests fail while a backend is down, and the
    run's share (with its interval) meets that."""
    config = replace(Nginx(), max_fails=0, next_upstream=("http_502",), connect_timeout_s=1.0)
    prediction = held("availability", {}, config, config, "refused")
    assert prediction.predicted == "about 1 in 3 requests fail while a backend is down"
    assert prediction.held is True, prediction.compared


def test_a_model_one_step_off_misses() -> None:
    """Predicted from a configuration that retries, measured on an NGINX that does not: the
    availability prediction (no client error) misses. Predicted from max_fails 3, measured on
    an NGINX that conforms to max_fails 6, the ejection prediction misses; measured on one that
    departs from its configuration, it is not compared (the replay's ejection is not NGINX's)."""
    claimed = replace(Nginx(), connect_timeout_s=1.0)
    real = replace(claimed, next_upstream=("http_502",))
    assert held("availability", {}, real, claimed, "refused").held is False
    six = replace(claimed, max_fails=6)
    assert held("ejection", {"target": "backend-1"}, six, six, "refused",
                predicted_from=claimed).held is False
    never = replace(claimed, max_fails=0)
    assert held("ejection", {"target": "backend-1"}, never, claimed, "refused").held is None


def test_a_run_holds_each_prediction_against_its_checks_result() -> None:
    """``lab.scenarios.judge.held`` finds the check a prediction names (the registry's name; the
    result carries the instance's label) and leaves unbounded predictions uncompared."""
    scenario = load_scenario("failover")
    ejection = CheckResult("ejection", Verdict.PASS, "", "", "", label="ejection backend-1",
                           values=(("ejected", 1.0), ("measured_s", 2.0), ("violations", 0.0)))
    within = Prediction("ejection", "ejection", "<= 50 s", "within 1 s", True, "", high=1.0)
    statement = Prediction("ejection", "ejection", "<= 50 s", "not by timed-out tries", None, "")
    compared, left = hold(scenario, (ejection,), (within, statement))
    assert (compared.held, compared.compared) == (False, "2.000 s")
    assert left.held is None and left == statement


def test_a_fault_that_only_slows_is_not_predicted_to_eject() -> None:
    """cpu-starve, throttle, latency leave every try answered: no ejection window is predicted
    (one was, from the kill's arithmetic, and missed on a starved backend kept in rotation)."""
    definition = CHECKS.get("ejection")
    context = CheckContext(history=type(Simulation().run(0))(),
                           expectations=expectations(Nginx().policy()),
                           failure_modes={"backend-1": None}, rate_per_s=20.0)
    (prediction,) = predict(definition, definition.params(target="backend-1"), context,
                            defaults().values)
    assert prediction.predicted == "not ejected while it answers" and not prediction.bounded


def test_the_run_says_each_compared_prediction_with_its_range() -> None:
    """Under `lab run`'s table: held or MISSED, the prediction, the range it was held to (the
    bound with the arrivals' spread, not only the predicted text), and the measurement."""
    from lab.report import held_lines

    within = Prediction("ejection", "ejection", "<= 50 s", "out of rotation within 1.360 s",
                        True, "", high=1.52).compare(Measured.exactly(1.2, "1.200 s"))
    never = Prediction("ejection", "ejection", "<= 50 s", "never ejected", False, "",
                       low=math.inf, high=math.inf).compare(Measured.exactly(0.3, "0.300 s"))
    statement = Prediction("ejection", "ejection", "<= 50 s", "not by timed-out tries", None, "")
    lines = [line.plain for line in held_lines((within, never, statement))]
    assert lines == [("  prediction held: ejection (ejection) out of rotation within 1.360 s "
                     "(range <= 1.52): measured 1.200 s"),
                     ("  prediction MISSED: ejection (ejection) never ejected (range never): "
                     "measured 0.300 s")]
    share = Prediction("availability", "availability", ">= 0.999", "about 1 in 3", False, "",
                       low=0.2, high=1 / 3)
    assert share.range_text() == "0.2 to 0.3333"

"""A new fault is one file, and so is a new check with an objective: in a copy of ``lab/`` that
differs from this one by two new files only (``faults/blink.py``, ``checks/answers_in_outages.py``),
the registries find them, scenario files accept them, the fault's effect reaches the checks, its
record's state and its leftovers hook are its own, and the report draws its band and the check's
marker, with no other file edited."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import lab

FAULT = '''"""blink: the node goes dark until the heal (exists only in a test)."""

from dataclasses import dataclass

from lab.faults.base import Band, FaultDef, FaultParams, FaultSpec, Seen, register
from lab.history import Effect

@dataclass
class Blink:
    spec: FaultSpec
    lab: object

    def inject(self) -> str:
        return "blinked"

    def heal(self) -> str:
        return "nothing to heal"


def in_place(seen: Seen) -> str:
    return "blinking" if seen.status != "running" else f"gone: {seen.target} is running"


def leftovers(lab, nodes):
    return [f"looked for blinks in {lab}"]


register(FaultDef(name="blink", params=FaultParams, factory=Blink, family="blink",
                  summary="end the node's process until the heal",
                  effect=Effect(ends=True), band=Band("#123456", "blinked"),
                  in_place=in_place, leftovers=leftovers))
'''

CHECK = '''"""answers-in-outages: the share of requests answered ok while a fault took a node out
(exists only in a test), judged against the availability objective."""

import math

from lab.checks.base import CheckResult, Verdict
from lab.checks.registry import (
    After,
    CheckDef,
    NoParams,
    ObjectiveHook,
    TimelineMark,
    measured_objective,
    register,
)
from lab.history import Outcome

NAME = "answers-in-outages"


def judge(ctx, params):
    windows = [(i.at, h.at if h else math.inf, i.at) for i, h in ctx.history.fault_windows()
               if i.effect.outage]
    inside = [(r, at) for r in ctx.history.requests for lo, hi, at in windows
              if lo <= r.sent_at <= hi]
    if not inside:
        return CheckResult(NAME, Verdict.UNKNOWN, "no request during an outage", "-", "-")
    ok = [r for r, _ in inside if r.outcome is Outcome.OK]
    first = min(r.sent_at - at for r, at in inside if r.outcome is not Outcome.OK)
    return CheckResult(NAME, Verdict.PASS, f"{len(ok)} of {len(inside)} ok", "-", "-",
                       values=(("share", len(ok) / len(inside)), ("measured_s", first)))


def availability(result, objectives, ctx, params):
    share = result.value("share")
    return measured_objective("availability", objectives, value=share,
                              passed=None if share is None else share >= objectives.availability,
                              measured=result.measured, derivation="ok / sent in outages")


register(CheckDef(name=NAME, params=NoParams, judge=judge,
                  summary="requests answered ok while a node was out",
                  marker=TimelineMark("first failure", After.INJECT),
                  objectives=(ObjectiveHook("availability", availability),)))
'''

PROBE = '''
import json

from lab.checks import CHECKS, CheckContext, run_check
from lab.checks.lock_spans import run_span
from lab.engine import ContainerInfo
from lab.faults import FAULTS, FaultParams, FaultSpec, base, record
from lab.history import FaultEvent, FaultPhase, History, JobRun, Outcome, RequestRecord
from lab.objectives import Objectives
from lab.report import html, stored
from lab.scenarios.loader import parse_scenario
from lab.topology.expect import claimed
from lab.config import LabConfig
import lab

T0 = 1_800_000_000.0
out = {"lab": lab.__file__, "faults": FAULTS.names(), "checks": CHECKS.names()}

scenario = parse_scenario("""
name: blinking
description: blink backend-1
steps:
  - inject: {fault: blink, target: backend-1}
  - wait: 1
  - heal: {fault: blink, target: backend-1}
checks:
  - answers-in-outages
""", "blinking.yaml")
out["scenario"] = [type(s).__name__ for s in scenario.steps] + [c.check for c in scenario.checks]

effect = FAULTS.get("blink").effect
inject = FaultEvent("blink", "backend-1", FaultPhase.INJECT, T0 + 2, T0 + 1.9, "blinked", effect)
heal = FaultEvent("blink", "backend-1", FaultPhase.HEAL, T0 + 3, T0 + 2.9, "", effect)
# The lock checks bound an unfinished run by the fault that ended its process: blink does.
unfinished = JobRun(1, "cleanup", "backend-1", 7, 1, T0 + 1, None, "running")
out["death"] = run_span(unfinished, [inject]).end - T0

info = ContainerInfo(id="x", name="lab-t-backend-1", status="running", labels={},
                     started_at=None, ip_address=None, published={}, env={}, exit_code=None)
spec = FaultSpec("blink", FaultParams(target="backend-1"))
rec = record.new_record("t", spec, FAULTS.get("blink").factory(spec, None), "blinked",
                        record.manual())
out["state"] = record.state(rec, {"lab-t-backend-1": info}, "t")
# heal_leftovers runs every fault's hook (the others need Docker): blink's is among them.
out["leftovers"] = [hook("a lab", None) for hook in base.leftover_hooks()
                    if hook is FAULTS.get("blink").leftovers][0]

history = History(faults=[inject, heal], requests=[
    RequestRecord(i, "reads", "GET", "/", T0 + i * 0.5, T0 + i * 0.5, 0.01 if i % 2 else None,
                  200 if i % 2 else None, None, Outcome.OK if i % 2 else Outcome.UNKNOWN)
    for i in range(10)])
ctx = CheckContext(history=history, expectations=claimed(LabConfig()))
result = run_check(CHECKS.get("answers-in-outages"), CHECKS.get("answers-in-outages").params(),
                   ctx, Objectives())
out["check"] = [result.verdict.value, result.measured,
                [(o.name, o.verdict.value) for o in result.objectives]]

document = {"schema": 1, "scenario": "blinking", "seed": 1, "started_at": T0,
            "finished_at": T0 + 5, "verdict": "fail",
            "checks": [{"name": result.name, "verdict": "fail", "measured": result.measured,
                        "values": dict(result.values)}],
            "history": {"faults": [
                {"fault": e.fault, "target": e.target, "phase": e.phase.value, "at": e.at,
                 "started_at": e.started_at, "detail": e.detail,
                 "effect": {"ends": True}} for e in (inject, heal)]}}
page = html.render(stored.from_document(document))
out["band"] = "fill:#123456" in page and "blinked: inject to heal" in page
out["marker"] = 'data-check="answers-in-outages"' in page
print(json.dumps(out))
'''


def test_a_new_fault_and_a_new_check_are_one_file_each(tmp_path: Path) -> None:
    """Two new files in a copy of lab/, nothing else edited: both registries, the scenario
    schema, the lock checks, the fault record, the leftover repair and the report take them."""
    source = Path(lab.__file__).parent
    copy = tmp_path / "lab"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "faults" / "blink.py").write_text(FAULT)
    (copy / "checks" / "answers_in_outages.py").write_text(CHECK)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["lab"].startswith(str(copy))             # the copy, not the worktree, was run
    assert "blink" in out["faults"] and "answers-in-outages" in out["checks"]
    assert out["scenario"] == ["InjectStep", "WaitStep", "HealStep", "answers-in-outages"]
    assert out["death"] == 2.0                          # its effect ends the process
    assert out["state"] == "gone: backend-1 is running"
    assert out["leftovers"] == ["looked for blinks in a lab"]
    assert out["check"][0] == "pass" and out["check"][2] == [["availability", "fail"]]
    assert out["band"] and out["marker"]

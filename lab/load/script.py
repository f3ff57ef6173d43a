"""The k6 script a plan becomes: one ``ramping-arrival-rate`` scenario per request kind.

Each request carries its iteration's number and its scenario's start as k6 metadata (k6's
high-cardinality field: a tag per iteration would be one k6 time series each), so k6's own
``http_req_duration`` sample of it says when it was due (``lab.load.results`` derives the
intended send time from the number and the schedule). It also sends that number as
``X-Request-Id``, which NGINX logs: the serving backend comes from NGINX's access log, joined
on the id. k6 cannot tag its samples with a response header, and reading the headers and
recording a second metric per answer cost about a third more of k6's CPU per request
(measured: 590 against 415 us at 500 req/s).

The script reads everything about the lab from environment variables, the same ones a user's
own script gets (README, "lab load"): ``LAB_BASE_URL``, ``LAB_TOKEN``, ``LAB_USERS`` (JSON:
email, token, conversation_id of each seeded user) and ``LAB_PASSWORD``.
"""

from __future__ import annotations

import json
from typing import Any

from lab.load.profiles import REQUEST_TIMEOUT_S, LoadPlan, RequestKind

REQUEST_ID_HEADER = "X-Request-Id"
GRACEFUL_STOP_S = REQUEST_TIMEOUT_S
WRITE_MARKER = "lab-load"
# Tags the lab's scripts keep on k6's own samples: fewer columns, a smaller CSV, less k6 CPU.
SYSTEM_TAGS = ("status", "method", "name", "scenario", "expected_response", "error_code", "error")


def _duration(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


def k6_options(plan: LoadPlan) -> dict[str, Any]:
    """The script's ``options``: scenarios, thresholds and what k6 keeps."""
    scenarios: dict[str, Any] = {}
    for kind in plan.kinds:
        pre, most = plan.vus_for(kind)
        start, stages = plan.kind_rates(kind)
        # Per minute: k6 wants whole iterations per timeUnit, and a share of a rate rarely is.
        scenarios[kind.name] = {
            "executor": "ramping-arrival-rate",
            "exec": kind.name,
            "startRate": round(start * 60),
            "timeUnit": "1m",
            "preAllocatedVUs": pre,
            "maxVUs": most,
            "stages": [
                {"duration": _duration(s.duration_s), "target": round(s.target * 60)}
                for s in stages
            ],
            "gracefulStop": _duration(GRACEFUL_STOP_S),
        }
    overrides = {k.name: k.p95_s for k in plan.kinds if k.p95_s is not None}
    return {
        "discardResponseBodies": True,
        "systemTags": list(SYSTEM_TAGS),
        "summaryTrendStats": ["avg", "min", "med", "max", "p(90)", "p(95)", "p(99)"],
        "scenarios": scenarios,
        "thresholds": plan.thresholds.k6(tuple(k.name for k in plan.kinds), overrides),
    }


def _body(kind: RequestKind) -> str:
    if kind.body == "message":
        return (
            "JSON.stringify({conversation_id: u.conversation_id, "
            f"body: '{WRITE_MARKER} ' + exec.scenario.iterationInTest}})"
        )
    if kind.body == "login":
        return "JSON.stringify({email: u.email, password: PASSWORD})"
    return "null"


def _function(kind: RequestKind) -> str:
    headers = [f"'{REQUEST_ID_HEADER}': id"]
    if kind.body:
        headers.append("'Content-Type': 'application/json'")
    if kind.auth:
        headers.append("Authorization: 'Bearer ' + u.token")
    params = f"{{headers: {{{', '.join(headers)}}}, timeout: '{REQUEST_TIMEOUT_S}s'}}"
    path = json.dumps(kind.path)
    return f"""export function {kind.name}() {{
  const u = user();
  const id = start({json.dumps(kind.name)});
  http.request({json.dumps(kind.method)}, BASE + {path}, {_body(kind)}, {params});
  done();
}}"""


def render_script(plan: LoadPlan) -> str:
    """The whole script for a plan (a pure function of it)."""
    needs_users = any(k.auth or k.body for k in plan.kinds)
    options = json.dumps(k6_options(plan), indent=2)
    functions = "\n\n".join(_function(kind) for kind in plan.kinds)
    users_check = (
        """
if (USERS.length === 0) {
  throw new Error('LAB_USERS names no user: the lab passes its seeded users there');
}"""
        if needs_users
        else ""
    )
    return f"""// Written by Failover Lab for the load profile {plan.profile!r}: {plan.describe()}.
// The lab reads every answer back from k6's CSV output (http_req_duration, with metadata).
import http from 'k6/http';
import exec from 'k6/execution';

const BASE = __ENV.LAB_BASE_URL;
const USERS = JSON.parse(__ENV.LAB_USERS || '[]');
const PASSWORD = __ENV.LAB_PASSWORD || '';
{users_check}
export const options = {options};

function user() {{
  return USERS.length ? USERS[exec.scenario.iterationInTest % USERS.length] : {{}};
}}

// The iteration's number and its scenario's start (ms) on this request's samples only.
function start(kind) {{
  const meta = exec.vu.metrics.metadata;
  meta.i = String(exec.scenario.iterationInTest);
  meta.s = String(exec.scenario.startTime);
  return kind + '-' + meta.i;
}}

function done() {{
  const meta = exec.vu.metrics.metadata;
  delete meta.i;
  delete meta.s;
}}

{functions}
"""

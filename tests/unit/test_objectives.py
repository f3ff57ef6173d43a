"""The objectives table: units, defaults from the checklist, and how lab.toml, a scenario and
--objective override one another."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import pytest
from pydantic import BaseModel, Field

from lab.errors import ConfigError
from lab.objectives import (
    DEFAULT_SOURCE,
    MERGED,
    OBJECTIVE_NAMES,
    Objectives,
    RateLimitObjective,
    Stated,
    defaults,
    document,
    load_objectives,
    parse_assignments,
    statements,
    threshold_text,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "objectives.md"


def test_defaults_are_the_checklists_targets() -> None:
    """Out of rotation in 50 s, back in 30 s, 99.9%, /health under 5 ms, 30 connections for 300
    clients, auth 10 r/s burst 5, api 100 r/s, webhooks 50 r/s, HSTS of a year."""
    o = Objectives()
    assert (o.ejection, o.readmission, o.availability, o.health_latency) == (50, 30, 0.999, 0.005)
    assert (o.pool_server_connections, o.pool_clients, o.duplicate_job_runs) == (30, 300, 0)
    assert o.rate_limits["/api/auth/"] == RateLimitObjective(rate_per_s=10, burst=5)
    assert o.rate_limits["/api/"].rate_per_s == 100 and o.rate_limits["/webhooks/"].rate_per_s == 50
    assert o.hsts_max_age == 365 * 86400
    assert {d["name"]: d["source"] for d in document(defaults())}["ejection"] == "checklist"
    assert {d["name"]: d["source"]
            for d in document(defaults())}["failing_latency"] == "lab default"


@pytest.mark.parametrize(("value", "seconds"), [
    (50, 50.0), (2.5, 2.5), ("50s", 50.0), ("500ms", 0.5), ("1m", 60.0), ("365d", 31_536_000.0),
    ("1y", 31_536_000.0), ("5 ms", 0.005),
])
def test_durations_carry_their_unit(value: object, seconds: float) -> None:
    """A duration is seconds, or a number with ms, s, m, h, d or y."""
    assert defaults().with_overrides({"ejection": value},
                                     "t").values.ejection == pytest.approx(seconds)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"ejection": "50kg"}, "objectives.ejection: unknown unit 'kg'"),
    ({"ejection": True}, "objectives.ejection: a duration, not a boolean"),
    ({"availability": "lots"}, "objectives.availability: 'lots' is not a ratio"),
    ({"availability": "120%"}, "objectives.availability: Input should be less than or equal to 1"),
    ({"duplicate_job_runs": 0.5}, "objectives.duplicate_job_runs: Input should be a valid integer"),
    ({"ejektion": 3}, "objectives.ejektion: unknown objective"),
    ({"rate_limits": {"/api/": "fast"}}, "is not a rate limit"),
])
def test_bad_values_are_named_with_their_field(overrides: dict, message: str) -> None:
    """An unknown objective, a wrong unit or a wrong type names the field."""
    with pytest.raises(ConfigError) as error:
        defaults().with_overrides(overrides, "lab.toml")
    assert message in error.value.render()
    assert error.value.render().startswith("lab.toml: invalid objectives")


def test_later_sources_win_and_are_remembered() -> None:
    """lab.toml, then a scenario, then --objective; rate limits merge by location."""
    in_force = (defaults().with_overrides({"ejection": "20s", "rate_limits": {"/api/": "5r/s"}},
                                          "lab.toml")
                .with_overrides({"ejection": "10s"}, "scenario failover")
                .with_overrides(parse_assignments(["availability=99%"]), "--objective"))
    values = in_force.values
    assert (values.ejection, values.availability) == (10.0, 0.99)
    assert values.rate_limits["/api/"].rate_per_s == 5 and "/api/auth/" in values.rate_limits
    assert in_force.source("ejection") == "scenario failover"
    assert in_force.source("availability") == "--objective"
    assert in_force.source("rate_limits") == "lab.toml"
    assert in_force.source("readmission") == "checklist"


def test_command_line_assignments() -> None:
    """NAME=VALUE, and rate_limits.<location>=<rate> for one location."""
    assert parse_assignments(["ejection=5s", "rate_limits./api/auth/=10r/s burst=5"]) == {
        "ejection": "5s", "rate_limits": {"/api/auth/": "10r/s burst=5"}}
    for bad, message in ((["ejection"], "expected NAME=VALUE"),
                         (["speed=1"], "unknown objective 'speed'"),
                         (["rate_limits=10r/s"], "name the location"),
                         (["ejection=soon"], "'soon' is not a duration")):
        with pytest.raises(ConfigError) as error:
            parse_assignments(bad)
        assert message in error.value.render()


def test_lab_toml_table(tmp_path: Path) -> None:
    """[objectives] of a lab.toml is read over the defaults; the lab's own
    sections are ignored here."""
    path = tmp_path / "lab.toml"
    path.write_text('[nginx]\nmax_fails = 1\n[objectives]\nreadmission = "15s"\n'
                    '[objectives.rate_limits]\n"/webhooks/" = "20r/s burst=2"\n')
    in_force = load_objectives(path)
    assert in_force.values.readmission == 15
    assert in_force.values.rate_limits["/webhooks/"] == RateLimitObjective(rate_per_s=20, burst=2)
    assert in_force.source("readmission") == str(path)
    path.write_text("[objectives]\nreadmission = [1, 2]\n")
    with pytest.raises(ConfigError, match="objectives.readmission"):
        load_objectives(path)


def test_every_objective_has_a_threshold_text() -> None:
    """Each objective reads as a comparison with its unit."""
    values = Objectives()
    assert threshold_text(values, "ejection") == "<= 50 s"
    assert threshold_text(values, "availability") == ">= 0.999"
    assert threshold_text(values, "health_latency") == "p50 < 5 ms"
    assert threshold_text(values, "rate_limits").startswith("/api/auth/ <= 10 r/s burst 5")
    for name in OBJECTIVE_NAMES:
        assert threshold_text(values, name)


def test_header_and_health_tables_merge_and_headers_can_be_dropped() -> None:
    """An override sets some headers and keeps the others; "off" drops one; the health contract
    takes its lists from TOML or a comma-separated --objective."""
    values = defaults().with_overrides(
        {"security_headers": {"X-Frame-Options": "DENY", "Content-Security-Policy": "off"},
         "health_contract": {"always_ok": ["/health"]}}, "lab.toml").values
    assert values.security_headers == {"X-Frame-Options": "DENY",
                                       "X-Content-Type-Options": "nosniff"}
    assert values.health_contract.always_ok == ("/health",)
    assert values.health_contract.unready_in_outage == ("/health/ready", "/health/detailed")
    given = parse_assignments(["security_headers.X-Frame-Options=DENY",
                               "rate_limit_headers=Retry-After", "fail_fast=2s",
                               "health_contract.always_ok=/health,/health/live"])
    values = defaults().with_overrides(given, "--objective").values
    assert values.security_headers["X-Frame-Options"] == "DENY"
    assert values.rate_limit_headers == ("Retry-After",) and values.fail_fast == 2.0
    assert values.health_contract.always_ok == ("/health", "/health/live")
    with pytest.raises(ConfigError, match="name the header"):
        parse_assignments(["security_headers=DENY"])
    sources = {d["name"]: d["source"] for d in document(defaults())}
    assert all(sources[name] == "checklist" for name in (
        "security_headers", "rate_limit_headers", "fail_fast", "health_contract",
        "even_distribution"))
    assert threshold_text(Objectives(), "security_headers") == (
        "every answer: X-Frame-Options: SAMEORIGIN; X-Content-Type-Options: nosniff; "
        "Content-Security-Policy")


def test_every_objective_states_its_source_and_threshold_on_its_field() -> None:
    """The tables are read from the fields: every field states a source, every objective a
    threshold text, and the tables (table objectives among them) follow."""
    stated = statements(Objectives)
    assert set(stated) == set(Objectives.model_fields) == set(DEFAULT_SOURCE)
    assert set(OBJECTIVE_NAMES) == {n for n, s in stated.items() if s.threshold is not None}
    assert OBJECTIVE_NAMES and "health_latency_percentile" not in OBJECTIVE_NAMES
    assert MERGED == ("rate_limits", "security_headers", "health_contract")
    with pytest.raises(KeyError, match="setting"):
        threshold_text(Objectives(), "health_latency_percentile")


def test_an_objective_without_a_stated_source_is_refused() -> None:
    """A field that does not say where its default comes from is an error, not "lab default";
    so is a source that is neither the checklist nor the lab's own default."""

    class Silent(BaseModel):
        stated: Annotated[float, Stated("checklist", lambda x, _: f"<= {x}")] = 1.0
        silent: float = Field(2.0, description="no source")

    with pytest.raises(TypeError, match="silent: its field must state its source"):
        statements(Silent)
    with pytest.raises(TypeError, match="not one of checklist, lab default"):
        Stated("a blog post", None)  # type: ignore[arg-type]


def test_the_docs_table_names_each_objectives_source() -> None:
    """docs/objectives.md has a row for every objective, whose "from" column begins with the
    source its field states."""
    rows = {m.group(1): m.group(2) for m in re.finditer(
        r"^\| `([a-z_0-9]+)` \| [^|]+ \| ([^|]+) \|", DOCS.read_text(), re.MULTILINE)}
    assert set(OBJECTIVE_NAMES) <= set(rows), set(OBJECTIVE_NAMES) - set(rows)
    for name in OBJECTIVE_NAMES:
        assert rows[name].strip().startswith(DEFAULT_SOURCE[name]), (name, rows[name])

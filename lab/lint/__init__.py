"""``lab lint``: a static review of the configuration in force, without Docker.

The configuration is what ``lab up`` would run: NGINX's rendered nginx.conf or your own
(``[nginx] conf``, read with its includes), PgBouncer's rendered or your pgbouncer.ini, the
backend's settings or its contract. It is judged against the objectives (lab/objectives.py)
and the failure behaviours the lab has measured; every finding carries its arithmetic, what
follows from it, and a fix. Where a consequence depends on the request rate, the arithmetic
uses a scenario's traffic (its streams' rates, paths and client timeouts): failover's unless
another is named. Rules live in ``lab.lint.rules.RULES``, one name each::

    report = lint(load_config(path), load_objectives(path).values,
                  traffic_of(load_scenario("failover")))
    for finding in report.findings: print(finding.rule, finding.where)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from lab.config import LabConfig
from lab.contract import HealthPaths
from lab.lint.model import Assumptions, Finding, Level, LintInput, Rule, Stream, Traffic
from lab.lint.rules import RULES, run_rules
from lab.objectives import Objectives
from lab.scenarios.loader import load_scenario
from lab.scenarios.model import Scenario
from lab.topology.expect import claimed
from lab.topology.nginx_tree import read_tree
from lab.topology.render import render_nginx
from lab.topology.user_nginx import user_nginx

__all__ = ["DEFAULT_SCENARIO", "RULES", "Assumptions", "Finding", "Level", "LintReport", "Rule",
           "Stream", "Traffic", "default_traffic", "for_checks", "lint", "traffic_of"]

# The scenario whose traffic a review assumes when none is named: the rehearsal of the
# failure most of the rules are about.
DEFAULT_SCENARIO = "failover"


@dataclass(frozen=True)
class LintReport:
    """Every finding of one review, and what was reviewed."""

    findings: tuple[Finding, ...]
    sources: tuple[tuple[str, str], ...]          # part -> where it was read
    traffic: Traffic = field(default_factory=Traffic)   # what the arithmetic assumed

    @property
    def errors(self) -> int:
        return sum(f.level is Level.ERROR for f in self.findings)

    @property
    def warnings(self) -> int:
        return sum(f.level is Level.WARNING for f in self.findings)


def traffic_of(scenario: Scenario) -> Traffic:
    """A scenario's streams, as the review's arithmetic reads them."""
    return Traffic(scenario.name, tuple(Stream(s.client, s.rate, s.method, s.path, s.timeout_s)
                                        for s in scenario.traffic))


def default_traffic() -> Traffic:
    """The traffic of ``DEFAULT_SCENARIO``, read from its shipped file."""
    return traffic_of(load_scenario(DEFAULT_SCENARIO))


def lint_input(config: LabConfig, objectives: Objectives, traffic: Traffic | None = None,
               assumptions: Assumptions | None = None) -> LintInput:
    """The configuration in force, read without Docker, with the traffic to judge it for."""
    user = user_nginx(config, strict=False)
    if user is None:
        tree = read_tree(render_nginx(config))
        source = "nginx.conf rendered from lab.toml"
    else:
        tree = user.tree
        source = config.nginx.conf or ""
    contract = config.backend.contract
    expectations = claimed(config, what="the configuration in force")
    return LintInput(config, expectations, tree, objectives, source,
                     contract.health if contract else HealthPaths(), user is None,
                     traffic if traffic is not None else default_traffic(),
                     assumptions or Assumptions())


def lint(config: LabConfig, objectives: Objectives, traffic: Traffic | None = None,
         assumptions: Assumptions | None = None) -> LintReport:
    """Every rule's findings for this configuration and these objectives, at the rates of
    ``traffic`` (``DEFAULT_SCENARIO``'s when None)."""
    given = lint_input(config, objectives, traffic, assumptions)
    return LintReport(tuple(run_rules(given)), tuple(given.expectations.sources().items()),
                      given.traffic)


def for_checks(report: LintReport, checks: Iterable[str]) -> list[Finding]:
    """The findings that concern any of these checks (what ``lab run`` shows first)."""
    names = set(checks)
    return [f for f in report.findings if RULES.get(f.rule).concerns & names]

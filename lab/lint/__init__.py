"""``lab lint``: a static review of the configuration in force, without Docker.

The configuration is what ``lab up`` would run: NGINX's rendered nginx.conf or your own
(``[nginx] conf``, read with its includes), PgBouncer's rendered or your pgbouncer.ini, the
backend's settings or its contract. It is judged against the objectives (lab/objectives.py)
and the failure behaviours the lab has measured; every finding carries its arithmetic, what
follows from it, and a fix. Rules live in ``lab.lint.rules.RULES``, one name each::

    report = lint(load_config(path), load_objectives(path).values)
    for finding in report.findings: print(finding.rule, finding.where)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from lab.config import LabConfig
from lab.contract import HealthPaths
from lab.lint.model import Finding, Level, LintInput, Rule
from lab.lint.rules import RULES, run_rules
from lab.objectives import Objectives
from lab.topology.expect import claimed
from lab.topology.nginx_conf import read_tree
from lab.topology.render import render_nginx
from lab.topology.userconf import user_nginx

__all__ = ["RULES", "Finding", "Level", "LintReport", "Rule", "for_checks", "lint"]


@dataclass(frozen=True)
class LintReport:
    """Every finding of one review, and what was reviewed."""

    findings: tuple[Finding, ...]
    sources: tuple[tuple[str, str], ...]          # part -> where it was read

    @property
    def errors(self) -> int:
        return sum(f.level is Level.ERROR for f in self.findings)

    @property
    def warnings(self) -> int:
        return sum(f.level is Level.WARNING for f in self.findings)


def lint_input(config: LabConfig, objectives: Objectives) -> LintInput:
    """The configuration in force, read without Docker."""
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
                     contract.health if contract else HealthPaths(), user is None)


def lint(config: LabConfig, objectives: Objectives) -> LintReport:
    """Every rule's findings for this configuration and these objectives."""
    given = lint_input(config, objectives)
    return LintReport(tuple(run_rules(given)), tuple(given.expectations.sources().items()))


def for_checks(report: LintReport, checks: Iterable[str]) -> list[Finding]:
    """The findings that concern any of these checks (what ``lab run`` shows first)."""
    names = set(checks)
    return [f for f in report.findings if RULES.get(f.rule).concerns & names]

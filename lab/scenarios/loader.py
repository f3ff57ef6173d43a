"""Finding and loading scenario files, with errors that name the file, the line and the field."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lab import shipped
from lab.checks import CHECKS
from lab.config import LabConfig
from lab.errors import ConfigError
from lab.expectations import ExpectationUnavailable
from lab.faults import FAULTS
from lab.objectives import Objectives
from lab.registry import parameter_message, takes
from lab.scenarios.model import Scenario
from lab.scenarios.steps import WaitUntilAcquiredStep, definition_of
from lab.topology.expect import claimed
from lab.topology.plan import node_roles


def scenarios_dir() -> Path:
    """The shipped ``scenarios/`` folder, wherever the lab is installed (lab.shipped)."""
    return shipped.scenarios_dir()


def available() -> dict[str, Path]:
    """Scenario name -> file, for every shipped scenario."""
    folder = scenarios_dir()
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))} if folder.is_dir() else {}


def resolve(name_or_path: str) -> Path:
    """A scenario by shipped name, or by path to a file."""
    shipped = available()
    if name_or_path in shipped:
        return shipped[name_or_path]
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    raise ConfigError(f"no scenario named {name_or_path!r}",
                      hint=f"scenarios: {', '.join(shipped) or '(none)'}; "
                           "or give a path to a .yaml file")


def line_of(root: yaml.Node | None, loc: Iterable[Any]) -> int | None:
    """The 1-based line of the YAML node at a validation error's location (best effort)."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for item in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if getattr(k, "value", None) == item), None)
            if match is None and len(node.value) == 1:
                # A step or check written as `{name: {...}}`: the location skips the wrapper.
                inner = node.value[0][1]
                if isinstance(inner, yaml.MappingNode):
                    match = next((v for k, v in inner.value
                                  if getattr(k, "value", None) == item), None)
            if match is None:
                continue  # a tag or synthetic key; stay at this node
            node = match
        elif (isinstance(node, yaml.SequenceNode) and isinstance(item, int)
              and item < len(node.value)):
            node = node.value[item]
        else:
            continue
        line = node.start_mark.line + 1
    return line


def _shown_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """A location as the file spells it: pydantic repeats a step's key (``inject.inject``)."""
    out: list[Any] = []
    for item in loc:
        if out and item == out[-1] and isinstance(item, str):
            continue
        out.append(item)
    return tuple(out)


def _takes(loc: tuple[Any, ...]) -> str | None:
    """What the entry an unknown parameter was given to takes: "check ejection takes target,
    ..."."""
    if len(loc) >= 4 and loc[0] == "checks" and loc[2] in CHECKS:
        return takes(f"check {loc[2]}", CHECKS.get(loc[2]).params)
    for index, item in enumerate(loc[:-1]):
        if item == "inject" and index + 1 < len(loc) - 1 and loc[index + 1] in FAULTS:
            return takes(f"fault {loc[index + 1]}", FAULTS.get(loc[index + 1]).params)
    return None


def _message(error: Any) -> str:
    if error["type"] == "extra_forbidden" and error["loc"][0] == "objectives":
        name = error["loc"][-1]
        return f"unknown objective {name!r} (objectives: {', '.join(Objectives.model_fields)})"
    return parameter_message(error, _takes(_shown_loc(error["loc"])))


def parse_scenario(text: str, source: str) -> Scenario:
    """Validate a scenario's YAML text; every problem is reported with its line."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a scenario is a mapping with name, description, steps "
                          "and checks")
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            loc = _shown_loc(error["loc"])
            field = ".".join(str(p) for p in loc) or "(top level)"
            line = line_of(root, loc)
            message = _message(error)
            lines.append(f"{source}:{line}: {field}: {message}" if line
                         else f"{source}: {field}: {message}")
        raise ConfigError("invalid scenario\n" + "\n".join(lines),
                          hint="see `lab explain failover` for a valid example") from None
    if not scenario.checks:
        # A run with nothing to judge would pass having judged nothing.
        line = line_of(root, ("checks",))
        raise ConfigError(f"invalid scenario\n{source}:{line}: checks: a scenario needs at least "
                          "one check; with none its run would pass without judging anything",
                          hint=f"checks: {', '.join(CHECKS.names())}")
    return scenario


def load_scenario(name_or_path: str) -> Scenario:
    """Find, read and validate a scenario (format only; see ``check_nodes`` for the topology)."""
    path = resolve(name_or_path)
    return parse_scenario(path.read_text(), str(path))


def _targets(scenario: Scenario) -> Iterable[tuple[str, str]]:
    for index, step in enumerate(scenario.steps):
        for field, node in definition_of(step).nodes(step):
            yield f"steps.{index}.{field}", node
    for index, check in enumerate(scenario.checks):
        target = getattr(check, "target", None)
        if target:
            yield f"checks.{index}.{check.check}.target", target


def _unknown_job(job: str, config: LabConfig, source: str, field: str) -> list[str]:
    jobs = config.backend.jobs
    if job in jobs:
        return []
    return [f"{source}: {field}: unknown job {job!r} (jobs: {', '.join(jobs)})"]


def check_paths(scenario: Scenario, config: LabConfig, source: str) -> None:
    """Every traffic stream of the scenario reaches the backend pool through the user's NGINX
    (the rendered configuration proxies every path): a stream NGINX answers itself, or sends
    to another upstream, would not meet the backends the scenario breaks."""
    if config.nginx.conf is None or not scenario.traffic:
        return
    try:
        nginx = claimed(config).nginx
    except ExpectationUnavailable:
        return          # unreadable files: user_topology names the problem before any start
    pool = nginx.upstream.name
    problems = []
    for index, stream in enumerate(scenario.traffic):
        path = stream.path.split("?", 1)[0]
        found = nginx.upstream_for(path)
        if found is not None and found.name == pool:
            continue
        port = nginx.client_port(path)
        location = nginx.location_for(path, port)
        if location is None:
            what = "no location"
        elif location.proxied:
            what = f"location {location.pattern} ({location.where}), proxied to {location.proxied}"
        else:
            what = f"location {location.pattern} ({location.where}), which answers it itself"
        problems.append(f"{source}: traffic.{index} ({stream.client}: {stream.method} {path}): "
                        f"port {port} gives it to {what}, not to the backend pool {pool}")
    if problems:
        raise ConfigError("the scenario's traffic would not reach the backends it breaks:\n  "
                          + "\n  ".join(problems),
                          hint="proxy these paths to the backend pool in your NGINX file, or "
                          "name the pool they reach with [nginx] upstream in lab.toml")


def check_nodes(scenario: Scenario, config: LabConfig, source: str) -> None:
    """Every node a scenario names exists in this lab's topology (or is a seeded random pick)."""
    roles = node_roles(config)
    problems = []
    for field, node in _targets(scenario):
        if node == "random" or (node.startswith("random:")
                                and node.split(":", 1)[1] in roles.values()):
            continue
        if node.startswith("holder:") and node.split(":", 1)[1]:
            # the backend holding that job's lock, resolved when the step runs
            problems.extend(_unknown_job(node.split(":", 1)[1], config, source, field))
            continue
        if node not in roles:
            problems.append(f"{source}: {field}: unknown node {node!r} (nodes: {', '.join(roles)})")
    for index, step in enumerate(scenario.steps):
        if isinstance(step, WaitUntilAcquiredStep):
            problems.extend(_unknown_job(step.wait_until_acquired.job, config, source,
                                         f"steps.{index}.wait_until_acquired.job"))
    if problems:
        raise ConfigError("invalid scenario\n" + "\n".join(problems))

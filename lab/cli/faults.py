"""``lab break``, ``lab heal`` and ``lab faults``: faults by hand, for trainers and game days.

Faults go through the same ``RunState.inject``/``heal`` as a scenario's steps, so a manual
fault is recorded in the lab's fault record (``lab.faults.record``) like a scenario's, and
``lab heal`` in any later process rebuilds the fault from its record to heal it.
"""

from __future__ import annotations

import json
import signal
import time
import typing
from datetime import datetime
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.live import Live
from rich.table import Table
from rich.text import Text

from lab.cli.common import (
    ConfigOption,
    NameOption,
    config_for,
    console,
    engine,
    lab_errors,
    out,
    print_json,
    seconds_option,
)
from lab.engine import LABEL_KIND, LABEL_LAB
from lab.errors import ConfigError, FaultError, LabError, LabNotFound, UnknownNode
from lab.faults import FAULTS, FaultSpec, heal_leftovers
from lab.faults import record as fault_record
from lab.registry import parameter_message, takes
from lab.scenarios.state import RunState
from lab.topology.expect import claimed
from lab.topology.lab import FAULT_RECORD_KIND, Lab
from lab.topology.plan import container_name, node_roles

MAX_FOR_S = 24 * 3600.0


def fault_spec(node: str, kind: str, pairs: list[str], *, seed: int = 0) -> FaultSpec:
    """A fault from the command line (``percent=30 peers=nginx,redis``), validated by the
    fault's own parameter model and worded as scenario files word it; no Docker needed."""
    definition = FAULTS.get(kind)
    model = definition.params
    accepted = takes(f"fault {kind}", model, exclude=("target",))
    given: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"lab break {node} {kind}: {pair!r} is not key=value ({accepted})")
        if key == "target":
            raise ConfigError(f"lab break {node} {kind}: unknown parameter 'target' (the node is "
                              "the first argument; " + accepted + ")")
        if key in given:
            raise ConfigError(f"lab break {node} {kind}: {key} given twice")
        field = model.model_fields.get(key)
        # A list on the command line is comma-separated: peers=nginx,redis.
        listed = field is not None and typing.get_origin(field.annotation) is tuple
        given[key] = tuple(v for v in value.split(",") if v) if listed else value
    try:
        params = model.model_validate({**given, "target": node})
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            message = parameter_message(error, accepted)
            where = ".".join(str(part) for part in error["loc"])
            unknown = error["type"] == "extra_forbidden"
            problems.append(message if unknown else f"{where}: {message}")
        raise ConfigError(f"lab break {node} {kind}: " + "; ".join(problems)) from None
    return FaultSpec(kind, params, seed)


def _check_nodes(spec: FaultSpec, roles: dict[str, str], lab_name: str) -> None:
    named = [spec.target, *getattr(spec.params, "peers", ())]
    for node in named:
        if node not in roles:
            raise UnknownNode(f"no node named {node!r} in lab {lab_name!r} "
                              f"(nodes: {', '.join(roles)})")


def _attach(config_path: Any, name: str | None, nodes: list[str]) -> Lab:
    """The running lab; an unknown node is named before "no lab running" (one line each)."""
    config = config_for(config_path, name)
    try:
        return Lab.attach(engine(), config.name)
    except LabNotFound:
        roles = node_roles(config)
        for node in nodes:
            if node not in roles:
                raise UnknownNode(f"no node named {node!r} in lab {config.name!r} "
                                  f"(nodes: {', '.join(roles)})") from None
        raise LabNotFound(f"no lab named {config.name!r} is running "
                          f"(start it with `lab up --name {config.name}`)") from None


def _state(lab: Lab, origin: fault_record.Origin) -> RunState:
    # No traffic and no scenario: the expectations only serve the holder:/random targets,
    # which manual faults do not use, so the configuration's own (no I/O) will do.
    return RunState(lab, claimed(lab.config), {}, 0, origin=origin)


# From the registry, so a new fault is named here without an edit (this list once stopped at
# latency while five more could be broken).
_FAULT_NAMES = ", ".join(f.name for f in FAULTS if f.name != "none")


def _lab_flag(lab: Lab) -> str:
    return "" if lab.name == "default" else f" --name {lab.name}"


def _clock(at: float) -> str:
    return datetime.fromtimestamp(at).strftime("%H:%M:%S")


def _on_sigterm(signum: int, frame: object) -> None:
    # SIGTERM takes Ctrl-C's path: the fault is healed on the way out.
    raise KeyboardInterrupt


def break_(
    node: Annotated[str, typer.Argument(metavar="NODE", help="The node to break (`lab status`).")],
    fault: Annotated[str, typer.Argument(
        metavar="FAULT", help=f"{_FAULT_NAMES} (or none).")],
    params: Annotated[list[str] | None, typer.Argument(
        metavar="[KEY=VALUE]...", help="The fault's parameters, e.g. percent=30, "
        "peers=nginx,redis, delay_ms=200.")] = None,
    for_: Annotated[str | None, typer.Option(
        "--for", metavar="DURATION", help="Stay in the foreground and heal after this long "
        "(30s, 2m), or on Ctrl-C.")] = None,
    name: NameOption = None,
    config_path: ConfigOption = None,
) -> None:
    """Break one node now; returns when the fault is in place and says how to undo it."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    with lab_errors():
        spec = fault_spec(node, fault, params or [])
        duration = seconds_option(for_, "--for", MAX_FOR_S) if for_ is not None else None
        lab = _attach(config_path, name, [spec.target, *getattr(spec.params, "peers", ())])
        _check_nodes(spec, lab.roles, lab.name)
        for existing in fault_record.read(lab):
            if (existing.kind, existing.target) == (spec.kind, spec.target):
                raise FaultError(
                    f"{spec.target} already has {spec.kind} (since {_clock(existing.since)}, by "
                    f"{existing.who()}); `lab heal {spec.target}{_lab_flag(lab)}` first")
        how = f"lab break --for {for_}" if duration is not None else "lab break"
        state = _state(lab, fault_record.manual(how))
        until = time.time() + duration if duration is not None else None
        state.inject(spec, until=until)
        record = state.records[(spec.kind, spec.target)]
        given = f" {record.shown_params()}" if record.shown_params() else ""
        out.print(Text.assemble((f"{spec.target}: {spec.kind}{given}", "bold"),
                                f": {record.detail} (lab {lab.name}, {_clock(record.since)})"))
        if duration is None:
            out.print(f"undo: lab heal {spec.target}{_lab_flag(lab)}")
            return
        try:
            _wait_for(duration, spec)
        except KeyboardInterrupt:
            console.print(Text("interrupted: healing now", style="yellow"))
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the heal
            try:
                _heal_one(state, spec.kind, spec.target)
            finally:
                signal.signal(signal.SIGINT, signal.default_int_handler)


def _wait_for(duration: float, spec: FaultSpec) -> None:
    deadline = time.monotonic() + duration
    with Live(console=console, transient=True, refresh_per_second=2) as live:
        while (left := deadline - time.monotonic()) > 0:
            live.update(Text(f"{spec.target}: {spec.kind} healed in {left:.0f} s "
                             "(Ctrl-C heals now)", style="dim"))
            time.sleep(min(0.5, left))


def _heal_one(state: RunState, kind: str, target: str) -> None:
    started = time.monotonic()
    state.heal(kind, target)
    event = state.history.faults[-1]
    ready = (f"; ready after {time.monotonic() - started:.1f} s" if FAULTS.get(kind).lifecycle
             else "")
    out.print(Text.assemble((f"{target}: healed {kind}", "bold green"), f": {event.detail}{ready}"))


def heal(
    nodes: Annotated[list[str] | None, typer.Argument(metavar="[NODE]...",
                                                      help="The nodes to heal.")] = None,
    all_nodes: Annotated[bool, typer.Option("--all", help="Heal every node of the lab.")] = False,
    name: NameOption = None,
    config_path: ConfigOption = None,
) -> None:
    """Undo recorded faults (manual or a scenario's) and repair what a killed run left, on the
    named nodes or all; healing a healthy node changes nothing and says so."""
    with lab_errors():
        if not nodes and not all_nodes:
            raise ConfigError("name the nodes to heal, or give --all")
        lab = _attach(config_path, name, list(nodes or []))
        scope = tuple(lab.roles) if all_nodes else tuple(dict.fromkeys(nodes or []))
        for node in scope:
            if node not in lab.roles:
                raise UnknownNode(f"no node named {node!r} in lab {lab.name!r} "
                                  f"(nodes: {', '.join(lab.roles)})")
        failed = _heal(lab, scope, all_nodes)
        if failed:
            raise typer.Exit(1)


def _heal(lab: Lab, scope: tuple[str, ...], everything: bool) -> bool:
    """Heal the records on ``scope``, then its leftovers; True when some heal failed."""
    containers = {info.name: info for info in lab.engine.list_containers({LABEL_LAB: lab.name})}
    before = {node: getattr(containers.get(container_name(lab.name, node)), "status", "missing")
              for node in scope}
    state = _state(lab, fault_record.manual("lab heal"))
    done: dict[str, list[str]] = {node: [] for node in scope}
    failed = False
    for record in fault_record.read(lab):
        if record.target not in scope:
            continue
        key = (record.kind, record.target)
        if key in state.active:
            # Two records of one fault (two processes raced): one heal undoes both.
            fault_record.forget(lab, record)
            continue
        # Even a fault that looks gone is healed from its record: heals are idempotent, and a
        # network fault's rules outlive a sidecar someone removed.
        state.active[key] = fault_record.rebuild(lab, record)
        state.records[key] = record
    for kind, target in list(state.active):
        try:
            _heal_one(state, kind, target)
            done[target].append(f"healed {kind}")
        except LabError as exc:
            failed = True
            console.print(Text.assemble((f"{target}: heal of {kind} failed: ", "bold red"),
                                        exc.render()), soft_wrap=True)
    for line in heal_leftovers(lab, None if everything else scope):
        out.print(f"repaired: {line}")
        node = line.rsplit(" ", 1)[-1]
        if node in done:
            done[node].append(line)
    for node, status in before.items():
        waited = any(line.startswith("healed") for line in done[node])
        if status != "running" and status != "missing" and not waited:
            started = time.monotonic()
            try:
                lab.wait_ready(node)
                out.print(f"{node}: ready after {time.monotonic() - started:.1f} s")
            except LabError as exc:
                failed = True
                console.print(Text.assemble((f"{node}: ", "bold red"), exc.message))
    if everything:
        # Records no version of the lab can read go too: --all leaves none behind.
        lab.engine.remove_labelled({LABEL_LAB: lab.name, LABEL_KIND: FAULT_RECORD_KIND})
    idle = [node for node in scope if not done[node] and before[node] == "running"]
    if everything and len(idle) == len(scope):
        out.print("nothing to heal: no fault recorded, every node running, no fault sidecar left")
    elif not everything:
        for node in idle:
            out.print(f"{node}: nothing to heal (running, no fault recorded)")
    return failed


def faults(
    name: NameOption = None,
    config_path: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the records as JSON.")] = False,
) -> None:
    """List the faults in place (the lab's record): node, kind, parameters, since, by whom."""
    with lab_errors():
        lab = _attach(config_path, name, [])
        containers = {info.name: info for info in lab.engine.list_containers({LABEL_LAB: lab.name})}
        records = fault_record.parse(containers.values())
        if as_json:
            print_json(json.dumps([
                {**r.model_dump(mode="json"), "state": fault_record.state(r, containers, lab.name)}
                for r in records]))
            return
        if not records:
            out.print(f"no fault recorded in lab {lab.name}")
            return
        table = Table(title=f"faults in lab {lab.name}", title_justify="left")
        for column in ("node", "fault", "parameters", "since", "by", "state"):
            table.add_column(column)
        now = time.time()
        for r in records:
            since = f"{_clock(r.since)} ({now - r.since:.0f} s ago)"
            if r.until is not None:
                since += f", heals {_clock(r.until)}"
            table.add_row(r.target, r.kind, r.shown_params() or "-", since, r.who(),
                          fault_record.state(r, containers, lab.name))
        out.print(table)

"""``lab up``, ``lab status``, ``lab down`` and ``lab images build``."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Annotated

import typer
from rich.live import Live
from rich.table import Table
from rich.text import Text

from lab.cli.common import (
    CaOption,
    ConfigOption,
    NameOption,
    config_for,
    console,
    engine,
    lab_errors,
    out,
    print_json,
)
from lab.engine import Removed
from lab.topology import images as image_builder
from lab.topology.lab import Lab, LabStatus, down_all, remove_orphans

images_app = typer.Typer(no_args_is_help=True, help="Build the lab's images.")

STATUS_SCHEMA_VERSION = 1


class BuildDisplay:
    """One live line per image to build: queued, its current Dockerfile step (its
    dependencies image's first), or built, with the seconds it took."""

    def __init__(self) -> None:
        self.steps: dict[str, str] = {}
        self.started: dict[str, float] = {}
        # get_renderable: redrawn four times a second, so the clocks move between lines.
        self.live = Live(console=console, transient=True, refresh_per_second=4,
                         get_renderable=self._table)

    def _table(self) -> Table:
        table = Table.grid(padding=(0, 2))
        for role, step in list(self.steps.items()):  # build threads add to it meanwhile
            elapsed = time.monotonic() - self.started[role] if role in self.started else 0.0
            building = role in self.started and not step.startswith("built")
            clock = f"{elapsed:5.1f} s" if building else ""
            # A build log line is text, never markup: "[2/5] RUN ..." must print as it is.
            table.add_row(Text(role, style="bold"), Text(clock), Text(step[:100]))
        return table

    def on_line(self, role: str, line: str) -> None:
        deps = line.startswith(image_builder.DEPS_PREFIX)
        text = line.removeprefix(image_builder.DEPS_PREFIX)
        if line == "queued":
            self.steps[role] = "queued"
        elif line == "starting":
            self.started[role] = time.monotonic()
            self.steps[role] = "starting"
        elif line == "done":
            self.steps[role] = f"built in {time.monotonic() - self.started.get(role, 0):.1f} s"
        elif text.startswith("Step "):
            self.steps[role] = f"dependencies: {text}" if deps else text


def _say(text: str) -> None:
    console.print(Text(f"lab: {text}", style="dim"))


@images_app.command("build")
def images_build(
    config_path: ConfigOption = None,
    ca_bundle: CaOption = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Rebuild even when the inputs did not change.")] = False,
) -> None:
    """Build every role's image (only those whose inputs changed, unless --force)."""
    with lab_errors():
        config = config_for(config_path, None, ca_bundle)
        display = BuildDisplay()
        with display.live:
            refs = image_builder.ensure_images(engine(), config.build, force=force, say=_say,
                                               on_progress=display.on_line)
        for ref in refs.values():
            state = f"built in {ref.seconds:.1f} s" if ref.built else "up to date"
            out.print(f"{ref.role:10} {ref.reference:40} {state}")


TimingsOption = Annotated[bool, typer.Option(
    "--timings", help="Print when each node was created, started and first answered its probe.")]


def up(
    name: NameOption = None,
    config_path: ConfigOption = None,
    ca_bundle: CaOption = None,
    timings: TimingsOption = False,
) -> None:
    """Start the lab (building missing images) and return when every node is ready."""
    with lab_errors():
        config = config_for(config_path, name, ca_bundle)
        lab = Lab(engine(), config)
        display = BuildDisplay()
        with display.live:
            result = lab.up(say=_say, on_build=display.on_line)
        if result.leftovers_removed:
            _say(f"removed leftovers of crashed runs: {_describe(result.leftovers_removed)}")
        if result.already_running:
            out.print(f"lab {lab.name!r} is already running; nothing changed")
        else:
            built = f", built {', '.join(result.images_built)}" if result.images_built else ""
            out.print(f"lab {lab.name!r} is ready in {result.seconds:.1f} s{built}")
            if timings and result.timeline is not None:
                out.print(Text("\n".join(result.timeline.lines())), soft_wrap=True)
        _print_endpoints(lab)


def _print_endpoints(lab: Lab) -> None:
    e = lab.endpoints
    out.print(f"  http   {e.nginx_http}\n  https  {e.nginx_https}  "
              f"(CA: `lab status --name {lab.name} --json`)")


def _describe(removed: Removed) -> str:
    parts = [f"{len(removed.containers)} containers", f"{len(removed.networks)} networks"]
    if removed.volumes:
        parts.append(f"{len(removed.volumes)} volumes")
    return ", ".join(parts)


def status_document(status: LabStatus) -> dict:
    """The stable JSON form of `lab status --json` (documented in the README)."""
    return {
        "schema": STATUS_SCHEMA_VERSION,
        "lab": status.name,
        "ready": status.ready,
        "endpoints": asdict(status.endpoints) if status.endpoints else None,
        "nodes": [
            {"name": n.name, "role": n.role, "state": n.state, "ready": n.ready, "detail": n.detail,
             "published": list(n.published),
             "uptime_s": None if n.uptime_s is None else round(n.uptime_s, 1)}
            for n in status.nodes
        ],
    }


def status(
    name: NameOption = None,
    config_path: ConfigOption = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the documented JSON form.")] = False,
) -> None:
    """Per node: role, container state, readiness, published address and uptime."""
    with lab_errors():
        config = config_for(config_path, name)
        current = Lab.attach(engine(), config.name).status()
        if as_json:
            print_json(json.dumps(status_document(current)))
            return
        table = Table(title=f"lab {current.name}", title_justify="left")
        for column in ("node", "role", "state", "ready", "published", "uptime"):
            table.add_column(column)
        for n in current.nodes:
            uptime = "-" if n.uptime_s is None else f"{n.uptime_s:.0f} s"
            ready = "[green]yes[/]" if n.ready else f"[red]no[/] {n.detail[:60]}"
            table.add_row(n.name, n.role, n.state, ready, "\n".join(n.published) or "-", uptime)
        out.print(table)
        if not current.ready:
            raise typer.Exit(1)


def down(
    name: NameOption = None,
    config_path: ConfigOption = None,
    all_labs: Annotated[bool, typer.Option(
        "--all", help="Remove every lab on this engine.")] = False,
) -> None:
    """Remove every container, network and volume the lab created (by label)."""
    with lab_errors():
        docker_engine = engine()
        orphans = remove_orphans(docker_engine)
        if all_labs:
            removed = down_all(docker_engine)
            what = "every lab"
        else:
            config = config_for(config_path, name)
            removed = Lab(docker_engine, config).down()
            what = f"lab {config.name!r}"
        total = Removed(removed.containers + orphans.containers,
                        removed.networks + orphans.networks,
                        removed.volumes + orphans.volumes)
        if total:
            out.print(f"removed {what}: {_describe(total)}")
        else:
            out.print(f"nothing to remove for {what}")

"""What every command shares: the console, the engine connection and error printing."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from lab.config import LabConfig, load_config
from lab.engine import Engine
from lab.errors import LabError

console = Console(stderr=True, highlight=False)
out = Console(highlight=False)

NameOption = Annotated[str | None, typer.Option("--name", "-n", help="Lab name (default: from lab.toml, else 'default').")]
ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="Configuration file (default: ./lab.toml if present).", dir_okay=False)]
CaOption = Annotated[str | None, typer.Option("--ca-bundle", help="CA bundle trusted by image builds that fetch over HTTPS ('' to disable; default: the host's bundle).")]


def fail(error: LabError) -> typer.Exit:
    """Print a lab error as ``Type: message`` (plus details and hint) and exit 2."""
    console.print(f"[bold red]{type(error).__name__}[/]: {error.render()}", markup=True, soft_wrap=True)
    return typer.Exit(2)


@contextmanager
def lab_errors() -> Iterator[None]:
    """Turn the lab's own errors into a clear message and exit code 2, never a traceback."""
    try:
        yield
    except LabError as error:
        raise fail(error) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None


def config_for(config_path: Path | None, name: str | None, ca_bundle: str | None = None) -> LabConfig:
    config = load_config(config_path, name=name)
    if ca_bundle is not None:
        config = config.with_overrides("build", ca_bundle=ca_bundle)
    return config


def engine() -> Engine:
    return Engine.connect()


def is_tty() -> bool:
    return sys.stderr.isatty()

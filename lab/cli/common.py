"""What every command shares: the console, the engine connection and error printing."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import click
import httpx
import psycopg
import redis
import typer
from rich.console import Console
from rich.text import Text

from lab.config import LabConfig, load_config
from lab.engine import Engine
from lab.errors import ConfigError, LabError
from lab.objectives import parse_seconds

console = Console(stderr=True, highlight=False)
out = Console(highlight=False)


def print_json(text: str) -> None:
    """Print one JSON document for a script, as it is: rich's ``print_json`` re-renders it,
    which took 12 s for the 6 MB result of the 17 shipped scenarios (0.2 s to encode)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()

NameOption = Annotated[str | None, typer.Option(
    "--name", "-n", help="Lab name (default: from lab.toml, else 'default').")]
ConfigOption = Annotated[Path | None, typer.Option(
    "--config", "-c", help="Configuration file (default: ./lab.toml if present).",
    dir_okay=False)]
CaOption = Annotated[str | None, typer.Option(
    "--ca-bundle", help="CA bundle trusted by image builds that fetch over HTTPS "
                        "('' to disable; default: the host's bundle).")]


def fail(error: LabError) -> typer.Exit:
    """Print a lab error as ``Type: message`` (plus details and hint) and exit 2.

    The text is printed as it is, never as markup: a container's log line such as
    ``[emerg] ...`` or a literal ``[/]`` must reach the user unchanged."""
    console.print(Text.assemble((type(error).__name__, "bold red"), ": ", error.render()),
                  soft_wrap=True)
    return typer.Exit(2)


# What a service the lab talks to can raise, and what the user should look at then.
_SERVICE_ERRORS: tuple[tuple[type[BaseException], str, str], ...] = (
    (psycopg.Error, "PostgreSQL or PgBouncer", "is the lab running and ready? `lab status` says"),
    (redis.RedisError, "Redis", "is the lab running and ready? `lab status` says"),
    (httpx.HTTPError, "an HTTP request to the lab", "is NGINX up? `lab status` says"),
    (OSError, "the operating system", "check the file or address named above"),
)


@contextmanager
def lab_errors() -> Iterator[None]:
    """Turn every error into one clear message and exit code 2, never a traceback.

    ``LAB_DEBUG=1`` lets an unexpected error through with its traceback, for developers."""
    try:
        yield
    except LabError as error:
        raise fail(error) from None
    except KeyboardInterrupt:
        console.print(Text("interrupted", style="yellow"))
        raise typer.Exit(130) from None
    except (typer.Exit, typer.Abort, click.exceptions.Exit, click.ClickException,
            click.exceptions.Abort):
        raise
    except Exception as exc:
        if os.environ.get("LAB_DEBUG") == "1":
            raise
        for kind, what, hint in _SERVICE_ERRORS:
            if isinstance(exc, kind):
                raise fail(LabError(f"{what} failed: {type(exc).__name__}: {exc}",
                                    hint=hint)) from None
        raise fail(LabError(
            f"unexpected error: {type(exc).__name__}: {exc}",
            hint="this is a bug in the lab; LAB_DEBUG=1 shows the traceback")) from None


def config_for(config_path: Path | None, name: str | None,
               ca_bundle: str | None = None) -> LabConfig:
    config = load_config(config_path, name=name)
    if ca_bundle is not None:
        config = config.with_overrides("build", ca_bundle=ca_bundle)
    return config


def seconds_option(text: str, option: str, longest_s: float) -> float:
    """A duration option ("30s", "2m", "1.5"), more than 0 and at most ``longest_s``."""
    try:
        seconds = float(parse_seconds(text))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{option} {text}: {exc}") from None
    if not 0 < seconds <= longest_s:
        raise ConfigError(f"{option} {text}: must be more than 0 and at most {longest_s:g} s")
    return seconds


def engine() -> Engine:
    return Engine.connect()


def is_tty() -> bool:
    return sys.stderr.isatty()

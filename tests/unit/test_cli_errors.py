"""The CLI's error path: every error is one message and exit 2, printed as text (never markup),
and an unexpected exception is named with a hint instead of a traceback."""

from __future__ import annotations

import psycopg
import pytest
import typer
from typer.testing import CliRunner

from lab.cli.common import lab_errors
from lab.errors import NodeStartError

app = typer.Typer()


@app.command()
def boom(kind: str) -> None:
    """Raise one kind of error inside the CLI's error guard."""
    with lab_errors():
        if kind == "lab":
            raise NodeStartError("nginx did not become ready (exited)",
                                 details="last log lines of nginx:\n"
                                         "[emerg] 1#1: unknown directive \"chek\" [/]",
                                 hint="fix nginx.conf")
        if kind == "database":
            raise psycopg.OperationalError("connection refused")
        if kind == "bug":
            raise KeyError("surprise")
        raise typer.Exit(1)


runner = CliRunner()


def test_a_lab_error_keeps_its_log_lines_as_text() -> None:
    """NGINX's [emerg] and a literal [/] reach the user unchanged (no
    MarkupError, nothing eaten)."""
    result = runner.invoke(app, ["lab"])
    assert result.exit_code == 2
    assert "NodeStartError: nginx did not become ready (exited)" in result.stderr
    assert '[emerg] 1#1: unknown directive "chek" [/]' in result.stderr
    assert "Hint: fix nginx.conf" in result.stderr


@pytest.mark.parametrize(("kind", "fragment"), [
    ("database", "PostgreSQL or PgBouncer failed: OperationalError: connection refused"),
    ("bug", "unexpected error: KeyError: 'surprise'"),
])
def test_other_errors_are_one_message_and_exit_2(kind: str, fragment: str) -> None:
    """A psycopg error names the service; anything else is named as a bug; no traceback."""
    result = runner.invoke(app, [kind])
    assert result.exit_code == 2
    assert fragment in result.stderr
    assert "Traceback" not in result.output


def test_an_exit_code_passes_through() -> None:
    """typer.Exit is the CLI's own way out, not an error."""
    assert runner.invoke(app, ["exit"]).exit_code == 1

"""The reference generated from the code (lab/reference.py, `lab reference`): the committed pages
are current, every registry entry and command has its section, a parameter model is read from
pydantic alone, and the README stays an entry point whose links resolve."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import pytest
import typer.main
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from typer.testing import CliRunner

from lab.checks import CHECKS
from lab.cli.app import app
from lab.objectives import parse_seconds
from lab.reference import (
    REGENERATE,
    Page,
    field_lines,
    objectives_fed,
    prose,
    registry_names,
    render_pages,
    stale_pages,
)

CHECKOUT = Path(__file__).resolve().parents[2]
REFERENCE = CHECKOUT / "docs" / "reference"
README_LINES = 200
runner = CliRunner()


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    """Every page as the code gives it now."""
    return render_pages(typer.main.get_command(app))


def _headings(text: str) -> list[str]:
    return re.findall(r"^## `([^`]+)`$", text, re.MULTILINE)


def test_the_committed_reference_is_current(pages: dict[str, str]) -> None:
    """docs/reference/ is exactly what `python -m lab reference` writes from the code now."""
    problems = stale_pages(REFERENCE, pages)
    assert not problems, (f"docs/reference is stale ({'; '.join(problems)}): run `{REGENERATE}` "
                          "and commit the pages")


def test_every_registry_entry_has_its_section(pages: dict[str, str]) -> None:
    """Each registry's page has one section per registered entry, in the registry's order."""
    for page, names in registry_names().items():
        assert _headings(pages[page]) == list(names), page
    assert set(registry_names()["checks.md"]) == set(CHECKS.names())


def test_every_command_and_option_is_listed(pages: dict[str, str]) -> None:
    """The CLI page has a section per command and group, and every option of `lab run`."""
    root = typer.main.get_command(app)
    ctx = root.context_class(root, info_name="lab")
    commands = {f"lab {name}" for name in root.list_commands(ctx)}
    assert commands <= set(_headings(pages["cli.md"]))
    run = pages["cli.md"].split("## `lab run`")[1].split("\n## ")[0]
    for option in ("--seed", "--keep", "--report-dir", "--json", "--objective", "--junit",
                   "--step"):
        assert option in run


def test_a_check_section_names_the_objectives_it_feeds(pages: dict[str, str]) -> None:
    """Each check's section links every objective judged on it, and each objective's section
    links the check back."""
    for check in CHECKS:
        section = pages["checks.md"].split(f"## `{check.name}`\n")[1].split("\n## ")[0]
        for objective, _ in objectives_fed(check):
            assert f"(objectives.md#{objective})" in section, (check.name, objective)
            judged = pages["objectives.md"].split(f"## `{objective}`\n")[1].split("\n## ")[0]
            assert f"(checks.md#{check.name})" in judged


class _Inner(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    depth: Annotated[int, Field(ge=1)] = 3


class _Params(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    window: Annotated[float, BeforeValidator(parse_seconds), Field(gt=0)] = Field(
        2.0, description="how long to look", json_schema_extra={"source": "checklist"})
    mode: Literal["fast", "slow"] = "fast"
    inner: _Inner = _Inner()
    until: str = Field(alias="for")


def test_a_model_is_read_from_pydantic_alone() -> None:
    """A field shows its file name (alias), type, bounds, how its value is read, default,
    description and extra schema data; a nested model's fields are indented under it."""
    page = Page({})
    text = "\n".join(field_lines(_Params, page))
    assert ("- `window` (float, > 0, read as [`parse_seconds`](#read-as-parse_seconds); "
            "default `2.0`): how long to look") in text
    assert "    - source: checklist" in text
    assert '- `mode` ("fast" | "slow"; default `"fast"`)' in text
    assert "    - `depth` (int, ≥ 1; default `3`)" in text
    assert "- `for` (str; required)" in text
    assert "parse_seconds" in page.readers


def test_prose_keeps_code_spans_and_escapes_markup() -> None:
    """Free text renders as written: code spans untouched, emphasis, links and tags escaped."""
    assert prose("a <b> *c* `x_<y>` [d]") == r"a &lt;b&gt; \*c\* `x_<y>` \[d\]"


def test_lab_reference_check_fails_on_a_stale_folder_and_writing_fixes_it(
        tmp_path: Path) -> None:
    """`lab reference --check` exits 1 on a missing, changed or extra page, and 0 once
    `lab reference` has written the folder (removing pages it no longer generates)."""
    out = str(tmp_path / "reference")
    assert runner.invoke(app, ["reference", "--check", "--out", out]).exit_code == 1
    assert runner.invoke(app, ["reference", "--out", out]).exit_code == 0
    assert runner.invoke(app, ["reference", "--check", "--out", out]).exit_code == 0
    (tmp_path / "reference" / "old.md").write_text("gone\n")
    (tmp_path / "reference" / "faults.md").write_text("edited by hand\n")
    stale = runner.invoke(app, ["reference", "--check", "--out", out])
    assert stale.exit_code == 1
    assert "faults.md: differs" in stale.output and "old.md: not generated" in stale.output
    assert runner.invoke(app, ["reference", "--out", out]).exit_code == 0
    assert not (tmp_path / "reference" / "old.md").exists()
    assert runner.invoke(app, ["reference", "--check", "--out", out]).exit_code == 0


def test_the_readme_is_an_entry_point_whose_links_resolve() -> None:
    """README.md stays within 200 lines, and every relative link in it names a file or folder
    of the checkout."""
    text = (CHECKOUT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_LINES
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    assert targets
    missing = [t for t in targets if "://" not in t and not (CHECKOUT / t).exists()]
    assert not missing

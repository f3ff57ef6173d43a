"""``lab reference``: write the reference pages generated from the code, or check them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lab.cli.common import console, lab_errors, out
from lab.reference import DEFAULT_OUT, REGENERATE, render_pages, stale_pages, write_pages


def reference_command(
    ctx: typer.Context,
    out_dir: Annotated[Path, typer.Option(
        "--out", help="The folder of the reference pages.", file_okay=False)] = DEFAULT_OUT,
    check: Annotated[bool, typer.Option(
        "--check", help="Write nothing; exit 1 when the pages there are not what the code "
                        "gives (CI).")] = False,
) -> None:
    """Generate the reference (checks, objectives, faults, steps, probes, load profiles, lint
    rules, this CLI) from the code into docs/reference/.

    Exit 0: the pages are current (or were written); 1 with --check: they are stale."""
    with lab_errors():
        # The root command of this very CLI: the reference describes what `lab` really takes.
        pages = render_pages(ctx.find_root().command)
        if check:
            problems = stale_pages(out_dir, pages)
            for problem in problems:
                console.print(f"{out_dir}/{problem}", soft_wrap=True, markup=False)
            if problems:
                console.print(f"the reference is stale: run `{REGENERATE}`", markup=False)
                raise typer.Exit(1)
            out.print(f"{out_dir}: {len(pages)} pages, current", soft_wrap=True, markup=False)
            return
        changed = write_pages(out_dir, pages)
        out.print(f"{out_dir}: {len(pages)} pages, "
                  + (f"{len(changed)} changed ({', '.join(changed)})" if changed else "unchanged"),
                  soft_wrap=True, markup=False)

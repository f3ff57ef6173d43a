"""``lab compose export``: a ready-to-run ``docker compose`` directory of the topology."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lab.cli.common import ConfigOption, config_for, lab_errors, out
from lab.topology.compose import export_compose

compose_app = typer.Typer(no_args_is_help=True,
                          help="The topology as a compose file, "
                               "for exploring it with `docker compose`.")


@compose_app.command("export")
def export(
    directory: Annotated[Path, typer.Argument(
        metavar="DIR", help="Directory to write (created when missing).", file_okay=False)],
    config_path: ConfigOption = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Overwrite the files of a non-empty directory.")] = False,
) -> None:
    """Write DIR/docker-compose.yml, DIR/.env (fresh passwords) and DIR/tls/ (fresh
    certificates)."""
    with lab_errors():
        config = config_for(config_path, None)
        path = export_compose(config, directory, force=force)
        out.print(f"wrote {path}, {path.parent / '.env'} and {path.parent / 'tls'}/\n"
                  f"  build the images: lab images build\n"
                  f"  then:             docker compose -f {path} up", soft_wrap=True)

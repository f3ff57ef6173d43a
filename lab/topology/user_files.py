"""The user's files: found where lab.toml names them, and where the nginx container sees them.

Shared by the user's NGINX (``user_nginx``), PgBouncer (``user_pgbouncer``) and the topology
they compose (``user_topology``).
"""

from __future__ import annotations

import posixpath
from pathlib import Path

from lab.errors import ConfigError

# Where the folder of the user's NGINX configuration is copied in the nginx container.
NGINX_PREFIX = "/etc/lab/conf"


def existing_file(path: str, what: str) -> Path:
    """The file lab.toml's ``what`` names; ConfigError when there is none."""
    found = Path(path)
    if not found.exists():
        raise ConfigError(f"{what} = {path!r}: no such file", hint="paths in lab.toml are "
                          "relative to lab.toml's folder")
    return found


def container_path(value: str) -> str:
    """Where NGINX in the container finds a file its configuration names."""
    # NGINX resolves relative file paths against its conf prefix (the main file's folder).
    return value if posixpath.isabs(value) else posixpath.join(NGINX_PREFIX, value)

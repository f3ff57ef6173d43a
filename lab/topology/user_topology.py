"""Your own files, made runnable in the lab: what of the topology comes from them.

Pure (no Docker): the user's NGINX (``user_nginx``) and PgBouncer (``user_pgbouncer``) read and
checked together with the backend's contract, each refusal naming the file, line and reason
(``ConfigError``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lab.errors import ConfigError
from lab.topology.render import BACKEND_PORT
from lab.topology.user_files import existing_file
from lab.topology.user_nginx import UserNginx, user_nginx
from lab.topology.user_pgbouncer import UserPgBouncer, user_pgbouncer


@dataclass(frozen=True)
class UserTopology:
    """What of the topology comes from the user's files, and the port the backends listen on."""

    nginx: UserNginx | None
    pgbouncer: UserPgBouncer | None
    backend_port: int
    user_backend: bool

    @property
    def notes(self) -> tuple[str, ...]:
        """What the lab changed in the user's files, or could not provide, one line each."""
        return (self.nginx.notes if self.nginx else ()) + \
            (self.pgbouncer.notes if self.pgbouncer else ())


def user_topology(config: Any) -> UserTopology:
    """The user's files read and checked (ConfigError naming file and line), without Docker."""
    nginx = user_nginx(config)
    pgbouncer = user_pgbouncer(config)
    contract = config.backend.contract
    if config.backend.build is not None:
        existing_file(config.backend.build, "[backend] build")
    if nginx is not None:
        port = nginx.backend_port
        if contract is not None and contract.port_env is None and contract.port != port:
            raise ConfigError(f"the upstream servers listen on port {port} and the backend "
                              f"contract says port {contract.port}",
                              hint="make [backend.contract] port match the upstream, or name "
                              "the variable the image reads its port from (port_env)")
    elif contract is not None:
        port = contract.port
    else:
        port = BACKEND_PORT
    return UserTopology(nginx, pgbouncer, port, contract is not None)

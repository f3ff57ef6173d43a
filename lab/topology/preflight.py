"""Checks of a user's configuration that need the lab's own images, before anything starts.

``check_nginx`` runs ``nginx -t`` on the user's files in a throwaway container of the lab's
NGINX image (no network; the upstream host names resolve through ``--add-host``), so that a
configuration NGINX rejects is refused with NGINX's own words, file and line, before a single
node exists.
"""

from __future__ import annotations

import uuid

from lab.engine import LABEL_KIND, LABEL_LAB, LABEL_NODE, ContainerSpec, Engine
from lab.errors import ConfigError
from lab.topology.tls import TlsMaterial
from lab.topology.user_nginx import UserNginx, nginx_file_specs, show_host_paths


class NginxRejected(ConfigError):
    """NGINX's own configuration test refused the user's files."""


def check_nginx(engine: Engine, lab: str, image: str, user: UserNginx, tls: TlsMaterial,
                labels: dict[str, str]) -> None:
    """``nginx -t`` on the user's files; NginxRejected with NGINX's output otherwise."""
    hosts = {host: "127.0.0.1" for names in user.aliases.values() for host in names}
    hosts |= {node: "127.0.0.1" for node in user.aliases}
    hosts |= {host: "127.0.0.1" for host in user.nodes if ":" not in host}
    spec = ContainerSpec(
        name=f"lab-{lab}-nginx-test-{uuid.uuid4().hex[:6]}", image=image,
        labels={LABEL_LAB: lab, LABEL_KIND: "sidecar", LABEL_NODE: "nginx-test", **labels},
        network_mode="none", extra_hosts=hosts, files=nginx_file_specs(user, tls),
        command=("nginx", "-t", "-q", "-c", user.main), stop_timeout_s=1)
    result = engine.run_sidecar(spec, timeout_s=30)
    if result.exit_code != 0:
        raise NginxRejected("NGINX (Debian bookworm's nginx 1.22) rejects your configuration; "
                            "`nginx -t` says:\n" + show_host_paths(result.output.strip(), user),
                            hint="fix the file and line named above")

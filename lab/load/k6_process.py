"""k6 as a running process: started on the host or in a container on the lab's network, asked
to stop as after Ctrl-C (it then ends its iterations and writes its summary), waited for, and
removed.

On the network (``placement``), the container is the lab's sidecar image with the k6 binary
mounted read-only, the run's folder mounted where k6 writes, and the client addresses added to
its interface (k6 ``--local-ips``), labelled like every other container of the lab.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import uuid
from pathlib import Path

from lab.engine import LABEL_KIND, LABEL_LAB, LABEL_NODE, ContainerSpec
from lab.errors import LabError
from lab.load.k6 import K6Binary
from lab.load.placement import GENERATOR_CPU_SHARES, Placement, client_addresses
from lab.load.script import GRACEFUL_STOP_S
from lab.topology.lab import LABEL_OWNER, Lab, owner_id
from lab.topology.plan import network_name
from lab.waits import poll

K6_NODE = "k6"
CONTAINER_DIR = "/lab"
SCRIPT_DIR = "/script"


class K6Process:
    """One k6 run, on the host (a child process) or on the lab's network (a container)."""

    def __init__(self, lab: Lab, k6: K6Binary, generator: Placement, *, addresses: int,
                 user_script: bool):
        self.lab = lab
        self.k6 = k6
        self.generator = generator
        self.addresses = addresses          # client addresses on the network
        self.user_script = user_script      # a user's script: its folder is mounted read-only
        self._proc: subprocess.Popen[bytes] | None = None
        self.container: str | None = None

    @property
    def pid(self) -> int | None:
        """The host process's id (None: k6 runs in a container, or has not started)."""
        return self._proc.pid if self._proc is not None else None

    def _args(self, directory: str, script: str) -> list[str]:
        args = [
            "run",
            "--quiet",
            "--no-color",
            "--out",
            f"csv={directory}/points.csv",
            "--summary-export",
            f"{directory}/summary.json",
        ]
        if self.generator == "network":
            first, last = client_addresses(self.lab, self.addresses)
            args += ["--local-ips", f"{first}-{last}"]
        return [*args, script]

    def start(self, env: dict[str, str], directory: Path, script: Path) -> None:
        """Start k6 on ``script``, writing its points, summary and log into ``directory``."""
        if self.generator == "host":
            self._start_host(env, directory, script)
        else:
            self._start_container(env, directory, script)

    def _start_host(self, env: dict[str, str], directory: Path, script: Path) -> None:
        # Absolute paths: k6 runs in the script's folder, and it reads a relative name that does
        # not start with "./" (".lab/runs/...") as a module specifier, not a file.
        directory, script = directory.resolve(), script.resolve()
        log = (directory / "k6.log").open("wb")
        self._proc = subprocess.Popen(
            [str(self.k6.path), *self._args(str(directory), str(script))],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=script.parent,
        )
        log.close()

    def _start_container(self, env: dict[str, str], directory: Path, script: Path) -> None:
        first, last = client_addresses(self.lab, self.addresses)
        start, end = ipaddress.ip_address(first), ipaddress.ip_address(last)
        binds = {
            str(self.k6.path): ("/usr/local/bin/k6", True),
            str(directory.resolve()): (CONTAINER_DIR, False),
        }
        if self.user_script:
            binds[str(script.parent.resolve())] = (SCRIPT_DIR, True)
            inside = f"{SCRIPT_DIR}/{script.name}"
        else:
            inside = f"{CONTAINER_DIR}/{script.name}"
        # Every VU gets one of these addresses (k6 --local-ips); they are on this container's
        # interface only, inside the lab's own /24, above the nodes and Docker's allocations.
        add = " && ".join(
            f"ip addr add {ipaddress.ip_address(a)}/32 dev eth0"
            for a in range(int(start), int(end) + 1)
        )
        command = " ".join(["k6", *(f"'{a}'" for a in self._args(CONTAINER_DIR, inside))])
        name = f"lab-{self.lab.name}-k6-{uuid.uuid4().hex[:6]}"
        spec = ContainerSpec(
            name=name,
            image=self.lab.sidecar_image(),
            labels={
                LABEL_LAB: self.lab.name,
                LABEL_KIND: "sidecar",
                LABEL_NODE: K6_NODE,
                LABEL_OWNER: owner_id(),
            },
            network=network_name(self.lab.name),
            env=env,
            cap_add=("NET_ADMIN",),
            command=("sh", "-c", f"{add} && cd {inside.rsplit('/', 1)[0]} && exec {command}"),
            binds=binds,
            stop_timeout_s=GRACEFUL_STOP_S + 5,
            cpu_shares=GENERATOR_CPU_SHARES,
        )
        self.lab.engine.create_container(spec)
        self.container = name
        self.lab.engine.start(name)

    def exited(self) -> int | None:
        """k6's exit code once it has ended, else None."""
        if self._proc is not None:
            return self._proc.poll()
        info = self.lab.engine.inspect(self.container or "")
        if info is None:
            return 125
        return info.exit_code if info.status in ("exited", "dead") else None

    def interrupt(self) -> None:
        """Ask k6 to stop as after Ctrl-C: it ends the iterations and writes its summary."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
        elif self.container is not None:
            try:
                self.lab.engine.kill(self.container, "SIGINT")
            except LabError:
                pass

    def wait_exit(self, timeout_s: float) -> int | None:
        """k6's exit code once it ends within ``timeout_s``, else None."""
        return poll(self.exited, timeout_s, 0.2)

    def save_log(self, directory: Path) -> None:
        """The container's output as ``k6.log`` (on the host, k6 writes it there itself)."""
        if self.container is not None:
            (directory / "k6.log").write_text(self.lab.engine.logs(self.container))

    def remove(self) -> None:
        """End k6 now, whatever it is doing, and remove its container."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)
        if self.container is not None:
            self.lab.engine.remove_container(self.container)

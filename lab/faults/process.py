"""process-stop: one process inside the target stopped with SIGSTOP while its container lives.

Unlike ``freeze`` (the cgroup freezer holds every process of the container), this stops only
the processes named (by their ``comm``, as ``ps`` shows it), or the container's main process
by default: PgBouncer paused while its container runs, one PostgreSQL process stopped while
the others go on. The kernel still completes TCP handshakes on a stopped listener's sockets,
so to a client it looks frozen: connects succeed, nothing answers. Docker reports the
container as running, and its own health shows nothing.

The main process is signalled through Docker (from outside its PID namespace: inside, PID 1
ignores a SIGSTOP it has no handler for, and SIGSTOP can have none); others by ``kill`` run
inside the container. The heal sends SIGCONT to the same processes, which the fault's record
keeps (``handover``), so any later process can heal it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import Field

from lab.errors import FaultError
from lab.expectations import FailureMode
from lab.faults.base import Band, FaultDef, FaultParams, FaultSpec, always_in_place, register
from lab.history import Effect

MAIN = 1


class ProcessParams(FaultParams):
    # The process name (its comm, up to 15 characters); empty: the container's main process.
    process: Annotated[str, Field(max_length=15, pattern=r"^[A-Za-z0-9_.:+-]*$")] = ""


# The PIDs of every process whose comm is $1, one per line (no procps in the node images).
_FIND = ('for p in /proc/[0-9]*; do [ "$(cat "$p/comm" 2>/dev/null)" = "$1" ] && '
         'echo "${p#/proc/}"; done; true')


@dataclass
class ProcessStop:
    spec: FaultSpec
    lab: Any
    pids: list[int] = field(default_factory=list)

    def _signal(self, signal: str) -> None:
        container = self.lab.container(self.spec.target)
        if MAIN in self.pids:
            self.lab.engine.kill(container, signal=signal)
        others = [str(pid) for pid in self.pids if pid != MAIN]
        if others:
            done = self.lab.engine.exec(container, ["kill", f"-{signal.removeprefix('SIG')}",
                                                    *others])
            if done.exit_code != 0 and signal == "SIGSTOP":
                raise FaultError(f"could not stop {self.spec.params.process} in "
                                 f"{self.spec.target}: {done.output.strip()[-300:]}")

    def inject(self) -> str:
        name = self.spec.params.process
        if not name:
            self.pids = [MAIN]
        else:
            found = self.lab.engine.exec(self.lab.container(self.spec.target),
                                         ["sh", "-c", _FIND, "find", name])
            self.pids = sorted(int(p) for p in found.output.split() if p.isdigit())
            if not self.pids:
                raise FaultError(f"no process named {name!r} runs in {self.spec.target}",
                                 hint="`docker top` lists them; name one by its command")
        self._signal("SIGSTOP")
        what = "the main process" if not name else f"{name} (pid {', '.join(map(str, self.pids))})"
        return f"stopped {what} with SIGSTOP; the container runs on"

    def heal(self) -> str:
        if not self.pids:
            return "nothing to heal"
        self._signal("SIGCONT")
        self.pids = []
        return "continued with SIGCONT"

    def handover(self) -> dict[str, Any]:
        """The stopped processes, for a later process's heal."""
        return {"pids": list(self.pids)}

    def resume(self, state: Mapping[str, Any]) -> None:
        self.pids = [int(p) for p in state.get("pids", [])]


register(FaultDef(name="process-stop", params=ProcessParams, factory=ProcessStop,
                  family="process", lifecycle=True, in_place=always_in_place, leftovers=None,
                  failure_mode=FailureMode.FROZEN, effect=Effect(freezes=True),
                  band=Band("#17becf", "process stopped"),
                  summary="SIGSTOP one process inside the target (the main one by default) "
                          "while its container runs: handshakes complete, it answers nothing"))

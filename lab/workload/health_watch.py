"""A health watcher: one backend's health endpoints polled from a client container on the lab
network while the scenario's steps run, so the samples span restarts, drains and outages.

Why a client container and not ``docker exec``: an exec'd poller dies with the backend it
watches, and the interesting moments are exactly when that backend stops and starts. Why not
the host: the host talks only to published ports, and backends publish none (NGINX would retry
and count every 503: see the `health` check).

The poller prints its own ``time.time()`` for each request: containers share the host's
kernel clock, so its samples and the runner's fault events (also ``time.time()``) are on one
clock without any offset to estimate.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from typing import Protocol

from lab.errors import LabError
from lab.history import WATCHED, HealthSample, HealthWatch
from lab.waits import poll

PATHS = ("/health", "/health/live", "/health/ready", "/health/detailed")

# Runs in the sidecar image (python3, standard library only). One thread per path, so a slow
# /health/detailed (waiting for a dependency) never delays the /health/ready samples.
POLLER = r"""
import http.client, signal, socket, sys, threading, time
node, port, interval, duration, timeout = (sys.argv[1], int(sys.argv[2]), float(sys.argv[3]),
                                           float(sys.argv[4]), float(sys.argv[5]))
paths = sys.argv[6:]
stop = threading.Event()
# PID 1 ignores SIGTERM unless it handles it: the runner ends the watch with SIGTERM.
signal.signal(signal.SIGTERM, lambda *_: stop.set())
deadline = time.time() + duration
out = threading.Lock()

def emit(*fields):
    with out:
        print("\t".join(fields), flush=True)

# Resolve once: the address is static, and a stopped container's name may stop resolving
# (or take the resolver's timeout) exactly while the watch matters.
ip = None
for _ in range(50):
    try:
        ip = socket.gethostbyname(node)
        break
    except OSError:
        time.sleep(0.1)
if ip is None:
    emit("E", f"cannot resolve {node}")
    sys.exit(1)
# Bounded in count as well as time: at most one request per 10 ms for the whole duration.
limit = int(duration / 0.01) + 1

def poll(path):
    for _ in range(limit):
        if stop.is_set() or time.time() >= deadline:
            return
        sent = time.time()
        conn = http.client.HTTPConnection(ip, port, timeout=timeout)
        answered = False
        try:
            # A short connect timeout: a stopped container's address answers nothing at all.
            conn.sock = socket.create_connection((ip, port), timeout=min(timeout, 0.5))
            conn.sock.settimeout(timeout)
            conn.request("GET", path, headers={"Host": node})
            response = conn.getresponse()
            body = response.read(2048).decode(errors="replace").splitlines()
            emit("S", path, f"{sent:.6f}", f"{time.time():.6f}", str(response.status),
                 (body or [""])[0][:300])
            answered = True
        except (OSError, http.client.HTTPException) as exc:
            emit("S", path, f"{sent:.6f}", f"{time.time():.6f}", "-",
                 f"{type(exc).__name__}: {exc}"[:300])
        finally:
            conn.close()
        # While nothing answers, retry every 10 ms: the first answer after the socket opens
        # (a starting backend's first readiness answer) is caught within ~10 ms, not an interval.
        stop.wait(max(0.0, sent + (interval if answered else min(interval, 0.01)) - time.time()))

threads = [threading.Thread(target=poll, args=(p,)) for p in paths]
for t in threads:
    t.start()
for t in threads:
    t.join()
emit("E", "stopped" if stop.is_set() else "duration reached")
"""


class ClientRunner(Protocol):
    """The narrow part of a lab a watcher needs: a named client container on the lab network."""

    name: str

    def run_client(self, command: list[str], *, timeout_s: float = 60,
                   name: str | None = None) -> object: ...
    def client_logs(self, name: str) -> str: ...
    def stop_client(self, name: str) -> None: ...


@dataclass(frozen=True)
class HealthWatchSpec:
    """What to watch: one backend's health endpoints, every ``interval_s``, for at most
    ``max_duration_s`` (the runner ends it earlier, when the scenario's steps end)."""

    node: str
    port: int
    interval_s: float = 0.05
    max_duration_s: float = 120.0
    timeout_s: float = 3.0      # per request; longer than the backend's slowest health answer
    paths: tuple[str, ...] = PATHS


@dataclass(frozen=True)
class WatchResult:
    watch: HealthWatch
    samples: tuple[HealthSample, ...]


def parse_watch_output(node: str, interval_s: float, output: str) -> WatchResult:
    """The poller's lines as samples; anything else (its end line, errors) goes to the note."""
    samples: list[HealthSample] = []
    other: list[str] = []
    for line in output.splitlines():
        fields = line.split("\t", 5)
        if len(fields) == 6 and fields[0] == "S":
            _, path, sent, answered, status, body = fields
            try:
                sent_at, at = float(sent), float(answered)
            except ValueError:
                other.append(line)
                continue
            samples.append(HealthSample(at, node, path, int(status) if status.isdigit() else None,
                                        body, WATCHED, sent_at=sent_at))
        elif line.strip():
            other.append(line.removeprefix("E\t"))
    samples.sort(key=lambda s: (s.sent_at or s.at, s.path))
    started = min((s.sent_at or s.at for s in samples), default=0.0)
    ended = max((s.at for s in samples), default=0.0)
    note = "; ".join(other)[:500]
    return WatchResult(HealthWatch(node, interval_s, started, ended, len(samples), note),
                       tuple(samples))


class HealthWatcher:
    """A poller in a client container, run in a background thread; ``stop`` returns its samples."""

    def __init__(self, lab: ClientRunner, spec: HealthWatchSpec):
        self.lab = lab
        self.spec = spec
        self.name = f"lab-{lab.name}-watch-{spec.node}-{uuid.uuid4().hex[:6]}"
        self._output = ""
        self._thread = threading.Thread(target=self._run, name=f"watch {spec.node}", daemon=True)

    def _run(self) -> None:
        spec = self.spec
        command = ["python3", "-c", POLLER, spec.node, str(spec.port), str(spec.interval_s),
                   str(spec.max_duration_s), str(spec.timeout_s), *spec.paths]
        result = self.lab.run_client(command, timeout_s=spec.max_duration_s + spec.timeout_s + 30,
                                     name=self.name)
        self._output = getattr(result, "output", "")

    def start(self, timeout_s: float = 20.0) -> None:
        """Start polling; returns once every path has been answered once (or raises)."""
        self._thread.start()

        def every_path_answered() -> bool:
            lines = [line.split("\t", 5) for line in self.lab.client_logs(self.name).splitlines()]
            seen = {f[1] for f in lines if len(f) == 6 and f[0] == "S" and f[4] != "-"}
            return seen >= set(self.spec.paths)

        if poll(every_path_answered, timeout_s, 0.1, give_up=lambda: not self._thread.is_alive()):
            return
        self.stop()
        raise LabError(f"the health watcher on {self.spec.node} got no answer on every path within "
                       f"{timeout_s:.0f} s", hint="is the backend ready? `lab status` says")

    def stop(self, timeout_s: float = 30.0) -> WatchResult:
        """End the poller (SIGTERM), wait for its container to be gone, and parse what it
        printed."""
        def stopped() -> bool:
            if not self._thread.is_alive():
                return True
            try:
                self.lab.stop_client(self.name)
            except LabError:
                pass  # not created yet, or already exited
            return False

        # The pause is a join: it ends as soon as the poller's thread does.
        poll(stopped, timeout_s, 0.5, sleep=self._thread.join)
        if self._thread.is_alive():
            raise LabError(f"the health watcher on {self.spec.node} did not stop within "
                           f"{timeout_s:.0f} s")
        return parse_watch_output(self.spec.node, self.spec.interval_s, self._output)

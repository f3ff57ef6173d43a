"""The probe client: open-model HTTP traffic through NGINX, one ``RequestRecord`` per request.

Open model: request ``i`` of a spec is due at ``t0 + i / rate`` and leaves then, however slow
the earlier ones are. A closed-loop client (send, wait, send) slows down with the system it
measures and hides exactly the latency spikes a failover causes ("coordinated omission").

aiohttp, not httpx: measured here, httpx's async client managed 150-500 requests/s under
concurrency, aiohttp about 4,400.

Outcomes follow Jepsen (see ``lab.history``):

- ``ok``: an answer with status 1xx-3xx;
- ``fail``: an answer with status >= 400, or any error before the request headers were
  written (connection refused or reset, no free connection slot in time): it cannot have
  reached the server;
- ``unknown``: a timeout or an error after the headers were written, or a request cancelled
  by ``stop()``: it may have happened.

Traffic only ever goes to 127.0.0.1, where the lab publishes NGINX. When the configuration's
port 80 only redirects to HTTPS, the lab's clients send to the published 443 instead, asking
for the TLS server's name (SNI and Host) and verifying it with the lab's CA: a ``ClientTarget``
says which (``Lab.client_target``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import random
import ssl
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace

import aiohttp

from lab.history import Outcome, RequestRecord
from lab.topology.client import ClientTarget

REQUEST_ID_HEADER = "X-Request-Id"
BACKEND_ID_HEADER = "X-Backend-Id"


REQUEST_ID_PLACEHOLDER = b"{request_id}"


@dataclass(frozen=True)
class TrafficSpec:
    """One stream of requests: ``rate_per_s * duration_s`` requests at evenly spaced times."""

    rate_per_s: float
    duration_s: float
    method: str = "GET"
    path: str = "/health"
    timeout_s: float = 10.0
    max_in_flight: int = 1000
    client: str = "probe-1"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    # Request i leaves at a random moment of its slot [i, i + 1) / rate instead of its start:
    # the same count and rate, without a period that lines up with NGINX's timeouts (a 1 s
    # timeout is exactly 20 slots at 20/s, so every failure would be counted at the instant a
    # new request is routed, and the log could not order the two).
    jitter: bool = False

    def __post_init__(self) -> None:
        if not self.rate_per_s > 0:
            raise ValueError(f"rate_per_s must be > 0, got {self.rate_per_s}")
        if not self.duration_s >= 0:
            raise ValueError(f"duration_s must be >= 0, got {self.duration_s}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {self.max_in_flight}")
        if not self.path.startswith("/"):
            raise ValueError(f"path must start with '/', got {self.path!r}")

    @property
    def count(self) -> int:
        """How many requests the spec sends: floor(rate * duration)."""
        # The epsilon keeps 0.1 * 30 = 3.0000000000000004 style products from losing one.
        return math.floor(self.rate_per_s * self.duration_s + 1e-9)




class _Progress:
    """Per-request state the aiohttp trace hook writes: whether the headers left."""

    __slots__ = ("headers_sent",)

    def __init__(self) -> None:
        self.headers_sent = False


async def _on_headers_sent(_session: aiohttp.ClientSession, context: SimpleNamespace,
                           _params: object) -> None:
    progress = context.trace_request_ctx
    if isinstance(progress, _Progress):
        progress.headers_sent = True


class TrafficRun:
    """Runs traffic specs concurrently in a background thread with its own event loop."""

    def __init__(self, base_url: str | ClientTarget, specs: Sequence[TrafficSpec],
                 seed: int | None = None, *, ca_pem: bytes | None = None):
        target = base_url if isinstance(base_url, ClientTarget) else ClientTarget(base_url)
        self.base_url = target.base_url
        # HTTPS to a name that is not the URL's host: SNI and Host say it (None: the URL's).
        self.server_name = target.server_name
        if not specs:
            raise ValueError("TrafficRun needs at least one TrafficSpec")
        self.specs = tuple(specs)
        self.ca_pem = ca_pem if ca_pem is not None else target.ca_pem
        # The seed fixes the request-id prefix and the jittered schedules, so two runs of one
        # seed can be diffed.
        self._prefix = f"{random.Random(seed).getrandbits(48):012x}"
        self._seed = seed
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []
        self._sent = 0
        self._tally = {Outcome.OK: 0, Outcome.FAIL: 0, Outcome.UNKNOWN: 0}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._schedules: set[asyncio.Task[None]] = set()
        self._error: BaseException | None = None

    # --- public, called from the caller's thread ---------------------------------------

    def start(self) -> None:
        """Start sending in a background thread; returns once the schedule's clock started."""
        if self._thread is not None:
            raise RuntimeError("TrafficRun.start() called twice")
        self._thread = threading.Thread(target=self._run, name="lab-traffic", daemon=True)
        self._thread.start()
        self._ready.wait()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the run to finish by itself; True when it did. Re-raises a crash."""
        if self._thread is None:
            raise RuntimeError("TrafficRun.wait() before start()")
        self._thread.join(timeout)
        if self._error is not None:
            raise self._error
        return not self._thread.is_alive()

    def stop(self) -> None:
        """Cancel what is outstanding (recorded as unknown) and wait for the thread to end."""
        if self._thread is None:
            return
        loop = self._loop
        if loop is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop closed in the meantime
                loop.call_soon_threadsafe(self._cancel_all)
        self._thread.join()

    def finish(self) -> None:
        """Send nothing more, let what is in flight complete (bounded by its timeout), then end.

        Unlike ``stop()``, requests already sent keep their real outcome: ending a scenario
        must not turn its last requests into unknowns."""
        if self._thread is None:
            return
        loop = self._loop
        if loop is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._cancel_schedules)
        self._thread.join(max(spec.timeout_s for spec in self.specs) + 1.0)
        if self._thread.is_alive():
            self.stop()

    @property
    def records(self) -> list[RequestRecord]:
        """A snapshot of the finished requests, by id."""
        with self._lock:
            return sorted(self._records, key=lambda r: r.id)

    def records_since(self, start: int) -> list[RequestRecord]:
        """The records finished after the first ``start`` ones, in finishing order: a live
        view reads only what is new instead of copying and sorting everything each time."""
        with self._lock:
            return self._records[start:]

    @property
    def counts(self) -> tuple[int, int, int, int]:
        """(sent, ok, failed, unknown) so far, for a live progress line."""
        with self._lock:
            return (self._sent, self._tally[Outcome.OK], self._tally[Outcome.FAIL],
                    self._tally[Outcome.UNKNOWN])

    @property
    def done(self) -> bool:
        """Whether the run has ended (by itself or by ``stop()``)."""
        return self._thread is not None and not self._thread.is_alive()

    # --- the event loop's side ---------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by wait()
            self._error = exc
        finally:
            self._ready.set()

    def _ssl(self) -> ssl.SSLContext | bool:
        if self.ca_pem is None:
            return True
        return ssl.create_default_context(cadata=self.ca_pem.decode("ascii"))

    def _cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    def _cancel_schedules(self) -> None:
        for task in list(self._schedules):
            task.cancel()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        trace = aiohttp.TraceConfig()
        trace.on_request_headers_sent.append(_on_headers_sent)
        with warnings.catch_warnings():
            # Deprecated for aiohttp 4, with no replacement for one connection's close yet.
            warnings.simplefilter("ignore", DeprecationWarning)
            # A client that gives up closes its connection at once, as a browser does. asyncio
            # closes TLS gracefully instead, waiting up to 30 s for the server's close_notify;
            # NGINX, busy waiting on its upstream, sends none and (its peek seeing the alert,
            # not EOF) does not learn the client left. It then logs that request's 499 only
            # when the session ends, after the run has read its log: measured on a corpus
            # config with a 60 s proxy_connect_timeout, 129 requests unlogged.
            connector = aiohttp.TCPConnector(limit=sum(s.max_in_flight for s in self.specs),
                                             ssl=self._ssl(), ssl_shutdown_timeout=0.01)
        # Timeouts are ours (asyncio.timeout): aiohttp rounds timeouts >= 5 s up to whole
        # seconds, which would break "the run ends within duration + timeout".
        async with aiohttp.ClientSession(
            connector=connector, trace_configs=[trace],
            timeout=aiohttp.ClientTimeout(total=None),
            cookie_jar=aiohttp.DummyCookieJar(),
        ) as session:
            t0, epoch0 = self._loop.time(), time.time()
            offsets = itertools.accumulate((s.count for s in self.specs), initial=0)
            for spec, first_id in zip(self.specs, offsets, strict=False):
                self._schedules.add(self._spawn(self._schedule(session, spec, first_id, t0,
                                                               epoch0)))
            self._ready.set()
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
        # Closed transports finish closing on the next loop turns; leave them those turns.
        await asyncio.sleep(0.01)

    def _spawn(self, coro: object) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _schedule(self, session: aiohttp.ClientSession, spec: TrafficSpec, first_id: int,
                        t0: float, epoch0: float) -> None:
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(spec.max_in_flight)
        rng = random.Random(f"{self._seed}-{first_id}")
        for i in range(spec.count):
            offset = (i + (rng.random() if spec.jitter else 0.0)) / spec.rate_per_s
            delay = t0 + offset - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._spawn(self._one(session, spec, slots, first_id + i, epoch0 + offset))

    async def _one(self, session: aiohttp.ClientSession, spec: TrafficSpec,
                   slots: asyncio.Semaphore, request_id: int, intended_at: float) -> None:
        with self._lock:
            self._sent += 1
        progress = _Progress()
        header_id = f"{self._prefix}-{request_id}"
        headers = {**dict(spec.headers), REQUEST_ID_HEADER: header_id}
        if self.server_name:
            headers["Host"] = self.server_name
        sent_at, started = time.time(), time.perf_counter()
        status: int | None = None
        backend: str | None = None
        latency: float | None = None
        error: str | None = None
        slot_taken = False
        try:
            # One deadline for the slot wait and the request: the run ends by itself within
            # duration + timeout, however many requests pile up.
            async with asyncio.timeout(spec.timeout_s), slots:
                slot_taken = True
                sent_at, started = time.time(), time.perf_counter()
                async with session.request(
                    spec.method, self.base_url + spec.path, headers=headers,
                    data=_body_for(spec.body, header_id),
                    allow_redirects=False, trace_request_ctx=progress,
                    server_hostname=self.server_name,
                ) as response:
                    status = response.status
                    backend = response.headers.get(BACKEND_ID_HEADER)
                    await response.read()
            latency = time.perf_counter() - started
        except asyncio.CancelledError:
            self._finish(spec, request_id, header_id, intended_at, sent_at, None, status,
                         backend, Outcome.UNKNOWN, "cancelled by stop()")
            raise
        except TimeoutError:
            error = (f"timeout after {spec.timeout_s:g}s" if slot_taken else
                     f"no free connection slot within {spec.timeout_s:g}s "
                     f"(max_in_flight={spec.max_in_flight})")
        except (aiohttp.ClientError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        self._finish(spec, request_id, header_id, intended_at, sent_at, latency, status, backend,
                     _outcome(status, progress.headers_sent), error)

    def _finish(self, spec: TrafficSpec, request_id: int, header_id: str, intended_at: float,
                sent_at: float, latency: float | None, status: int | None, backend: str | None,
                outcome: Outcome, error: str | None) -> None:
        record = RequestRecord(
            id=request_id, client=spec.client, method=spec.method, path=spec.path,
            intended_at=intended_at, sent_at=sent_at, latency_s=latency, status=status,
            backend=backend, outcome=outcome, error=error, request_id=header_id,
        )
        with self._lock:
            self._records.append(record)
            self._tally[outcome] += 1


def _body_for(template: bytes | None, request_id: str) -> bytes | None:
    """The request body, with ``{request_id}`` replaced so each write can be found later."""
    if template is None or REQUEST_ID_PLACEHOLDER not in template:
        return template
    return template.replace(REQUEST_ID_PLACEHOLDER, request_id.encode())


def _outcome(status: int | None, headers_sent: bool) -> Outcome:
    """ok/fail from the status when one arrived, else fail only if nothing left the client."""
    if status is not None:
        # Once the status line arrived the server has decided, even if the body broke off.
        return Outcome.OK if status < 400 else Outcome.FAIL
    return Outcome.UNKNOWN if headers_sent else Outcome.FAIL

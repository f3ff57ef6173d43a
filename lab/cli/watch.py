"""``lab watch``: one lab live on one screen, for a projector, while someone breaks it.

The command only wires ``lab.watch`` together: the sampler (``LiveView``: a bounded probe
stream through NGINX and what the nodes say), and either the Textual screen (``WatchApp``) or
one JSON snapshot per interval with ``--json``.
"""

from __future__ import annotations

import signal
import sys
import time
from typing import Annotated

import typer
from rich.text import Text

from lab.cli.common import (
    ConfigOption,
    NameOption,
    config_for,
    console,
    engine,
    lab_errors,
    seconds_option,
)
from lab.errors import ConfigError, LabError
from lab.expectations import UpstreamPolicy
from lab.topology.lab import Lab
from lab.watch.app import WatchApp
from lab.watch.sampler import LiveView

MAX_RATE = 200.0         # req/s: the watch observes, it is no load test
MAX_DURATION_S = 8 * 3600.0


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def watch(
    name: NameOption = None,
    config_path: ConfigOption = None,
    rate: Annotated[float, typer.Option(help=f"Probe requests per second through NGINX "
                                             f"(at most {MAX_RATE:g}).")] = 20.0,
    duration: Annotated[str, typer.Option(help="Stop by itself after this long (30s, 10m, "
                                               "1h).")] = "10m",
    window: Annotated[str, typer.Option(help="The sliding window of shares, statuses and "
                                             "latency.")] = "10s",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON snapshot per interval "
                                                         "instead of the screen.")] = False,
    interval: Annotated[str, typer.Option(help="With --json: time between snapshots.")] = "1s",
) -> None:
    """Watch one lab live: nodes, faults, the traffic's shares, NGINX's view, locks, the pool."""
    with lab_errors():
        if not 0 < rate <= MAX_RATE:
            raise ConfigError(f"--rate {rate:g}: must be more than 0 and at most {MAX_RATE:g}")
        duration_s = seconds_option(duration, "--duration", MAX_DURATION_S)
        window_s = seconds_option(window, "--window", 120.0)
        interval_s = seconds_option(interval, "--interval", 60.0)
        config = config_for(config_path, name)
        lab = Lab.attach(engine(), config.name)
        try:
            policy: UpstreamPolicy | None = lab.nginx_policy().upstream
        except LabError:
            policy = None   # the predicted ejection is not shown; everything else is
        # NGINX logs a try when it ends: after proxy_read_timeout at worst (a frozen backend).
        lag = policy.read_timeout_s + policy.connect_timeout_s if policy is not None else 6.0
        view = LiveView(lab, rate_per_s=rate, duration_s=duration_s, window_s=window_s,
                        log_lag_s=lag)
        signal.signal(signal.SIGTERM, _on_sigterm)
        started = time.monotonic()
        try:
            view.start()
            if as_json:
                _print_snapshots(view, interval_s)
                return
            app = WatchApp(view, policy, lab.config.pgbouncer.default_pool_size)
            app.run()
            elapsed = time.monotonic() - started
            console.print(Text(f"lab watch: {app.redraws} redraws in {elapsed:.0f} s"
                               + (", the probe stream ended" if view.ended else ""), style="dim"))
        except KeyboardInterrupt:
            pass
        finally:
            view.stop()


def _print_snapshots(view: LiveView, interval_s: float) -> None:
    """One JSON line per interval until the stream ends (or Ctrl-C)."""
    next_at = time.monotonic() + interval_s
    while not view.ended:
        time.sleep(max(0.0, next_at - time.monotonic()))
        next_at += interval_s
        sys.stdout.write(view.snapshot().model_dump_json() + "\n")
        sys.stdout.flush()

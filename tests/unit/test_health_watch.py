"""The health watcher's output parsing (the poller itself runs in the integration tests)."""

from __future__ import annotations

from lab.history import WATCHED
from lab.workload.health_watch import parse_watch_output

OUTPUT = "\n".join([  # noqa: FLY002 - one line per sample reads better
    "S\t/health/ready\t100.000000\t100.004000\t503\t{\"status\":\"starting\"}",
    "S\t/health/live\t100.001000\t100.002000\t200\t{\"status\":\"alive\"}",
    ("S\t/health/ready\t99.990000\t99.991000\t-\t"
     "ConnectionRefusedError: [Errno 111] Connection refused"),
    "Traceback (most recent call last): noise",
    "E\tstopped",
])


def test_samples_carry_both_times_in_send_order() -> None:
    """Each sample line becomes a watched HealthSample with its send and answer
    times, sorted by send."""
    result = parse_watch_output("backend-2", 0.05, OUTPUT)
    assert [s.sent_at for s in result.samples] == [99.99, 100.0, 100.001]
    first = result.samples[0]
    assert first.status is None and first.body.startswith("ConnectionRefusedError")
    assert result.samples[1].status == 503 and result.samples[1].at == 100.004
    assert all(s.expectation == WATCHED and s.node == "backend-2" for s in result.samples)


def test_the_watch_spans_its_samples_and_notes_the_rest() -> None:
    """The watch record covers first send to last answer; other lines end up in its note."""
    watch = parse_watch_output("backend-2", 0.05, OUTPUT).watch
    assert ((watch.started_at, watch.ended_at, watch.samples, watch.interval_s)
            == (99.99, 100.004, 3, 0.05))
    assert "stopped" in watch.note and "Traceback" in watch.note


def test_no_output_is_an_empty_watch() -> None:
    """A watcher that printed nothing yields no samples (checks then say unknown)."""
    result = parse_watch_output("backend-2", 0.05, "")
    assert result.samples == () and result.watch.samples == 0

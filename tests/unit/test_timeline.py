"""`lab up --timings`: the recorder and its table, without Docker."""

from __future__ import annotations

import itertools

import pytest

from lab.topology.timeline import TimelineRecorder


def test_recorder_keeps_the_first_time_of_each_event_and_counts_probes() -> None:
    """A node's events keep their first time; probes are counted; unknown events are refused."""
    clock = iter([0.0, 0.1, 0.2, 0.25, 0.3, 0.9, 1.0, 1.2])
    recorder = TimelineRecorder(origin=0.0)
    recorder.now = lambda: next(clock)  # type: ignore[method-assign]
    with recorder.phase("network"):
        pass
    recorder.mark("postgres", "created")
    recorder.mark("postgres", "started")
    recorder.mark("postgres", "started")   # a second time is ignored
    recorder.probed("postgres")
    recorder.probed("postgres")
    recorder.mark("postgres", "ready")
    with pytest.raises(ValueError):
        recorder.mark("postgres", "exploded")
    timeline = recorder.result({"postgres": "postgres", "redis": "redis"})
    assert [(p.name, p.start_s, p.end_s) for p in timeline.phases] == [("network", 0.0, 0.1)]
    pg, redis = timeline.nodes
    assert (pg.created_s, pg.started_s, pg.ready_s, pg.probes) == (0.2, 0.25, 0.9, 2)
    assert pg.probing_s is None
    assert (redis.created_s, redis.ready_s, redis.probes) == (None, None, 0)
    assert timeline.total_s == 1.0


def test_table_has_a_row_per_node_with_its_times_and_a_bar() -> None:
    """The printed table names every node with its times, and its bar ends in | when ready."""
    recorder = TimelineRecorder(origin=0.0)
    times = itertools.chain([0.5, 1.0, 2.0, 2.0], itertools.repeat(2.5))
    recorder.now = lambda: next(times)  # type: ignore[method-assign]
    recorder.mark("postgres", "created")
    recorder.mark("postgres", "started")
    recorder.mark("postgres", "probing")
    recorder.mark("postgres", "ready")
    lines = recorder.result({"postgres": "postgres", "nginx": "nginx"}).lines()
    row = next(line for line in lines if line.startswith("postgres"))
    assert "0.50" in row and "1.00" in row and "2.00" in row and row.endswith("|")
    nginx = next(line for line in lines if line.startswith("nginx"))
    assert nginx.split()[1:5] == ["-", "-", "-", "-"]
    assert lines[-1].split() == ["all", "ready", "2.50"]
    document = recorder.result({"postgres": "postgres"})
    assert document.as_dict()["nodes"][0]["ready_s"] == 2.0

"""A k6 load beside a scenario: started before the scenario's steps, stopped when they end,
its requests added to the scenario's history so its checks and objectives judge both.

    alongside = LoadAlongside(LoadRunner(lab, plan=plan, ...))
    Runner(lab, scenario, alongside=alongside).run()

This is the rehearsal a checklist cannot do: "99.9% availability while a backend dies at
1,500 req/s" is the scenario's ejection and the load's availability, on one history.
"""

from __future__ import annotations

import threading
from dataclasses import replace

from lab.errors import LabError
from lab.history import RequestRecord
from lab.load.runner import LoadProgress, LoadResult, LoadRunner
from lab.waits import poll

LOAD_CLIENT = "load"          # the client name of the load's requests in the scenario's history
START_TIMEOUT_S = 60.0        # k6 in its container sends its first request within this


class LoadAlongside:
    """One load run in a thread of its own, bounded by the load runner's own deadline."""

    def __init__(self, runner: LoadRunner):
        self.runner = runner
        self._progress: LoadProgress | None = None
        self._result: LoadResult | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        forward = runner.on_progress

        def seen(progress: LoadProgress) -> None:
            self._progress = progress
            forward(progress)

        runner.on_progress = seen

    @property
    def rate_per_s(self) -> float:
        """The load's peak scheduled rate (0 for a user's script: its schedule is its own)."""
        return self.runner.plan.peak_rate if self.runner.plan is not None else 0.0

    def _run(self) -> None:
        try:
            self._result = self.runner.run()
        except BaseException as exc:  # noqa: BLE001 - handed to the scenario's thread by finish()
            self._error = exc

    def start(self) -> None:
        """Start k6 and return once it has sent its first request (or failed to start)."""
        self._thread = threading.Thread(target=self._run, name="lab-load", daemon=True)
        self._thread.start()
        thread = self._thread
        if poll(lambda: self._progress is not None and self._progress.sent > 0, START_TIMEOUT_S,
                0.1, give_up=lambda: not thread.is_alive()):
            return
        if self._error is not None:
            raise self._error
        if self._thread.is_alive():
            self.stop()
            raise LabError(f"k6 sent no request within {START_TIMEOUT_S:.0f} s of its start")

    def stop(self) -> None:
        """Ask k6 to end now (the scenario's steps are done); finish() waits for it."""
        if self._thread is not None and self._thread.is_alive():
            self.runner.stop()

    def finish(self) -> LoadResult:
        """The load's result, once k6 has ended."""
        assert self._thread is not None, "start() first"
        self._thread.join(self.runner.timeout_s + 120)
        if self._error is not None:
            raise self._error
        if self._result is None:
            raise LabError("the load beside the scenario did not end")
        return self._result

    @property
    def result(self) -> LoadResult | None:
        return self._result

    def collect(self) -> tuple[list[RequestRecord], list[str]]:
        """The load's requests as the scenario's history holds them (one client, ``load``),
        and a note saying what ran and where its own report is."""
        result = self.finish()
        records = [replace(record, client=LOAD_CLIENT) for record in result.history.requests]
        note = (f"load {result.name} beside the steps: {len(records)} requests as client "
                f"{LOAD_CLIENT!r}, k6 {result.verdict.verdict.value}; its report: "
                f"{result.directory / 'result.json'}")
        return records, [note]

"""lab.waits: poll a condition at an interval until it holds, a timeout passes or we give up."""

from __future__ import annotations

import itertools
import time

import pytest

from lab.errors import WaitTimeout
from lab.waits import poll, wait_until


def test_the_first_answer_is_returned_and_zero_is_an_answer() -> None:
    """None and False mean "not yet"; the first other value (0 included) ends the wait."""
    answers = iter([None, False, 0, 5])
    pauses: list[float] = []
    assert poll(lambda: next(answers), 10, 0.25, sleep=pauses.append) == 0
    assert pauses == [0.25, 0.25]


def test_timeout_returns_none_after_asking_at_the_deadline() -> None:
    """A condition that never holds: None once the timeout passed, having asked at each interval
    and once more at the deadline."""
    asked: list[float] = []
    started = time.monotonic()
    assert poll(lambda: asked.append(time.monotonic()), 0.3, 0.05) is None
    took = time.monotonic() - started
    assert 0.3 <= took < 0.3 + 0.05 + 0.2   # the last pause, and a loaded machine's slack
    assert asked[-1] - started >= 0.3       # asked once more at the deadline
    assert 4 <= len(asked) <= 8


def test_wait_until_raises_the_given_error_with_what_and_the_timeout() -> None:
    """No answer in time: the error names what was awaited and for how long, with the hint."""
    with pytest.raises(WaitTimeout, match="nothing came within 0 s") as caught:
        wait_until(lambda: None, 0.05, 0.01, "nothing came", hint="look elsewhere")
    assert caught.value.hint == "look elsewhere"


def test_give_up_ends_the_wait_early() -> None:
    """give_up() true (the thread that would answer died) ends the wait before the timeout."""
    asked = itertools.count()
    started = time.monotonic()
    assert poll(lambda: None, 30, 0.01, give_up=lambda: next(asked) >= 2) is None
    assert time.monotonic() - started < 5


def test_ignored_exceptions_are_not_yet_and_others_raise_at_once() -> None:
    """An exception of an ignored type counts as "not yet"; any other ends the wait."""
    answers = iter([ConnectionError("down"), ConnectionError("down"), "up"])

    def read() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert poll(read, 10, 0.0, ignore=(ConnectionError,)) == "up"
    with pytest.raises(KeyError):
        poll(lambda: {}["missing"], 10, 0.0, ignore=(ConnectionError,))

"""Waiting for a condition, one way: ask it every ``interval_s`` until it holds or ``timeout_s``
has passed, on tenacity (the house's retry library; ``lab.topology.readiness`` uses it too).

    exit_code = poll(process.exited, timeout_s=10, interval_s=0.2)      # None: still running
    node = wait_until(new_holder, 30, 0.05, "no backend took the lock")  # raises WaitTimeout

A condition answers with a value when it holds and with ``None`` (or ``False``) while it does
not; 0, "" and an empty list are answers. It is asked at once, then after every interval, and
once more when the timeout has passed (tenacity's ``stop_after_delay``: a condition that came
true during the last pause is not missed). ``give_up`` ends a wait early (the thread that would
make it true has died); exceptions of the ``ignore`` types count as "not yet" (a store that is
down for a moment), any other is raised at once. ``sleep`` is the pause itself: a scenario's
``RunState.sleep`` reports progress while it waits, a thread's ``join`` ends the pause early.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_delay,
    stop_any,
    wait_fixed,
)

from lab.errors import LabError, WaitTimeout

T = TypeVar("T")


def _not_yet(result: Any) -> bool:
    return result is None or result is False


def poll(read: Callable[[], T | None], timeout_s: float, interval_s: float, *,
         give_up: Callable[[], bool] | None = None,
         ignore: tuple[type[BaseException], ...] = (),
         sleep: Callable[[float], Any] = time.sleep) -> T | None:
    """``read()`` every ``interval_s`` until it answers (not None, not False): that answer; None
    when ``timeout_s`` passed or ``give_up()`` came true first."""
    stops: list[Callable[[RetryCallState], bool]] = [stop_after_delay(max(0.0, timeout_s))]
    if give_up is not None:
        stops.append(lambda _: give_up())
    retry = retry_if_result(_not_yet)
    if ignore:
        retry = retry | retry_if_exception_type(ignore)
    retrying = Retrying(stop=stop_any(*stops), wait=wait_fixed(interval_s), retry=retry,
                        sleep=sleep)
    try:
        return retrying(read)
    except RetryError:
        return None


def wait_until(read: Callable[[], T | None], timeout_s: float, interval_s: float, what: str, *,
               hint: str | None = None, error: type[LabError] = WaitTimeout,
               give_up: Callable[[], bool] | None = None,
               ignore: tuple[type[BaseException], ...] = (),
               sleep: Callable[[float], Any] = time.sleep) -> T:
    """``poll``, raising ``error("<what> within <timeout> s")`` when no answer came."""
    found = poll(read, timeout_s, interval_s, give_up=give_up, ignore=ignore, sleep=sleep)
    if found is None:
        raise error(f"{what} within {timeout_s:.0f} s", hint=hint)
    return found

"""Wait for a condition with a bound, instead of sleeping a guessed time and then counting.

A test that sleeps 0.2 s and then asserts an exact count fails on a loaded machine and
wastes the sleep on an idle one. These return as soon as the condition holds and fail
the test, naming what was awaited, once the bound has passed. Use them for conditions
that no event announces (another process, a third-party library, a log record); when the
code under test sets an ``asyncio.Event`` or a future, await that instead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

__all__ = ["wait_until", "wait_until_blocking"]


async def wait_until(
    condition: Callable[[], object], *, timeout_s: float = 10.0, interval_s: float = 0.01, what: str = ""
) -> None:
    """Return once ``condition()`` is true; fail the test after ``timeout_s``.

    Args:
        condition: checked now and then every ``interval_s``.
        timeout_s: the bound.
        interval_s: the pause between checks.
        what: names the condition in the failure message.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() >= deadline:
            pytest.fail(f"not true within {timeout_s} s: {what or condition}")
        await asyncio.sleep(interval_s)


def wait_until_blocking(
    condition: Callable[[], object], *, timeout_s: float = 10.0, interval_s: float = 0.05, what: str = ""
) -> None:
    """:func:`wait_until` for synchronous tests (blocks the calling thread)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            pytest.fail(f"not true within {timeout_s} s: {what or condition}")
        time.sleep(interval_s)

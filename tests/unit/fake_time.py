"""A clock and a sleep that only move when the code under test sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)  # still let other tasks run, as a real sleep would


async def until(predicate: Callable[[], bool], what: str = "the state", turns: int = 100_000) -> None:
    """Wait for a state of the code under test (not for a number of loop turns); fail if it never comes."""
    for _ in range(turns):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{what} never came")

"""A clock and a sleep that only move when the code under test sleeps."""

from __future__ import annotations

import asyncio


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)  # still let other tasks run, as a real sleep would

"""The node's one clock: every service is handed a :class:`Clock` and reads time only through it.

Two readings, for two purposes:

- :meth:`Clock.now_ms`: wall-clock milliseconds since the epoch, for what is written down or
  compared with other machines (record times, expiries, capabilities, certificates);
- :meth:`Clock.monotonic_s`: seconds that never go backwards, for durations, deadlines and
  rates on this machine (a wall clock can jump when NTP corrects it).

:class:`SystemClock` reads the operating system and is the only place in ``mftp.node`` that
calls :func:`time.time` or :func:`time.monotonic` (a test keeps it so).  :class:`FakeClock` is
moved by hand, so tests of timeouts, expiries and renewals move time instead of sleeping.
Timers scheduled on the asyncio loop still run on the loop's own monotonic clock.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """What a service may ask of time."""

    def now_ms(self) -> int:
        """Wall-clock time in milliseconds since the Unix epoch."""
        ...

    def monotonic_s(self) -> float:
        """Seconds from an arbitrary start that never go backwards."""
        ...


class SystemClock:
    """The operating system's clocks."""

    def now_ms(self) -> int:
        """Wall-clock time in milliseconds since the Unix epoch."""
        return time.time_ns() // 1_000_000

    def monotonic_s(self) -> float:
        """:func:`time.monotonic`."""
        return time.monotonic()


class FakeClock:
    """A clock that moves only when told: both readings advance together."""

    def __init__(self, now_ms: int = 1_767_225_600_000, monotonic_s: float = 1000.0) -> None:
        self._now_ms = now_ms
        self._monotonic_s = monotonic_s

    def now_ms(self) -> int:
        """The wall time set so far."""
        return self._now_ms

    def monotonic_s(self) -> float:
        """The monotonic time set so far."""
        return self._monotonic_s

    def advance(self, ms: int) -> None:
        """Move both readings forward by ``ms`` milliseconds."""
        if ms < 0:
            raise ValueError("a clock does not go backwards")
        self._now_ms += ms
        self._monotonic_s += ms / 1000


SYSTEM_CLOCK = SystemClock()
"""The clock a node uses unless it is given another (one object: it holds no state)."""

"""Per-peer token buckets: how often a member may ask for work that costs us something."""

from __future__ import annotations

from .clock import SYSTEM_CLOCK, Clock


class PeerRate:
    """At most ``rate_per_s`` requests per second from each peer, in bursts of up to ``burst``.

    Keyed by peer (members only, so the table is as small as the consortium); time is read
    from ``clock`` (the node's, or a :class:`~.clock.FakeClock` in tests).
    """

    def __init__(self, rate_per_s: float, burst: int, clock: Clock = SYSTEM_CLOCK) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("a rate is positive and a burst at least 1")
        self.rate_per_s, self.burst, self._clock = rate_per_s, burst, clock
        self._buckets: dict[bytes, tuple[float, float]] = {}  # peer -> (tokens, at)

    def allow(self, peer: bytes) -> bool:
        """Take one token of ``peer``'s bucket; False (and nothing taken) if it is empty."""
        now = self._clock.monotonic_s()
        tokens, at = self._buckets.get(peer, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate_per_s)
        allowed = tokens >= 1.0
        self._buckets[peer] = (tokens - 1.0 if allowed else tokens, now)
        return allowed

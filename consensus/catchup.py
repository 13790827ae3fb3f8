"""Catch-up bookkeeping: when to send a lagging peer blocks, and when to fetch them ourselves.

Gossip lets a correct validator fall behind (it missed precommits, or it was
down).  Peers notice from the heights of its messages: one whose messages show
an older height gets a :class:`~mftp.consensus.events.SendBlocks`; when
validators holding more than a third of the power (so at least one correct)
show a newer height, we emit :class:`~mftp.consensus.events.FetchBlocks`.
Both are rate-limited per interval, and a peer still one height behind just
after our decision is not lagging yet.  Pure: time comes in as ``now_ms``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mftp.ledger.block import ValidatorSet

from .events import FetchBlocks, SendBlocks


@dataclass
class CatchUp:
    """Rate-limited lag detection for one core."""

    interval_ms: int
    _sent_at: dict[bytes, int] = field(default_factory=dict)
    _fetched_at: int = -(10**18)
    _ahead: dict[bytes, int] = field(default_factory=dict)
    _height_started_ms: int = 0

    def new_height(self, now_ms: int) -> None:
        """We moved to a new height: forget who was ahead of the old one."""
        self._ahead.clear()
        self._height_started_ms = now_ms

    def peer_behind(
        self, peer: bytes, their_height: int, *, height: int, known: bool, now_ms: int
    ) -> SendBlocks | None:
        """``peer`` (a validator of ours iff ``known``) sent a message for ``their_height`` < ``height``."""
        recent = now_ms - self._height_started_ms < self.interval_ms
        if not known or (their_height == height - 1 and recent):
            return None
        sent = self._sent_at.get(peer)
        if sent is not None and now_ms - sent < self.interval_ms:
            return None
        self._sent_at[peer] = now_ms
        return SendBlocks(peer, their_height)

    def peer_ahead(
        self, peer: bytes, their_height: int, *, height: int, validators: ValidatorSet, now_ms: int
    ) -> FetchBlocks | None:
        """``peer`` sent a message for ``their_height`` > ``height``.

        Claims are not verified here (their signatures need a validator set we
        may not have yet): a forged claim costs at most one fetch per interval,
        and fetched blocks are checked against their certificates.
        """
        if peer not in validators:
            return None
        self._ahead[peer] = max(self._ahead.get(peer, 0), their_height)
        if not validators.has_one_third(validators.power_of(self._ahead)):
            return None
        if now_ms - max(self._fetched_at, self._height_started_ms) < self.interval_ms:
            return None
        self._fetched_at = now_ms
        return FetchBlocks(tuple(sorted(self._ahead)), height)

"""Catch-up bookkeeping: when to send a lagging peer blocks, and when to fetch them ourselves.

Gossip lets a correct validator fall behind (it missed precommits, or it was
down).  Peers notice from the heights of its messages: one whose messages show
an older height gets a :class:`~mftp.consensus.events.SendBlocks`; when
validators holding more than a third of the power (so at least one correct)
show a newer height, we emit :class:`~mftp.consensus.events.FetchBlocks`.
Both are rate-limited per interval.  A peer whose message is for a height we
decided less than an interval ago is not lagging yet: its votes of that height
may still be on their way, and every Tick re-sends a validator's precommit of
the height before its own.  (Before this rule looked back only one height, and
at 10-15 heights a second each validator pushed a block nobody needed about
every other height.)  Pure: time comes in as ``now_ms``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mftp.ledger.block import ValidatorSet, Vote, VoteType

from .events import FetchBlocks, SendBlocks

DECIDED_KEPT = 64  # decision times remembered; an older height is long decided anyway


def height_shown(vote: Vote) -> int:
    """The lowest height the sender of ``vote`` may be at now.

    A precommit's sender may have decided that height since (and every Tick
    re-sends the precommit of the height before the sender's own), so it shows
    the next height; a prevote shows its own.
    """
    return vote.height + 1 if vote.type is VoteType.PRECOMMIT else vote.height


def height_shown_by_a_third(claims: dict[bytes, int], validators: ValidatorSet) -> int:
    """The highest height that validators holding more than a third of the power have shown (0 if none).

    ``claims`` maps a peer to the highest height of the messages it sent us
    itself; more than a third of the power holds at least one correct
    validator, so no Byzantine minority can raise this figure.
    """
    power = 0
    for key, height in sorted(claims.items(), key=lambda item: item[1], reverse=True):
        if key in validators:
            power += validators.power_of([key])
            if validators.has_one_third(power):
                return height
    return 0


@dataclass
class CatchUp:
    """Rate-limited lag detection for one core."""

    interval_ms: int
    _sent_at: dict[bytes, int] = field(default_factory=dict)
    _fetched_at: int = -(10**18)
    _ahead: dict[bytes, int] = field(default_factory=dict)
    height_started_ms: int = 0  # when we entered the current height
    _decided_at_ms: dict[int, int] = field(default_factory=dict)  # the last DECIDED_KEPT heights

    def new_height(self, height: int, now_ms: int) -> None:
        """We moved to ``height`` (``height - 1`` was decided now): forget who was ahead of the old one."""
        self._ahead.clear()
        self.height_started_ms = now_ms
        self._decided_at_ms[height - 1] = now_ms
        while len(self._decided_at_ms) > DECIDED_KEPT:
            del self._decided_at_ms[next(iter(self._decided_at_ms))]

    def behind_is_due(self, peer: bytes, their_height: int, *, known: bool, now_ms: int) -> bool:
        """Whether :meth:`peer_behind` would send ``peer`` blocks now (it records nothing).

        Lets the core check a message's signature only when catch-up would act on it.
        """
        decided_ms = self._decided_at_ms.get(their_height)
        if not known or (decided_ms is not None and now_ms - decided_ms < self.interval_ms):
            return False
        sent = self._sent_at.get(peer)
        return sent is None or now_ms - sent >= self.interval_ms

    def peer_behind(
        self, peer: bytes, their_height: int, *, height: int, known: bool, now_ms: int
    ) -> SendBlocks | None:
        """``peer`` (a validator of ours iff ``known``) sent a message for ``their_height`` < ``height``."""
        if not self.behind_is_due(peer, their_height, known=known, now_ms=now_ms):
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
        if now_ms - max(self._fetched_at, self.height_started_ms) < self.interval_ms:
            return None
        self._fetched_at = now_ms
        return FetchBlocks(tuple(sorted(self._ahead)), height)

"""A consensus core bound to its write-ahead log: the part of the shell that must be exact.

:meth:`Replica.handle` is the only way inputs reach the core while running:

1. the input event is appended to the WAL (written, not yet synced) *before*
   the core sees it -- "every input is logged before it is acted on";
2. the core steps;
3. each :class:`~mftp.consensus.events.WalAppend` (own vote or proposal) is
   appended and, with ``sync``, made durable; this happens before any action
   is returned, so before the shell can send that vote anywhere.

Because WAL appends are ordered, syncing an own vote also makes every input
before it durable: on restart the log holds, at least, everything that led to
any message this validator ever sent.

:meth:`Replica.recover` rebuilds a core after a crash: it first teaches the
double-sign guard every own vote and proposal in the log, then replays the
input events through the same ``step`` with sends suppressed (peers get our
messages again on the next Tick), keeping what still matters: commits the
store lacks (handed to the shell at once), timeouts to re-arm, and any vote
signed anew (appended, with sync, as in normal operation).  Ticks are not logged (they change no state).

After the shell has stored a committed block durably it calls
:meth:`Replica.committed`, which empties the WAL: the core never signs votes
for a stored height again, so older entries can no longer matter.
"""

from __future__ import annotations

from collections.abc import Callable

from mftp.ledger.block import Block, Vote

from .core import Consensus
from .errors import ConsensusInputError
from .events import (
    Action,
    Commit,
    Event,
    OwnProposal,
    OwnVote,
    ScheduleTimeout,
    Start,
    Step,
    Tick,
    WalAppend,
)
from .messages import Proposal
from .wal import InputEntry, WalStorage, decode_entry, encode_entry


class Replica:
    """A :class:`Consensus` core whose inputs and own votes go through a WAL first."""

    def __init__(self, core: Consensus, wal: WalStorage) -> None:
        self.core = core
        self.wal = wal

    def handle(self, event: Event, now_ms: int) -> list[Action]:
        """Log ``event``, step the core, persist its own messages; returns the remaining actions."""
        if self.wal.logs_inputs and not isinstance(event, Tick):
            self.wal.append(encode_entry(InputEntry(event, now_ms)), sync=False)
        return self._persist(self.core.step(event, now_ms))

    def _persist(self, actions: list[Action]) -> list[Action]:
        rest: list[Action] = []
        for action in actions:
            if isinstance(action, WalAppend):
                self.wal.append(encode_entry(action.entry), sync=action.sync)
            else:
                rest.append(action)
        return rest

    def committed(self, height: int) -> None:
        """The shell stored block ``height`` durably: the WAL can be emptied."""
        if self.core.height == height + 1 and self.core.current_step is Step.COMMIT:
            self.wal.reset()

    @classmethod
    def recover(
        cls,
        make_core: Callable[[], Consensus],
        wal: WalStorage,
        *,
        on_commit: Callable[[Commit], None],
        now_ms: int,
    ) -> tuple[Replica, list[Action]]:
        """Rebuild from ``wal.entries``; returns the replica and the actions the shell must carry out.

        ``make_core`` builds a fresh core from the store (its last block and
        certificate).  ``on_commit`` is called at once for each block decided
        again during the replay, which the store did not get before the crash:
        it must store it (and update the record index) before returning.  The
        returned actions are the timeouts to re-arm and what a final
        :class:`Start` at ``now_ms`` produces.
        """
        core = make_core()
        entries = []
        for payload in wal.entries:
            try:
                entries.append(decode_entry(payload))
            except ConsensusInputError:
                # A frame with a good checksum but a bad entry: trust nothing from it on, and
                # rewrite the log without it, or what we append next would hide behind it.
                good = wal.entries[: len(entries)]
                wal.reset()
                for index, kept in enumerate(good):
                    wal.append(kept, sync=index == len(good) - 1)
                break
        own_votes: list[Vote] = [e.vote for e in entries if isinstance(e, OwnVote)]
        own_proposals: list[tuple[Proposal, Block]] = [
            (e.proposal, e.block) for e in entries if isinstance(e, OwnProposal)
        ]
        core.restore_own(own_votes, own_proposals)
        replica = cls(core, wal)
        timeouts: list[Action] = []
        for entry in entries:
            if not isinstance(entry, InputEntry):
                continue
            for action in replica._persist(core.step(entry.event, entry.now_ms)):
                if isinstance(action, Commit):
                    on_commit(action)
                elif isinstance(action, ScheduleTimeout):
                    timeouts.append(action)
                # Sends are suppressed: the next Tick re-sends our votes; sync requests are stale.
        live = [a for a in timeouts if isinstance(a, ScheduleTimeout) and a.height >= core.height]
        return replica, live + replica.handle(Start(), now_ms)

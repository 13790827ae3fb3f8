"""Crash a validator after each WAL record in turn: it never signs two different votes for one slot.

The simulator's checker sees every signature the crashing validator's key
ever makes (not only what it sends), across its lives; any two different
votes for one (height, round, step) are a ``double_sign`` violation.  Each
crash point is tried as a process crash (the written WAL survives), as a
power loss (only the synced prefix survives) and as a power loss that leaves
a torn frame behind (which recovery must cut).
"""

from __future__ import annotations

import pytest

from mftp.consensus.core import Consensus
from mftp.consensus.events import Broadcast, OwnVote, RecordsSubmitted, Start, WalAppend
from mftp.consensus.replica import Replica
from mftp.consensus.sim import Simulator, Spec
from mftp.consensus.wal import InputEntry, MemoryWal, decode_entry, read_frames
from mftp.ledger.block import Vote

from .helpers import fresh_core, genesis_for, identity

VARIANTS = [(False, 0), (True, 0), (True, 7)]  # (power loss, torn bytes of the unsynced tail)


def _spec(crash_at: int | None = None, variant: tuple[bool, int] = (False, 0)) -> Spec:
    spec = Spec("crash", 7, [1, 1, 1, 1], target_height=2, delay_ms=(1, 20), drop=0.1, heal_ms=300, records=2)
    if crash_at is not None:
        spec.crash_after_append = (0, crash_at)
        spec.crash_power_loss = variant
    return spec


def _appends_without_crash() -> int:
    sim = Simulator(_spec())
    result = sim.run()
    assert result.violations == []
    wal = sim.nodes[0].replica.wal  # type: ignore[union-attr]
    assert isinstance(wal, MemoryWal)
    return wal.appends


@pytest.mark.parametrize("variant", VARIANTS, ids=["process-crash", "power-loss", "torn-write"])
def test_crash_after_every_wal_record_never_double_signs(variant: tuple[bool, int]) -> None:
    records = _appends_without_crash()
    assert records > 20  # inputs and own votes of a few heights
    crashed = 0
    for crash_at in range(1, records + 1):
        sim = Simulator(_spec(crash_at, variant))
        result = sim.run()
        assert result.violations == [], (crash_at, variant, result.describe())
        crashed += result.stats.get("crashes", 0)
        assert all(h >= 2 for h in result.heights.values()), (crash_at, variant)
    assert crashed >= records * 0.9  # (a run may finish before a late crash point)


def test_own_votes_are_synced_before_they_are_returned_for_sending() -> None:
    ids = [identity(f"v{i}") for i in range(4)]
    genesis = genesis_for(ids)
    log: list[tuple[str, bytes, bool]] = []

    class Spy(MemoryWal):
        def append(self, payload: bytes, *, sync: bool) -> None:
            log.append(("append", payload, sync))
            super().append(payload, sync=sync)

    for index in range(4):
        replica = Replica(fresh_core(genesis, ids[index]), Spy())
        log.clear()
        actions = replica.handle(Start(), 0)
        actions += replica.handle(RecordsSubmitted(()), 1)
        logged = [decode_entry(p) for _, p, _ in log]
        assert isinstance(logged[0], InputEntry)  # the input is logged before anything else
        assert not [a for a in actions if isinstance(a, WalAppend)]  # the replica carried them out
        own = [a.message for a in actions if isinstance(a, Broadcast) and isinstance(a.message, Vote)]
        synced_votes = [
            e.vote for e, (_, _, sync) in zip(logged, log, strict=True) if isinstance(e, OwnVote) and sync
        ]
        assert own == synced_votes[: len(own)]


@pytest.mark.parametrize("variant", VARIANTS)
def test_recovery_replays_to_the_same_state(variant: tuple[bool, int]) -> None:
    """Crash half-way through a run, then check the restarted core resumes the same height."""
    sim = Simulator(_spec(25, variant))
    result = sim.run()
    assert result.violations == []
    assert result.stats.get("crashes") == 1


def test_recovery_cuts_a_well_framed_but_undecodable_entry_and_what_follows() -> None:
    ids = [identity(f"v{i}") for i in range(4)]
    genesis = genesis_for(ids)

    def make_core() -> Consensus:
        return fresh_core(genesis, ids[0])

    first = MemoryWal()
    Replica(make_core(), first).handle(Start(), 0)
    good = read_frames(first.surviving_bytes()).payloads
    first.append(b"\x81\xa1k\xa4junk", sync=True)  # checksummed, but not an entry
    first.append(b"after", sync=True)
    wal = MemoryWal(first.surviving_bytes())
    assert len(wal.entries) == len(good) + 2
    Replica.recover(make_core, wal, on_commit=lambda _c: None, now_ms=5)
    kept = read_frames(bytes(wal.data)).payloads
    assert kept[: len(good)] == good
    assert b"after" not in kept and all(decode_entry(p) for p in kept)

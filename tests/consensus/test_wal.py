"""WAL framing, entries and storage: a torn or corrupt tail is detected and cut, never trusted."""

from __future__ import annotations

import random
from pathlib import Path
from unittest import mock

import pytest

from mftp.consensus.errors import ConsensusInputError
from mftp.consensus.events import (
    BlockSynced,
    OwnProposal,
    OwnVote,
    ProposalReceived,
    RecordsSubmitted,
    Start,
    Step,
    Tick,
    TimeoutFired,
    VoteReceived,
)
from mftp.consensus.messages import sign_proposal
from mftp.consensus.wal import (
    HEADER_BYTES,
    FileWal,
    InputEntry,
    MemoryWal,
    NoWal,
    SimulatedCrash,
    decode_entry,
    encode_entry,
    encode_frame,
    read_frames,
)
from mftp.ledger.block import NIL, CommitCertificate, VoteType, sign_vote
from mftp.ledger.chain import ChainState, build_block

from .helpers import CHAIN_ID, fresh_core, genesis_for, identity, record

PAYLOADS = [b"", b"a", b"hello world" * 20, bytes(range(256)) * 3]


def test_frames_round_trip() -> None:
    data = b"".join(encode_frame(p) for p in PAYLOADS)
    scan = read_frames(data)
    assert scan.payloads == PAYLOADS and scan.valid_bytes == len(data) and scan.problem is None


def test_every_torn_tail_is_cut_at_the_last_whole_frame() -> None:
    frames = [encode_frame(p) for p in PAYLOADS]
    data = b"".join(frames)
    ends = [sum(len(f) for f in frames[: i + 1]) for i in range(len(frames))]
    for cut in range(len(data)):
        scan = read_frames(data[:cut])
        whole = [e for e in ends if e <= cut]
        assert scan.payloads == PAYLOADS[: len(whole)]
        assert scan.valid_bytes == (whole[-1] if whole else 0)
        assert (scan.problem is None) == (cut in ends or cut == 0)


def test_a_flipped_bit_anywhere_stops_reading_at_its_frame() -> None:
    frames = [encode_frame(p) for p in PAYLOADS]
    data = b"".join(frames)
    starts = [sum(len(f) for f in frames[:i]) for i in range(len(frames))]
    rng = random.Random(5)
    for _ in range(300):
        position = rng.randrange(len(data))
        corrupted = bytearray(data)
        corrupted[position] ^= 1 << rng.randrange(8)
        scan = read_frames(bytes(corrupted))
        frame = max(i for i, s in enumerate(starts) if s <= position)
        assert scan.payloads == PAYLOADS[:frame]  # nothing from the bad frame or after it
        assert scan.valid_bytes == starts[frame] and scan.problem is not None


def test_an_impossible_length_is_refused_without_reading_it() -> None:
    scan = read_frames(b"\xff\xff\xff\xff" + bytes(8) + b"x")
    assert scan.payloads == [] and scan.valid_bytes == 0 and "length" in (scan.problem or "")
    assert HEADER_BYTES == 12


def _sample_entries() -> list[object]:
    ids = [identity(f"v{i}") for i in range(4)]
    state = ChainState.initial(genesis_for(ids))
    rng = random.Random(1)
    block = build_block(
        state, (record(ids[0], rng),), time_ms=5, proposer=ids[0].public.sign_key, last_commit=None
    )
    proposal = sign_proposal(ids[0], CHAIN_ID, 1, 0, -1, block.hash)
    vote = sign_vote(ids[1], CHAIN_ID, VoteType.PRECOMMIT, 1, 0, block.hash)
    cert = CommitCertificate.from_votes([vote])
    return [
        InputEntry(Start(), 0),
        InputEntry(Tick(), 1),
        InputEntry(TimeoutFired(1, 2, Step.PREVOTE), 2),
        InputEntry(VoteReceived(sign_vote(ids[2], CHAIN_ID, VoteType.PREVOTE, 1, 0, NIL)), 3),
        InputEntry(ProposalReceived(proposal, block), 4),
        InputEntry(RecordsSubmitted((record(ids[3], rng),)), 5),
        InputEntry(BlockSynced(block, cert), 6),
        OwnVote(vote),
        OwnProposal(proposal, block),
    ]


def test_entries_round_trip() -> None:
    for entry in _sample_entries():
        again = decode_entry(encode_entry(entry))  # type: ignore[arg-type]
        assert encode_entry(again) == encode_entry(entry)  # type: ignore[arg-type]
        assert type(again) is type(entry)


@pytest.mark.parametrize(
    "payload", [b"", b"\xc1", b"\x93\x01\x02\x03", b"\x81\xa1k\xa4nope", b"\x82\xa1k\xa4vote\xa1t\x01"]
)
def test_bad_entries_are_input_errors(payload: bytes) -> None:
    with pytest.raises(ConsensusInputError):
        decode_entry(payload)


def test_memory_wal_models_process_crash_power_loss_and_torn_writes() -> None:
    wal = MemoryWal()
    wal.append(b"input-1", sync=False)
    wal.append(b"own-vote", sync=True)
    wal.append(b"input-2", sync=False)
    assert MemoryWal(wal.surviving_bytes()).entries == [b"input-1", b"own-vote", b"input-2"]
    assert MemoryWal(wal.surviving_bytes(power_loss=True)).entries == [b"input-1", b"own-vote"]
    torn = MemoryWal(wal.surviving_bytes(power_loss=True, torn_bytes=5))
    assert torn.entries == [b"input-1", b"own-vote"] and torn.problem is not None
    crashing = MemoryWal(crash_after=2)
    crashing.append(b"one", sync=False)
    with pytest.raises(SimulatedCrash):
        crashing.append(b"two", sync=True)
    assert MemoryWal(crashing.surviving_bytes()).entries == [b"one", b"two"]


def test_a_reset_is_durable_only_with_the_next_synced_append(tmp_path: Path) -> None:
    wal = MemoryWal()
    wal.append(b"old-vote", sync=True)
    wal.reset()
    wal.append(b"new-input", sync=False)
    assert MemoryWal(wal.surviving_bytes()).entries == [b"new-input"]  # a process crash: as written
    assert MemoryWal(wal.surviving_bytes(power_loss=True)).entries == [b"old-vote"]  # the reset was lost
    wal.append(b"new-vote", sync=True)
    assert MemoryWal(wal.surviving_bytes(power_loss=True)).entries == [b"new-input", b"new-vote"]
    synced = []
    with FileWal(tmp_path / "wal") as file_wal:
        file_wal.append(b"vote", sync=True)
        with mock.patch("os.fsync", synced.append):
            file_wal.reset()  # off the commit path: no fsync of its own
        assert synced == [] and (tmp_path / "wal").stat().st_size == 0


def test_file_wal_truncates_a_torn_tail_on_open_and_appends_after_it(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    with FileWal(path) as wal:
        assert wal.entries == []
        wal.append(b"first", sync=False)
        wal.append(b"second", sync=True)
    whole = path.read_bytes()
    path.write_bytes(whole + encode_frame(b"third")[:-2])  # a torn write
    with FileWal(path) as wal:
        assert wal.entries == [b"first", b"second"] and wal.problem is not None
        assert path.stat().st_size == len(whole)  # cut, durably
        wal.append(b"fourth", sync=True)
    with FileWal(path) as wal:
        assert wal.entries == [b"first", b"second", b"fourth"] and wal.problem is None
        wal.reset()
    with FileWal(path) as wal:
        assert wal.entries == []


def test_file_wal_corruption_in_the_middle_drops_everything_after_it(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    with FileWal(path) as wal:
        for p in (b"a" * 10, b"b" * 10, b"c" * 10):
            wal.append(p, sync=True)
    data = bytearray(path.read_bytes())
    data[len(encode_frame(b"a" * 10)) + HEADER_BYTES + 3] ^= 0x40  # inside the second payload
    path.write_bytes(bytes(data))
    with FileWal(path) as wal:
        assert wal.entries == [b"a" * 10]


def test_a_replica_on_a_file_wal_recovers_its_round_and_votes(tmp_path: Path) -> None:
    from mftp.consensus.core import Consensus
    from mftp.consensus.replica import Replica

    ids = [identity(f"v{i}") for i in range(4)]
    genesis = genesis_for(ids)
    me = next(i for i in range(4) if genesis.validators.proposer(1, 0).sign_key != ids[i].public.sign_key)

    def make_core() -> Consensus:
        return fresh_core(genesis, ids[me])

    path = tmp_path / "wal"
    with FileWal(path) as wal:
        replica = Replica(make_core(), wal)
        replica.handle(Start(), 0)
        replica.handle(TimeoutFired(1, 0, Step.PROPOSE), 500)  # prevote nil (line 59)
        for i in range(4):
            if i != me:
                vote = sign_vote(ids[i], CHAIN_ID, VoteType.PREVOTE, 1, 0, NIL)
                replica.handle(VoteReceived(vote), 501)  # 2f+1 nil: precommit nil (line 45)
        before = (replica.core.height, replica.core.round, replica.core.current_step)
        own_before = replica.core.votes.own_votes(ids[me].public.sign_key)
    with FileWal(path) as wal:
        again, _actions = Replica.recover(make_core, wal, on_commit=lambda _c: None, now_ms=600)
        assert (again.core.height, again.core.round, again.core.current_step) == before
        assert again.core.votes.own_votes(ids[me].public.sign_key) == own_before
        assert len(own_before) == 2


def test_an_observer_keeps_no_wal_and_encodes_nothing_for_it() -> None:
    """An audit node never signs: its replica logs nothing, and after a restart it starts afresh."""
    from mftp.consensus.replica import Replica

    ids = [identity(f"v{i}") for i in range(4)]
    genesis = genesis_for(ids, auditors=[identity("auditor")])
    wal = NoWal()
    with mock.patch("mftp.consensus.replica.encode_entry") as encode:
        replica = Replica(fresh_core(genesis, identity("auditor")), wal)
        replica.handle(Start(), 0)
        proposer = next(i for i in ids if i.public.sign_key == genesis.validators.proposer(1, 0).sign_key)
        vote = sign_vote(proposer, CHAIN_ID, VoteType.PRECOMMIT, 1, 0, NIL)
        replica.handle(VoteReceived(vote), 10)
        replica.committed(0)
    encode.assert_not_called()
    assert wal.entries == [] and wal.problem is None
    again, _actions = Replica.recover(
        lambda: fresh_core(genesis, identity("auditor")), wal, on_commit=lambda _c: None, now_ms=20
    )
    assert again.core.height == 1

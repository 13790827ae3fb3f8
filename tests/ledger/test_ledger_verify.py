"""Chain verification: a good chain passes; each kind of tampering names the first bad height."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from typing import Any

import pytest

from mftp.crypto import canonical
from mftp.crypto.signing import SigningIdentity
from mftp.ledger import sample
from mftp.ledger.block import CommitCertificate
from mftp.ledger.chain import ChainState
from mftp.ledger.errors import ChainVerificationError
from mftp.ledger.genesis import Genesis
from mftp.ledger.records import Record
from mftp.ledger.store_memory import MemoryStore
from mftp.ledger.verify import verify_chain
from tests.ledger.ledger_helpers import Backend, Chain, fill

Data = dict[bytes, bytes]


def _key(prefix: bytes, number: int) -> bytes:
    return prefix + number.to_bytes(8, "big")


def stored(chain: Chain) -> Data:
    store = MemoryStore()
    fill(store, chain)
    return store.data


def expect_failure(data: Data, genesis: Genesis, height: int, reason: str, workers: int = 0) -> None:
    with pytest.raises(ChainVerificationError) as info:
        verify_chain(MemoryStore(data), genesis, workers=workers)
    assert info.value.height == height, info.value
    assert reason in info.value.reason, info.value


def test_a_good_chain_verifies_with_progress(backend: Backend, genesis: Genesis, chain: Chain) -> None:
    with backend.open() as store:
        fill(store, chain)
        seen: list[tuple[int, int]] = []
        state = verify_chain(store, genesis, workers=0, progress=lambda h, n: seen.append((h, n)))
    assert seen == [(h, len(chain)) for h in range(1, len(chain) + 1)]
    assert state.height == len(chain) and state.ledger_root == chain[-1][0].header.ledger_root
    assert verify_chain(MemoryStore(), genesis, workers=0) == ChainState.initial(genesis)


def test_a_good_chain_verifies_on_worker_processes(genesis: Genesis, chain: Chain) -> None:
    assert verify_chain(MemoryStore(stored(chain)), genesis, workers=2).height == len(chain)


# --- tampering with a stored chain ------------------------------------------------------------


def _flip_record_byte(height: int) -> Callable[[Data], None]:
    def change(data: Data) -> None:
        header = canonical.decode(data[_key(b"B", height)])["header"]
        key = _key(b"E", header["ledger_size"] - 1)
        record = bytearray(data[key])
        record[len(record) // 2] ^= 0x01
        data[key] = bytes(record)

    return change


def _edit_header(height: int, **changes: object) -> Callable[[Data], None]:
    def change(data: Data) -> None:
        shell = canonical.decode(data[_key(b"B", height)])
        shell["header"].update(changes)
        data[_key(b"B", height)] = canonical.encode(shell)

    return change


def _relink(height: int, validators: list[SigningIdentity]) -> Callable[[Data], None]:
    """Point block ``height`` at another parent, certified, and have the validators certify it too."""

    def change(data: Data) -> None:
        parent = dataclasses.replace(MemoryStore(dict(data)).block(height - 1), records=())
        other_parent = dataclasses.replace(parent, header=dataclasses.replace(parent.header, time_ms=1))
        parent_cert = sample.certify(other_parent, validators, "mftp-test")
        shell = canonical.decode(data[_key(b"B", height)])
        shell["header"].update(prev=other_parent.hash, last_commit=parent_cert.hash)
        shell["last_commit"] = parent_cert.to_value()
        data[_key(b"B", height)] = canonical.encode(shell)
        block = MemoryStore(dict(data)).block(height)
        data[_key(b"C", height)] = canonical.encode(sample.certify(block, validators, "mftp-test").to_value())

    return change


def _edit_cert(height: int, edit: Callable[[dict[str, Any]], None]) -> Callable[[Data], None]:
    def change(data: Data) -> None:
        value = canonical.decode(data[_key(b"C", height)])
        edit(value)
        data[_key(b"C", height)] = canonical.encode(value)

    return change


def _bad_first_signature(value: dict[str, Any]) -> None:
    sigs = list(value["sigs"])
    sigs[0] = sigs[0][:40] + bytes([sigs[0][40] ^ 1]) + sigs[0][41:]
    value["sigs"] = sigs


def _two_signers(value: dict[str, Any]) -> None:
    value["sigs"] = list(value["sigs"])[:2]


def _delete(prefix: bytes, number: int) -> Callable[[Data], None]:
    return lambda data: data.__delitem__(_key(prefix, number))


TAMPERING = {
    "record byte": (_flip_record_byte(5), 5, "block 5"),
    "header field": (_edit_header(4, time_ms=1_700_000_003_500), 4, "commits another block"),
    "records root": (_edit_header(7, records_root=bytes(32)), 7, "records root mismatch"),
    "head certificate signature": (_edit_cert(12, _bad_first_signature), 12, "bad precommit signature"),
    "head certificate power": (_edit_cert(12, _two_signers), 12, "no more than 2/3"),
    "stored certificate below the head": (_edit_cert(4, _two_signers), 4, "stored certificate"),
    "missing block": (_delete(b"B", 5), 5, "missing"),
    "missing record": (_delete(b"E", 30), 7, "missing"),
}


@pytest.mark.parametrize("kind", list(TAMPERING))
def test_tampering_names_the_first_bad_height(genesis: Genesis, chain: Chain, kind: str) -> None:
    change, height, reason = TAMPERING[kind]
    data = stored(chain)
    change(data)
    expect_failure(data, genesis, height, reason)


def test_a_relinked_block_is_refused(
    genesis: Genesis, chain: Chain, validators: list[SigningIdentity]
) -> None:
    data = stored(chain)
    _relink(6, validators)(data)
    expect_failure(data, genesis, 6, "does not link to the previous block")


# --- chains built bad from the start (every hash consistent) ------------------------------------

Hook = Callable[[sample.ChainBuilder, list[Record]], list[Record]]


def custom_chain(genesis: Genesis, validators: list[SigningIdentity], hooks: dict[int, Hook]) -> Chain:
    """A 10-block chain of 6 records a block; ``hooks[h]`` may rewrite block h's records or the builder.

    The builder checks each block but record signatures; here certificates are not checked
    either, so a bad one can be carried by a block whose hashes are all consistent.
    """
    rng = random.Random(4)
    builder = sample.ChainBuilder(genesis, validators)
    chain: Chain = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CommitCertificate, "verify", lambda *_: None)
        for height in range(1, 11):
            records = [sample.sample_record(validators[i % 4], rng) for i in range(6)]
            if height in hooks:
                records = hooks[height](builder, records)
            chain.append(builder.next_block(records))
    return chain


def _forge_signature(_: sample.ChainBuilder, records: list[Record]) -> list[Record]:
    forged = dataclasses.replace(records[2], signature=records[3].signature, encoded=b"")
    return [*records[:2], Record.decode(forged.to_bytes()), *records[3:]]


def _weak_last_commit(signers: int) -> Hook:
    def hook(builder: sample.ChainBuilder, records: list[Record]) -> list[Record]:
        last = builder.last_cert
        assert last is not None
        builder.last_cert = CommitCertificate(
            last.height, last.round, last.block_hash, last.signatures[:signers]
        )
        return records

    return hook


def _bad_last_commit(builder: sample.ChainBuilder, records: list[Record]) -> list[Record]:
    last = builder.last_cert
    assert last is not None
    (key, sig), *rest = last.signatures
    builder.last_cert = dataclasses.replace(last, signatures=((key, sig[:-1] + bytes([sig[-1] ^ 1])), *rest))
    return records


@pytest.mark.parametrize("workers", [0, 2])
def test_a_forged_record_signature(genesis: Genesis, validators: list[SigningIdentity], workers: int) -> None:
    chain = custom_chain(genesis, validators, {3: _forge_signature})
    expect_failure(stored(chain), genesis, 3, "invalid record signature", workers)


def test_certificates_carried_in_blocks(genesis: Genesis, validators: list[SigningIdentity]) -> None:
    weak = custom_chain(genesis, validators, {6: _weak_last_commit(2)})
    expect_failure(stored(weak), genesis, 6, "no more than 2/3")
    bad = custom_chain(genesis, validators, {8: _bad_last_commit})
    expect_failure(stored(bad), genesis, 8, "bad precommit signature")
    enough = custom_chain(genesis, validators, {6: _weak_last_commit(3)})  # 3 of 4 is a quorum
    assert verify_chain(MemoryStore(stored(enough)), genesis, workers=0).height == 10


def test_a_replayed_record(genesis: Genesis, validators: list[SigningIdentity]) -> None:
    # custom_chain is deterministic: block 1 of this chain holds the same records as of that one.
    first = custom_chain(genesis, validators, {})[0][0].records[0]
    replayed = custom_chain(genesis, validators, {7: lambda _, records: [*records[:5], first]})
    expect_failure(stored(replayed), genesis, 7, "duplicate record id")


def test_the_lowest_bad_height_wins_across_processes(
    genesis: Genesis, validators: list[SigningIdentity]
) -> None:
    # A bad signature low, a structural fault high: the signature's height.
    chain = custom_chain(genesis, validators, {3: _forge_signature})
    data = stored(chain)
    _edit_header(9, records_root=bytes(32))(data)
    expect_failure(data, genesis, 3, "invalid record signature", workers=2)
    # A structural fault low, a bad signature high: the fault's height.
    chain = custom_chain(genesis, validators, {9: _forge_signature})
    data = stored(chain)
    _edit_header(2, records_root=bytes(32))(data)
    expect_failure(data, genesis, 2, "records root mismatch", workers=2)
    # Two bad signatures: the lower one.
    chain = custom_chain(genesis, validators, {4: _forge_signature, 8: _forge_signature})
    expect_failure(stored(chain), genesis, 4, "invalid record signature", workers=2)

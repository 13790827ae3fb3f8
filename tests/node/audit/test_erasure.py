"""Erasure erases, probed as a privacy officer would (issue 15, point 3).

Before an erasure, user and patient ids live only in the encrypted vault (``data_dir/audit``);
after one, nothing on the node names the party: not the transfer state files, not the vault's
erased list, not its details log (even decrypted with the node's own key), not the blob store's
records, not the log, not the API.  Every file under ``data_dir`` is searched for the name in
plain text (any case), UTF-16, hex and base64.

In process: hospital-a's node from a devnet configuration, sending through its real transfer
service (the recipient's tags, the offer message and the mempool replaced).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import nacl.secret
import pytest

from mftp.crypto import canonical
from mftp.crypto.keyfile import load_identity
from mftp.crypto.signing import SigningIdentity
from mftp.ledger.genesis import Genesis
from mftp.ledger.pseudonyms import KeyErasedError, commit_details
from mftp.ledger.records import RecordType
from mftp.node.audit.vault import AuditVault, vault_key
from mftp.node.clock import SYSTEM_CLOCK
from mftp.node.config import load_config
from mftp.node.devnet.client import make_study
from mftp.node.devnet.consortium import create_devnet
from mftp.node.errors import NodeUsageError, StorageDamaged
from mftp.node.logs import JsonFormatter
from mftp.node.process import Node
from mftp.node.transfers.service import TransferService
from mftp.node.transfers.state import IN, OUT, TransferState, TransferStates
from tests.privacy import vault_plain, where_named

pytestmark = pytest.mark.timeout(180)


def test_the_search_finds_a_name_in_every_spelling(tmp_path: Path) -> None:
    for index, spelled in enumerate(
        [
            b"user:ALICE",
            "alice".encode("utf-16-le"),
            b"616c696365",
            *(base64.b64encode(b"x" * pad + b"user:alice") for pad in range(3)),
            *(base64.urlsafe_b64encode(b"\xff" * pad + b"alice\xfb") for pad in range(3)),
        ]
    ):
        (tmp_path / f"f{index}").write_bytes(b"\x00junk" + spelled + b"junk")
        assert where_named(tmp_path, "alice"), spelled
        (tmp_path / f"f{index}").unlink()
    (tmp_path / "clean").write_bytes(b"user:alic user:bob")
    assert where_named(tmp_path, "alice") == []


# --- the vault alone -----------------------------------------------------------------------------


def test_erasure_leaves_only_a_keyed_hash_and_rewrites_the_details(tmp_path: Path) -> None:
    identity = SigningIdentity.generate()
    vault = AuditVault(tmp_path, identity, "institution:a")
    vault.party("user:alice", "user")
    vault.party("user:bob", "user")
    vault.party("patient:PAT-QZX7", "patient")
    records = [bytes([i]) * 16 for i in range(4)]
    vault.add_details(records[0], commit_details({"user": "user:alice", "patient": "patient:PAT-QZX7"})[1])
    vault.add_details(records[1], commit_details({"user": "user:bob", "patient": "patient:PAT-QZX7"})[1])
    vault.add_details(records[2], commit_details({"subject": "user:alice"})[1])  # a grant
    vault.add_details(records[3], commit_details({"many": ["user:bob", "user:alice"], "n": 3})[1])
    assert b"alice" in vault_plain(tmp_path, identity)

    reference = vault.erase("user:alice")
    assert reference.startswith("vault:") and "alice" not in reference
    assert b"alice" not in vault_plain(tmp_path, identity)  # not even for the node's own key
    assert where_named(tmp_path, "alice") == []
    with pytest.raises(KeyErasedError):
        vault.party("user:alice", "user")  # never silently re-created...
    with pytest.raises(KeyErasedError):
        vault.reference("user:alice")  # ...nor referred to again
    with pytest.raises(KeyErasedError):
        vault.erase("user:alice")
    assert vault.resolve(reference) is None and vault.is_erased_reference(reference)

    again = AuditVault(tmp_path, identity, "institution:a")
    for reopened in (vault, again):
        # The other details of alice's records stay, in their places; bob's are whole.
        assert reopened.disclose(records[0]).fields["patient"][1] == "patient:PAT-QZX7"  # type: ignore[union-attr]
        assert "user" not in reopened.disclose(records[0]).fields  # type: ignore[union-attr]
        assert reopened.disclose(records[1]).fields["user"][1] == "user:bob"  # type: ignore[union-attr]
        assert reopened.disclose(records[2]).fields == {}  # type: ignore[union-attr]
        assert list(reopened.disclose(records[3]).fields) == ["n"]  # type: ignore[union-attr]
        assert reopened.details.positioned_ids(0, 10) == ([(i, r) for i, r in enumerate(records)], -1)
        assert reopened.resolve(reopened.reference("user:bob")) == "user:bob"
    with pytest.raises(KeyErasedError):
        again.party("user:alice", "user")


def test_references_name_nobody_and_resolve_only_in_the_vault(tmp_path: Path) -> None:
    identity = SigningIdentity.generate()
    vault = AuditVault(tmp_path, identity, "institution:a")
    foreign = vault.reference("user:dr.zed")  # another institution's user: a name, no keys
    assert not vault.has_party("user:dr.zed") and vault.knows("user:dr.zed")
    assert vault.resolve(foreign) == "user:dr.zed" and vault.resolve("vault:" + "0" * 32) is None
    other_node = AuditVault(tmp_path / "other", SigningIdentity.generate(), "institution:a")
    assert other_node.reference("user:dr.zed") != foreign  # keyed: nobody else can compute it
    vault.party("user:dr.zed", "user")  # keys made later: the name moves in with them
    assert vault.names == frozenset() and vault.resolve(foreign) == "user:dr.zed"
    assert AuditVault(tmp_path, identity, "institution:a").resolve(foreign) == "user:dr.zed"
    for bad in ("alice", "user:", "patient:" + "x" * 300, "robot:x"):
        with pytest.raises(NodeUsageError):
            vault.reference(bad)


def test_a_vault_of_the_first_format_forgets_the_names_it_erased(tmp_path: Path) -> None:
    """Version 1 kept erased ids in plain text and details naming them: both go on opening."""
    identity = SigningIdentity.generate()
    vault = AuditVault(tmp_path, identity, "institution:a")
    vault.party("user:carol", "user")
    vault.add_details(b"c" * 16, commit_details({"user": "user:carol", "purpose": "TREAT"})[1])
    box = nacl.secret.SecretBox(vault_key(identity))
    institution = vault.keyring.parties["institution:a"]
    legacy = {
        "v": 1,
        "parties": [[institution.party_id, institution.kind, [list(m) for m in institution.masters],
                     institution.escrow_seed]],
        "erased": ["user:carol"],
    }  # fmt: skip
    (tmp_path / "parties.bin").write_bytes(box.encrypt(canonical.encode(legacy)))
    assert b"carol" in vault_plain(tmp_path, identity)

    migrated = AuditVault(tmp_path, identity, "institution:a")
    assert b"carol" not in vault_plain(tmp_path, identity)
    assert migrated.disclose(b"c" * 16).fields["purpose"][1] == "TREAT"  # type: ignore[union-attr]
    with pytest.raises(KeyErasedError):
        migrated.party("user:carol", "user")


def test_an_erasure_cut_short_by_a_crash_can_be_asked_for_again(tmp_path: Path, monkeypatch: Any) -> None:
    identity = SigningIdentity.generate()
    vault = AuditVault(tmp_path, identity, "institution:a")
    vault.party("user:alice", "user")
    vault.add_details(b"a" * 16, commit_details({"user": "user:alice"})[1])
    monkeypatch.setattr(vault, "_save", mock.Mock(side_effect=OSError("disk full")))
    with pytest.raises(OSError):
        vault.erase("user:alice")  # the details were rewritten, the keyring not saved
    again = AuditVault(tmp_path, identity, "institution:a")
    assert again.has_party("user:alice")  # not erased: the operator asks again
    again.erase("user:alice")
    assert b"alice" not in vault_plain(tmp_path, identity)


# --- a node sending for alice and bob, then erasing alice --------------------------------------


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    member = create_devnet(tmp_path / "devnet", validators=2, audit=0)[0]
    identity = load_identity(member.directory / "keys" / "node.key")
    node = Node(load_config(member.config_path), identity, Genesis.load(member.directory / "genesis.json"))
    # The log goes into data_dir too, so the search covers it.
    handler = logging.FileHandler(node.data_dir / "node.log")
    handler.setFormatter(JsonFormatter("hospital-a"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield node
    root.removeHandler(handler)
    root.setLevel(level)
    handler.close()
    node.transfers.pool.shutdown()
    node.chain.wal.close()
    node.ledger.close()


async def _send(service: TransferService, study: Path, user: str, to_user: str = "") -> str:
    peer = service.host.config.peers[0]
    transfer_id = await service.send(str(study), peer.name, "TREAT", "pseudonymised", user, to_user)
    task = service._tasks.get(transfer_id)
    if task is not None:
        await task
    state = service.states.get(transfer_id)
    assert state is not None and state.state == "offered", state
    return transfer_id


def _received(node: Node, to_user: str) -> TransferState:
    """A study offered to us for our user ``to_user`` (as the receiver keeps it)."""
    node.audit.vault.party(to_user, "user")
    state = TransferState(
        transfer_id="ee" * 16, direction=IN, peer="hospital-b", peer_key="00" * 32, purpose="TREAT",
        mode="pseudonymised", state="fetching", created_ms=SYSTEM_CLOCK.now_ms(), to_user=to_user,
    )  # fmt: skip
    node.transfers.states.save(state)
    return state


async def test_after_an_erasure_nothing_on_the_node_names_the_party(node: Node, tmp_path: Path) -> None:
    service, data_dir, audit_dir = node.transfers, node.data_dir, node.data_dir / "audit"
    make_study(tmp_path / "s-alice", patient_id="PAT-QZX7")
    make_study(tmp_path / "s-bob", patient_id="PAT-WYV9")
    with (
        mock.patch.object(
            node.audit, "counterparty_fills", mock.AsyncMock(return_value=(SYSTEM_CLOCK.now_ms(), {}))
        ),
        mock.patch.object(service, "_offer"),  # no network: the offer message is not sent
        mock.patch.object(service, "submit", mock.AsyncMock()),
        mock.patch.object(node.audit, "submit", mock.AsyncMock()),
    ):
        alice_sent = await _send(service, tmp_path / "s-alice", "alice", to_user="dr.zed")
        bob_sent = await _send(service, tmp_path / "s-bob", "bob")
        alice_got = _received(node, "user:alice").transfer_id

        # Before: the names live only in the vault, and the API names them from there.
        for word in ("alice", "dr.zed", "PAT-QZX7", "PAT-WYV9"):  # ("bob" is too short to grep)
            assert where_named(data_dir, word, skip=audit_dir) == [], word
        shown = {t["transfer_id"]: t for t in service.list()}
        assert shown[alice_sent]["user"] == "user:alice" and shown[alice_sent]["to_user"] == "user:dr.zed"
        assert shown[bob_sent]["user"] == "user:bob" and shown[alice_got]["to_user"] == "user:alice"
        assert "capability" not in shown[alice_sent]

        await node.audit.rotate("user:alice", "erasure")
        await node.audit.rotate("patient:PAT-QZX7", "erasure")
        await node.audit.rotate("user:dr.zed", "erasure")  # named only, another institution's user

        # After: not in any file, in any spelling, not even inside the decrypted vault.
        for word in ("alice", "dr.zed", "PAT-QZX7"):
            assert where_named(data_dir, word) == [], word
            assert word.encode() not in vault_plain(audit_dir, node.identity), word
        shown = {t["transfer_id"]: t for t in service.list()}
        assert shown[alice_sent]["user"] == shown[alice_sent]["to_user"] == shown[alice_got]["to_user"] == ""
        assert "alice" not in json.dumps(service.list()) and "alice" not in json.dumps(
            service.get(alice_sent)
        )
        # bob is untouched: his transfer and his record's details still name him.
        assert shown[bob_sent]["user"] == "user:bob"
        bob_state = service.states.get(bob_sent)
        assert bob_state is not None
        bob_details = node.audit.vault.disclose(bytes.fromhex(bob_state.offer_record))
        assert bob_details is not None and bob_details.fields["user"][1] == "user:bob"
        assert bob_details.fields["patient"][1] == "patient:PAT-WYV9"

        # An erased user cannot send again, and leaves no file behind trying.
        with pytest.raises(NodeUsageError, match="erased"):
            await service.send(str(tmp_path / "s-alice"), "hospital-b", "TREAT", "pseudonymised", "alice")
        with pytest.raises(KeyErasedError):
            node.audit.vault.party("user:alice", "user")  # POST /audit/users: not re-created
        with pytest.raises(NodeUsageError):
            await node.audit.rotate("user:alice", "erasure")
        assert where_named(data_dir, "alice") == []

    # A restart reads the same: bob resolves, alice is nobody.
    states = TransferStates(
        data_dir / "transfers", names=AuditVault(audit_dir, node.identity, "institution:x")
    )
    assert {t["transfer_id"]: t["user"] for t in map(states.view, states.all())} == {
        alice_sent: "",
        bob_sent: "user:bob",
        alice_got: "",
    }


async def test_a_grant_whose_subject_was_erased_is_refused_not_crashed(node: Node) -> None:
    vault = node.audit.vault
    vault.party("user:alice", "user")
    vault.add_details(b"g" * 16, commit_details({"subject": "user:alice"})[1])
    vault.erase("user:alice")
    found = mock.Mock(record=mock.Mock(type=RecordType.AUDIT_GRANT, author=node.identity.public.sign_key))
    found.record.body = {"auditor": b"x" * 32, "expires_ms": SYSTEM_CLOCK.now_ms() + 10**9}
    with mock.patch.object(node.ledger.store, "record", return_value=found):
        granted, error = node.audit._granted(b"x" * 32, b"g" * 16)
    assert granted is None and "erased" in error


def _legacy_state(directory: Path, transfer_id: str, user: str, to_user: str = "") -> Path:
    """A state file as the code before vault references wrote it."""
    value = {
        "transfer_id": transfer_id, "direction": OUT, "peer": "hospital-b", "peer_key": "00" * 32,
        "purpose": "TREAT", "mode": "pseudonymised", "state": "delivered", "created_ms": 1, "detail": "",
        "files": 1, "files_done": 1, "study_bytes": 1, "fetch_bytes": 1, "fetched_bytes": 0,
        "capability": "", "data_url": "", "offer_record": "", "received_record": "", "access_records": [],
        "user": user, "to_user": to_user,
    }  # fmt: skip
    path = directory / f"{transfer_id}.json"
    path.write_text(json.dumps(value))
    return path


def test_state_files_of_the_older_format_move_their_users_into_the_vault(tmp_path: Path) -> None:
    identity = SigningIdentity.generate()
    vault = AuditVault(tmp_path / "audit", identity, "institution:a")
    vault.party("user:carol", "user")
    vault.erase("user:carol")  # erased by older code, which left carol in the state file
    directory = tmp_path / "transfers"
    directory.mkdir()
    alice = _legacy_state(directory, "aa" * 16, "user:alice", "user:dr.zed")
    _legacy_state(directory, "cc" * 16, "user:carol")
    assert b"alice" in alice.read_bytes()

    states = TransferStates(directory, names=vault)
    assert where_named(directory, "alice") == [] and where_named(directory, "zed") == []
    assert where_named(directory, "carol") == []
    assert json.loads(alice.read_text())["user"].startswith("vault:")
    views = {t["transfer_id"]: t for t in map(states.view, states.all())}
    assert views["aa" * 16]["user"] == "user:alice" and views["aa" * 16]["to_user"] == "user:dr.zed"
    assert views["cc" * 16]["user"] == ""
    assert TransferStates(directory, names=vault).view(states.get("aa" * 16))["user"] == "user:alice"  # type: ignore[arg-type]

    _legacy_state(directory, "dd" * 16, "not a user id")
    with pytest.raises(StorageDamaged):
        TransferStates(directory, names=vault)


def test_without_the_vault_a_user_is_refused_not_written(tmp_path: Path) -> None:
    states = TransferStates(tmp_path)
    state = TransferState(
        "ab" * 16, OUT, "b", "cd" * 32, "TREAT", "pseudonymised", "preparing", 5, user="user:x"
    )
    with pytest.raises(NodeUsageError):
        states.save(state)
    assert not list(tmp_path.iterdir())


async def test_an_erasure_while_a_study_is_prepared_stops_its_offer(node: Node, tmp_path: Path) -> None:
    """The sender is erased between the send and its offer record: the record is never made."""
    service = node.transfers
    make_study(tmp_path / "s", patient_id="PAT-QZX7")
    node.audit.vault.party("user:alice", "user")
    gate = asyncio.Event()

    async def slow_fills(*args: Any, **kwargs: Any) -> Any:
        await gate.wait()
        return SYSTEM_CLOCK.now_ms(), {}

    with (
        mock.patch.object(node.audit, "counterparty_fills", slow_fills),
        mock.patch.object(service, "_offer"),
        mock.patch.object(service, "submit", mock.AsyncMock()),
        mock.patch.object(node.audit, "submit", mock.AsyncMock()),
    ):
        transfer_id = await service.send(str(tmp_path / "s"), "hospital-b", "TREAT", "pseudonymised", "alice")
        for _ in range(200):  # until it waits for the recipient's tags
            await asyncio.sleep(0.05)
            if service.states.get(transfer_id).detail:  # type: ignore[union-attr]
                break
        await node.audit.rotate("user:alice", "erasure")
        gate.set()
        await service._tasks[transfer_id]
    state = service.states.get(transfer_id)
    assert state is not None and state.state == "failed" and state.user == ""
    assert where_named(node.data_dir, "alice") == []

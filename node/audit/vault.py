"""The institution's audit vault on disk: its parties' keys and the details its records commit to.

Two files under ``<data_dir>/audit/`` (folder mode 0700, files 0600), both encrypted with a
key derived from the node's identity (XSalsa20-Poly1305, libsodium ``secretbox``), because
they name users and patients:

* ``parties.bin``: the :class:`~mftp.ledger.pseudonyms.PartyKeyring` (each party's master
  keys and escrow seed), the names of parties the node refers to without holding keys for
  them (a sending user before its first record, a recipient user of another institution), and
  the *keyed hashes* of the parties erased, rewritten atomically (temporary file, fsync,
  rename) on every change.  Losing it makes the institution's tags unlinkable for ever: it
  belongs in the node's backup with the key files.
* ``details.log``: one encrypted frame per record (``4-byte length || secretbox``) holding
  the openings of the record's committed details (:func:`~mftp.ledger.pseudonyms.commit_details`).
  A frame is appended and synced *before* its record is submitted, so every record of ours on
  the chain can be disclosed.  A torn tail left by a crash is cut when the log is opened.

Party ids (``user:...``, ``patient:...``, ``institution:...``) exist only here, in memory and
in sealed escrow boxes; they are never logged.  Other files of the node name a party by its
*reference* (:meth:`AuditVault.reference`: ``vault:`` and a keyed hash of the id under a key
derived from the node's identity), which only this vault resolves, and only while it holds
the party.

*Erasure* (:meth:`AuditVault.erase`) leaves nothing that names the party: its keys and name
go, the erased list keeps only the keyed hash (so the party is never silently re-created,
without the node having to name it), and the details log is rewritten without any detail
whose value is the party's id (the other details of those records stay disclosable).  Why a
rewrite rather than a key per party (crypto-shredding): a record's details name several
parties at once (sender, patient, recipient user), each erased on its own, and both ways
end in rewriting one file (the keyring, to drop the key); erasures are rare, and a rewrite
keeps one key and one frame format.  Every frame keeps its place, so disclosure pages never
shift.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import nacl.exceptions
import nacl.secret
import nacl.utils

from mftp.crypto import canonical
from mftp.crypto.errors import DecodeError
from mftp.crypto.primitives import hkdf
from mftp.crypto.signing import SigningIdentity
from mftp.ledger.pseudonyms import (
    AuditStore,
    Disclosure,
    KeyErasedError,
    PartyKeyring,
    PartyKeys,
    PseudonymUsageError,
    check_party_id,
    epoch_of,
)

from ..errors import NodeUsageError, StorageDamaged
from .security_log import SecurityLog

VAULT_KEY_INFO: Final = b"mftp-audit-vault-v1"
NAMES_KEY_INFO: Final = b"mftp-audit-names-v1"
REFERENCE_PREFIX: Final = "vault:"
REFERENCE_HEX_CHARS: Final = 32
FRAME_HEADER: Final = struct.Struct(">I")
MAX_FRAME_BYTES: Final = 64 * 1024  # a record commits to at most a few dozen small fields
MAX_PARTIES: Final = 1_000_000
KEYRING_VERSION: Final = 2  # 1: erased ids in plain text (migrated on open)


class VaultCorrupt(StorageDamaged):
    """The vault does not open with this node's key, or its keyring file is damaged.

    Our own disk: the operator restores it from backup.
    """


def vault_key(identity: SigningIdentity) -> bytes:
    """The vault's 32-byte secretbox key, derived from the node's identity seed."""
    return hkdf(identity.seed, salt=b"", info=VAULT_KEY_INFO, length=nacl.secret.SecretBox.KEY_SIZE)


def names_key(identity: SigningIdentity) -> bytes:
    """The 32-byte key of the vault's party references and erased list."""
    return hkdf(identity.seed, salt=b"", info=NAMES_KEY_INFO, length=32)


def _write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically, mode 0600."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _keyring_value(keyring: PartyKeyring, names: frozenset[str]) -> dict[str, Any]:
    return {
        "v": KEYRING_VERSION,
        "parties": [
            [p.party_id, p.kind, [[epoch, master] for epoch, master in p.masters], p.escrow_seed]
            for p in keyring.parties.values()
        ],
        "erased": sorted(keyring.erased),  # keyed hashes, never ids
        "names": sorted(names),
    }


def _keyring_from(value: Any) -> tuple[PartyKeyring, frozenset[str]]:
    """The keyring and the names held without keys; a version 1 file's erased list is left in plain text."""
    if not isinstance(value, dict) or value.get("v") not in (1, KEYRING_VERSION):
        raise VaultCorrupt("the vault's keyring has an unknown format")
    try:
        parties = {}
        for party_id, kind, masters, seed in value["parties"]:
            parties[party_id] = PartyKeys(party_id, kind, tuple((e, m) for e, m in masters), seed)
        names = frozenset(value["names"]) if value["v"] == KEYRING_VERSION else frozenset()
        if not all(isinstance(n, str) for n in names | set(value["erased"])):
            raise TypeError("names are strings")
        return PartyKeyring(parties, frozenset(value["erased"])), names
    except (KeyError, TypeError, ValueError, PseudonymUsageError) as exc:
        raise VaultCorrupt(f"the vault's keyring is damaged: {exc}") from None


def _mentions(value: Any, parties: frozenset[str]) -> bool:
    """Whether a detail's value is (or holds, in a list or map) one of ``parties``' ids."""
    if isinstance(value, str):
        return value in parties
    if isinstance(value, (list, tuple)):
        return any(_mentions(item, parties) for item in value)
    if isinstance(value, dict):
        return any(_mentions(item, parties) for item in (*value.keys(), *value.values()))
    return False


class AuditVault:
    """Party keys, names and committed details of one institution (see the module doc)."""

    def __init__(self, folder: Path, identity: SigningIdentity, institution_id: str) -> None:
        self.folder = folder
        self._box = nacl.secret.SecretBox(vault_key(identity))
        self._names_key = names_key(identity)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        self._keyring_path = folder / "parties.bin"
        self._log_path = folder / "details.log"
        self.names: frozenset[str] = frozenset()
        """Parties referred to (:meth:`reference`) without keys held for them."""
        self._by_reference: dict[str, str] | None = None  # built on first resolve
        self.keyring, legacy_erased = self._load_keyring()
        self.details = AuditStore()
        self.torn_bytes = self._load_details()
        self.security = SecurityLog(folder / "security.log", self._box)
        """Sign-ins, lockouts, tokens and roles of this institution's people (issue 16)."""
        if legacy_erased:  # a version 1 vault: forget the names of the parties it erased
            self._redact(legacy_erased)
            self._save(self.keyring)
        check_party_id(institution_id, "institution")
        self.institution_id = institution_id
        self.party(institution_id, "institution")

    # ------------------------------------------------------------------ parties

    def party(self, party_id: str, kind: str, *, create: bool = True, time_ms: int = 0) -> PartyKeys:
        """The keys of ``party_id``, made (and saved) on first use unless ``create`` is false.

        A new party's keys start at the epoch of ``time_ms`` (0: from the beginning), so a
        grant for earlier months finds nothing rather than tags that were never made.
        Raises :class:`~mftp.ledger.pseudonyms.KeyErasedError` for an erased party.
        """
        try:
            check_party_id(party_id, kind)
        except PseudonymUsageError as exc:
            raise NodeUsageError(str(exc)) from None
        if self.is_erased(party_id):
            raise KeyErasedError("this party's keys were erased")
        if party_id in self.keyring.parties or not create:
            return self.keyring.party(party_id)
        if len(self.keyring.parties) >= MAX_PARTIES:
            raise NodeUsageError(f"the vault holds {MAX_PARTIES} parties already")
        keyring = self.keyring.add(party_id, kind, from_epoch=epoch_of(time_ms) if time_ms else 0)
        self._save(keyring, self.names - {party_id})  # its name now lives with its keys
        self._remember(party_id)
        return self.keyring.party(party_id)

    def has_party(self, party_id: str) -> bool:
        """Whether the vault holds live keys for ``party_id``."""
        return party_id in self.keyring.parties

    def knows(self, party_id: str) -> bool:
        """Whether the vault holds ``party_id``'s keys or its name."""
        return party_id in self.keyring.parties or party_id in self.names

    def keyed_hash(self, party_id: str) -> str:
        """HMAC-SHA256 of ``party_id`` under the vault's names key, as 32 hex digits.

        Only this node can compute it, and only by trying a guessed id: it names nobody.
        """
        digest = hmac.new(self._names_key, party_id.encode("utf-8", "surrogatepass"), hashlib.sha256)
        return digest.hexdigest()[:REFERENCE_HEX_CHARS]

    def is_erased(self, party_id: str) -> bool:
        """Whether ``party_id`` was erased (its keyed hash is in the erased list)."""
        return self.keyed_hash(party_id) in self.keyring.erased

    def reference(self, party_id: str) -> str:
        """The opaque reference by which files outside the vault name ``party_id``.

        The vault keeps the name (a new one is saved); :meth:`resolve` turns the reference back
        into the id while the party is held, and into nothing once it is erased.  Raises
        :class:`~mftp.ledger.pseudonyms.KeyErasedError` for an erased party: it is never
        referred to again.
        """
        kind, _, name = party_id.partition(":")
        try:
            check_party_id(party_id, kind)
        except PseudonymUsageError as exc:
            raise NodeUsageError(str(exc)) from None
        if not name.strip():
            raise NodeUsageError(f"a {kind} id names someone after {kind + ':'!r}")
        if self.is_erased(party_id):
            raise KeyErasedError("this party's keys were erased")
        if not self.knows(party_id):
            if len(self.names) >= MAX_PARTIES:
                raise NodeUsageError(f"the vault holds {MAX_PARTIES} names already")
            self._save(self.keyring, self.names | {party_id})
            self._remember(party_id)
        return REFERENCE_PREFIX + self.keyed_hash(party_id)

    def resolve(self, reference: str) -> str | None:
        """The party id a :meth:`reference` stands for, or None (erased, or not ours)."""
        if self._by_reference is None:
            self._by_reference = {self.keyed_hash(p): p for p in (*self.keyring.parties, *self.names)}
        return self._by_reference.get(reference.removeprefix(REFERENCE_PREFIX))

    def is_erased_reference(self, reference: str) -> bool:
        """Whether ``reference`` stood for a party since erased."""
        return reference.removeprefix(REFERENCE_PREFIX) in self.keyring.erased

    def _remember(self, party_id: str) -> None:
        if self._by_reference is not None:
            self._by_reference[self.keyed_hash(party_id)] = party_id

    def rotate(self, party_id: str, effective_epoch: int, reason: str) -> tuple[dict[str, Any], Any]:
        """Start a new master key at ``effective_epoch``; the ``KEY_ROTATION`` body and its opening."""
        keyring, body, opening = self.keyring.rotate(party_id, effective_epoch, reason=reason)
        self._save(keyring)
        return body, opening

    def erase(self, party_id: str) -> str:
        """Forget ``party_id``: its keys (crypto-shredding), its name and every detail naming it.

        Returns the party's former :meth:`reference`, for whoever must forget it too.
        Raises :class:`~mftp.ledger.pseudonyms.KeyErasedError` if it was erased already and
        :class:`~mftp.ledger.pseudonyms.PseudonymUsageError` if the vault does not know it.
        """
        hashed = self.keyed_hash(party_id)
        if hashed in self.keyring.erased:
            raise KeyErasedError("this party's keys were erased")
        if not self.knows(party_id):
            raise PseudonymUsageError("unknown party (not in this keyring)")
        # Details first: a crash before the keyring is saved leaves the party held, and the
        # erasure can be asked for again; the other order would leave its name in the log.
        self._redact(frozenset({party_id}))
        if party_id.startswith("user:"):
            self.security.erase_user(party_id.removeprefix("user:"))
        remaining = {pid: keys for pid, keys in self.keyring.parties.items() if pid != party_id}
        self._save(PartyKeyring(remaining, self.keyring.erased | {hashed}), self.names - {party_id})
        if self._by_reference is not None:
            self._by_reference.pop(hashed, None)
        return REFERENCE_PREFIX + hashed

    def _save(self, keyring: PartyKeyring, names: frozenset[str] | None = None) -> None:
        names = self.names if names is None else names
        plain = canonical.encode(_keyring_value(keyring, names))
        _write_private(self._keyring_path, self._box.encrypt(plain))
        self.keyring, self.names = keyring, names

    def _load_keyring(self) -> tuple[PartyKeyring, frozenset[str]]:
        """The keyring (erased list as keyed hashes) and the ids a version 1 file erased in plain text."""
        try:
            sealed = self._keyring_path.read_bytes()
        except FileNotFoundError:
            return PartyKeyring(), frozenset()
        try:
            plain = self._box.decrypt(sealed)
            value = canonical.decode(plain, max_bytes=len(plain), max_depth=5)
        except (nacl.exceptions.CryptoError, DecodeError) as exc:
            raise VaultCorrupt(
                f"{self._keyring_path} does not open with this node's key ({exc}); restore it from backup"
            ) from None
        keyring, self.names = _keyring_from(value)
        if value["v"] == KEYRING_VERSION:
            return keyring, frozenset()
        legacy = keyring.erased
        return PartyKeyring(keyring.parties, frozenset(self.keyed_hash(p) for p in legacy)), legacy

    # ------------------------------------------------------------------ details

    def add_details(self, record_id: bytes, openings: Mapping[str, tuple[bytes, Any]]) -> None:
        """Keep (in memory and synced to the log) the openings of ``record_id``'s commitments."""
        frame = self._frame(record_id, openings)
        self.details.add(record_id, openings)
        fd = os.open(self._log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as handle:
            handle.write(frame)
            handle.flush()
            os.fsync(handle.fileno())

    def disclose(self, record_id: bytes, fields: Iterable[str] | None = None) -> Disclosure | None:
        """The named (default: all) details of one of our records, or None if we hold none."""
        names = self.details.fields(record_id)
        if names is None:
            return None
        return self.details.disclose(record_id, names if fields is None else fields)

    def _load_details(self) -> int:
        """Read the log; cut a torn or undecryptable tail.  Returns the bytes cut."""
        try:
            data = self._log_path.read_bytes()
        except FileNotFoundError:
            return 0
        offset = 0
        while offset + FRAME_HEADER.size <= len(data):
            (size,) = FRAME_HEADER.unpack_from(data, offset)
            end = offset + FRAME_HEADER.size + size
            if size > MAX_FRAME_BYTES or end > len(data):
                break
            try:
                record_id, fields = canonical.decode(self._box.decrypt(data[offset + 4 : end]), max_depth=4)
                self.details.add(record_id, {name: (salt, value) for name, salt, value in fields})
            except (nacl.exceptions.CryptoError, DecodeError, ValueError, TypeError):
                break
            offset = end
        if offset < len(data):
            with open(self._log_path, "r+b") as handle:
                handle.truncate(offset)
                os.fsync(handle.fileno())
        return len(data) - offset

    def _names(self, record_id: bytes, parties: frozenset[str]) -> bool:
        """Whether a detail of ``record_id`` names one of ``parties``."""
        opened = self.disclose(record_id)
        return opened is not None and any(_mentions(v, parties) for _, v in opened.fields.values())

    def _frame(self, record_id: bytes, openings: Mapping[str, tuple[bytes, Any]]) -> bytes:
        """One encrypted log frame (length, then secretbox) of a record's openings."""
        plain = canonical.encode(
            [record_id, [[name, salt, value] for name, (salt, value) in openings.items()]]
        )
        sealed = self._box.encrypt(plain)
        if len(sealed) > MAX_FRAME_BYTES:
            raise NodeUsageError(f"details of {len(sealed)} bytes exceed {MAX_FRAME_BYTES}")
        return FRAME_HEADER.pack(len(sealed)) + sealed

    def _redact(self, parties: frozenset[str]) -> int:
        """Rewrite the details log without any detail naming one of ``parties``; the frames rewritten.

        Every frame keeps its place (one left without details stays, empty), so positions
        never shift.  The log's frames are in the order their records were added to
        :attr:`details`, so only the frames of affected records are opened again; the rest are
        copied as they are.  Written beside the log, synced, then renamed over it.
        """
        order = self.details.record_ids()
        affected = {record_id for record_id in order if self._names(record_id, parties)}
        if not affected:
            return 0
        data = self._log_path.read_bytes()
        details = AuditStore()
        tmp = self._log_path.with_suffix(".log.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            offset = 0
            for record_id in order:
                (size,) = FRAME_HEADER.unpack_from(data, offset)
                end = offset + FRAME_HEADER.size + size
                kept = dict(self.details.disclose(record_id, self.details.fields(record_id) or []).fields)
                frame = data[offset:end]
                if record_id in affected:
                    framed_id, _ = canonical.decode(self._box.decrypt(data[offset + 4 : end]), max_depth=4)
                    if framed_id != record_id:
                        raise VaultCorrupt(f"{self._log_path} changed under the node; restore it from backup")
                    kept = {name: (salt, v) for name, (salt, v) in kept.items() if not _mentions(v, parties)}
                    frame = self._frame(record_id, kept)
                details.add(record_id, kept)
                handle.write(frame)
                offset = end
            if offset != len(data):
                raise VaultCorrupt(f"{self._log_path} changed under the node; restore it from backup")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self._log_path)
        dir_fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self.details = details
        return len(affected)

"""The institution's audit vault on disk: its parties' keys and the details its records commit to.

Two files under ``<data_dir>/audit/`` (folder mode 0700, files 0600), both encrypted with a
key derived from the node's identity (XSalsa20-Poly1305, libsodium ``secretbox``), because
they name users and patients:

* ``parties.bin``: the :class:`~mftp.ledger.pseudonyms.PartyKeyring` (each party's master
  keys and escrow seed, and the ids erased), rewritten atomically (temporary file, fsync,
  rename) on every change.  Losing it makes the institution's tags unlinkable for ever: it
  belongs in the node's backup with the key files.
* ``details.log``: one encrypted frame per record (``4-byte length || secretbox``) holding
  the openings of the record's committed details (:func:`~mftp.ledger.pseudonyms.commit_details`).
  A frame is appended and synced *before* its record is submitted, so every record of ours on
  the chain can be disclosed.  A torn tail left by a crash is cut when the log is opened.

Party ids (``user:...``, ``patient:...``, ``institution:...``) exist only here, in memory and
in sealed escrow boxes; they are never logged.
"""

from __future__ import annotations

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
    PartyKeyring,
    PartyKeys,
    PseudonymUsageError,
    check_party_id,
    epoch_of,
)

from ..errors import NodeUsageError, StorageDamaged

VAULT_KEY_INFO: Final = b"mftp-audit-vault-v1"
FRAME_HEADER: Final = struct.Struct(">I")
MAX_FRAME_BYTES: Final = 64 * 1024  # a record commits to at most a few dozen small fields
MAX_PARTIES: Final = 1_000_000
KEYRING_VERSION: Final = 1


class VaultCorrupt(StorageDamaged):
    """The vault does not open with this node's key, or its keyring file is damaged.

    Our own disk: the operator restores it from backup.
    """


def vault_key(identity: SigningIdentity) -> bytes:
    """The vault's 32-byte secretbox key, derived from the node's identity seed."""
    return hkdf(identity.seed, salt=b"", info=VAULT_KEY_INFO, length=nacl.secret.SecretBox.KEY_SIZE)


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


def _keyring_value(keyring: PartyKeyring) -> dict[str, Any]:
    return {
        "v": KEYRING_VERSION,
        "parties": [
            [p.party_id, p.kind, [[epoch, master] for epoch, master in p.masters], p.escrow_seed]
            for p in keyring.parties.values()
        ],
        "erased": sorted(keyring.erased),
    }


def _keyring_from(value: Any) -> PartyKeyring:
    if not isinstance(value, dict) or value.get("v") != KEYRING_VERSION:
        raise VaultCorrupt("the vault's keyring has an unknown format")
    try:
        parties = {}
        for party_id, kind, masters, seed in value["parties"]:
            parties[party_id] = PartyKeys(party_id, kind, tuple((e, m) for e, m in masters), seed)
        return PartyKeyring(parties, frozenset(value["erased"]))
    except (KeyError, TypeError, ValueError, PseudonymUsageError) as exc:
        raise VaultCorrupt(f"the vault's keyring is damaged: {exc}") from None


class AuditVault:
    """Party keys and committed details of one institution (see the module doc)."""

    def __init__(self, folder: Path, identity: SigningIdentity, institution_id: str) -> None:
        self.folder = folder
        self._box = nacl.secret.SecretBox(vault_key(identity))
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        self._keyring_path = folder / "parties.bin"
        self._log_path = folder / "details.log"
        self.keyring = self._load_keyring()
        self.details = AuditStore()
        self.torn_bytes = self._load_details()
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
        if party_id in self.keyring.parties or party_id in self.keyring.erased or not create:
            return self.keyring.party(party_id)
        if len(self.keyring.parties) >= MAX_PARTIES:
            raise NodeUsageError(f"the vault holds {MAX_PARTIES} parties already")
        self._save(self.keyring.add(party_id, kind, from_epoch=epoch_of(time_ms) if time_ms else 0))
        return self.keyring.party(party_id)

    def has_party(self, party_id: str) -> bool:
        """Whether the vault holds live keys for ``party_id``."""
        return party_id in self.keyring.parties

    def rotate(self, party_id: str, effective_epoch: int, reason: str) -> tuple[dict[str, Any], Any]:
        """Start a new master key at ``effective_epoch``; the ``KEY_ROTATION`` body and its opening."""
        keyring, body, opening = self.keyring.rotate(party_id, effective_epoch, reason=reason)
        self._save(keyring)
        return body, opening

    def erase(self, party_id: str) -> None:
        """Destroy a party's keys (crypto-shredding); see :meth:`PartyKeyring.erase`."""
        self._save(self.keyring.erase(party_id))

    def _save(self, keyring: PartyKeyring) -> None:
        plain = canonical.encode(_keyring_value(keyring))
        _write_private(self._keyring_path, self._box.encrypt(plain))
        self.keyring = keyring

    def _load_keyring(self) -> PartyKeyring:
        try:
            sealed = self._keyring_path.read_bytes()
        except FileNotFoundError:
            return PartyKeyring()
        try:
            plain = self._box.decrypt(sealed)
            return _keyring_from(canonical.decode(plain, max_bytes=len(plain), max_depth=5))
        except (nacl.exceptions.CryptoError, DecodeError) as exc:
            raise VaultCorrupt(
                f"{self._keyring_path} does not open with this node's key ({exc}); restore it from backup"
            ) from None

    # ------------------------------------------------------------------ details

    def add_details(self, record_id: bytes, openings: Mapping[str, tuple[bytes, Any]]) -> None:
        """Keep (in memory and synced to the log) the openings of ``record_id``'s commitments."""
        plain = canonical.encode(
            [record_id, [[name, salt, value] for name, (salt, value) in openings.items()]]
        )
        frame = self._box.encrypt(plain)
        if len(frame) > MAX_FRAME_BYTES:
            raise NodeUsageError(f"details of {len(frame)} bytes exceed {MAX_FRAME_BYTES}")
        self.details.add(record_id, openings)
        fd = os.open(self._log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as handle:
            handle.write(FRAME_HEADER.pack(len(frame)) + frame)
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

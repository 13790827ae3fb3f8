"""The node's patient shares, encrypted at rest: ``<data_dir>/shares/shares.bin``.

The file is a :class:`~mftp.node.people.accounts.SealedFile` (XSalsa20-Poly1305 secretbox of
the canonical encoding, rewritten atomically, mode 0600 in a 0700 folder), with keys derived from
the node's identity seed by HKDF under labels of its own (:data:`SHARES_KEY_INFO`,
:data:`SHARES_HASH_INFO`): neither the account store's key nor the vault's opens it.  It holds
patient data (the patient's party id, Study Instance UIDs), so nothing in it is ever logged.
Tokens and codes are stored only as keyed hashes (:mod:`.core`).

The store is the one place a share's state changes on disk: every change is saved before it
takes effect for a caller, so a revocation or a lock survives a restart.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import nacl.secret

from mftp.crypto.primitives import hkdf
from mftp.crypto.signing import SigningIdentity

from ..clock import Clock
from ..errors import NodeUsageError, StorageDamaged
from ..people.accounts import AccountsCorrupt, SealedFile
from .core import Share, ShareState, Terms, settle

SHARES_KEY_INFO: Final = b"mftp-patient-shares-v1"
SHARES_HASH_INFO: Final = b"mftp-patient-shares-hash-v1"
STORE_VERSION: Final = 1
MAX_SHARES: Final = 100_000  # live and recently ended shares of one institution


class SharesCorrupt(StorageDamaged):
    """``shares.bin`` does not open with this node's key or is damaged: restore it from backup."""


def share_keys(identity: SigningIdentity) -> tuple[bytes, bytes]:
    """(secretbox key of ``shares.bin``, HMAC key of token and code hashes)."""
    box = hkdf(identity.seed, salt=b"", info=SHARES_KEY_INFO, length=nacl.secret.SecretBox.KEY_SIZE)
    return box, hkdf(identity.seed, salt=b"", info=SHARES_HASH_INFO, length=32)


def _value(share: Share) -> dict[str, Any]:
    t = share.terms
    return {
        "id": share.share_id,
        "token_hash": share.token_hash,
        "code_hash": share.code_hash,
        "transfers": list(share.transfer_ids),
        "studies": list(share.studies),
        "patient": share.patient,
        "created_by": share.created_by,
        "created_ms": share.created_ms,
        "terms": [t.valid_from_ms, t.valid_until_ms, t.max_opens, t.download, t.mode, t.max_failures],
        "label": share.label,
        "state": share.state.value,
        "opens": share.opens,
        "failures": share.failures,
        "revoked_ms": share.revoked_ms,
        "revoked_by": share.revoked_by,
        "records": list(share.records),
        "revoke_record": share.revoke_record,
    }


def _share(v: dict[str, Any]) -> Share:
    start, until, opens, download, mode, failures = v["terms"]
    return Share(
        share_id=v["id"],
        token_hash=v["token_hash"],
        code_hash=v["code_hash"],
        transfer_ids=tuple(v["transfers"]),
        studies=tuple(v["studies"]),
        patient=v["patient"],
        created_by=v["created_by"],
        created_ms=v["created_ms"],
        terms=Terms(start, until, opens, download, mode, failures),
        label=v["label"],
        state=ShareState(v["state"]),
        opens=v["opens"],
        failures=v["failures"],
        revoked_ms=v["revoked_ms"],
        revoked_by=v["revoked_by"],
        records=tuple(v["records"]),
        revoke_record=v["revoke_record"],
    )


class ShareStore:
    """Every share of this node, in memory, saved encrypted on every change (thread-safe)."""

    def __init__(self, folder: Path, identity: SigningIdentity, clock: Clock) -> None:
        box_key, self.hash_key = share_keys(identity)
        self._file = SealedFile(folder / "shares.bin", box_key)  # makes the folder 0700
        self._clock = clock
        self._lock = threading.RLock()
        self._shares: dict[str, Share] = {}
        self._by_token: dict[bytes, str] = {}
        self._load()

    def _load(self) -> None:
        try:
            value = self._file.read()
        except AccountsCorrupt as exc:  # the sealed file's own error names the accounts
            raise SharesCorrupt(str(exc).replace("accounts", "shares")) from None
        if value is None:
            return
        if not isinstance(value, dict) or value.get("v") != STORE_VERSION:
            raise SharesCorrupt("shares.bin has an unknown format; restore it from backup")
        try:
            shares = [_share(v) for v in value["shares"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise SharesCorrupt(
                f"shares.bin is damaged ({type(exc).__name__}); restore it from backup"
            ) from None
        self._shares = {s.share_id: s for s in shares}
        self._by_token = {s.token_hash: s.share_id for s in shares}

    def _save(self, shares: dict[str, Share]) -> None:
        self._file.write({"v": STORE_VERSION, "shares": [_value(s) for s in shares.values()]})
        self._shares = shares
        self._by_token = {s.token_hash: s.share_id for s in shares.values()}

    def __len__(self) -> int:
        return len(self._shares)

    def add(self, share: Share) -> Share:
        """Keep a new share (its id and token hash must be new)."""
        with self._lock:
            if share.share_id in self._shares or share.token_hash in self._by_token:
                raise NodeUsageError("a share with this id or token exists")  # 2^-128: our bug
            if len(self._shares) >= MAX_SHARES:
                raise NodeUsageError(f"this node holds {MAX_SHARES} shares; revoke or let some expire")
            self._save({**self._shares, share.share_id: share})
            return share

    def get(self, share_id: str) -> Share | None:
        """The share ``share_id`` with its time-driven state applied (saved if it moved)."""
        with self._lock:
            share = self._shares.get(share_id)
            return None if share is None else self._settled(share)

    def by_token_hash(self, digest: bytes) -> Share | None:
        """The share whose token hashes to ``digest`` (a dict lookup on a 256-bit keyed hash)."""
        with self._lock:
            share_id = self._by_token.get(digest)
            return None if share_id is None else self.get(share_id)

    def update(self, share_id: str, change: Callable[[Share], Share]) -> Share:
        """Apply ``change`` to the settled share and save it; the building block of every change."""
        with self._lock:
            current = self.get(share_id)
            if current is None:
                raise NodeUsageError("no share of that id")
            changed = change(current)
            if changed.share_id != current.share_id or changed.token_hash != current.token_hash:
                raise NodeUsageError("a share's id and token do not change")
            if changed != current:
                self._save({**self._shares, share_id: changed})
            return changed

    def shares(self) -> list[Share]:
        """Every share, settled, newest first."""
        with self._lock:
            settled = [self._settled(s) for s in list(self._shares.values())]
        return sorted(settled, key=lambda s: s.created_ms, reverse=True)

    def _settled(self, share: Share) -> Share:
        now = self._clock.now_ms()
        moved = settle(share, now)
        if moved is not share:  # expired since last read: written down, so a restart agrees
            self._save({**self._shares, share.share_id: moved})
        return moved

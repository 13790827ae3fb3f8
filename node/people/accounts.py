"""The institution's accounts, encrypted at rest, and their Argon2id passwords.

On disk: ``<data_dir>/people/`` (mode 0700) holds ``accounts.bin`` (mode 0600), one
XSalsa20-Poly1305 ``secretbox`` of the canonical encoding of every account, rewritten
atomically (temporary file, fsync, rename, fsync of the folder) on every change.  The key is
derived from the node's identity seed by HKDF-SHA256 with its own label
(:data:`ACCOUNTS_KEY_INFO`): the audit vault's approach (:func:`mftp.node.audit.vault.vault_key`)
with a different key, so neither store can be opened with the other's key and this room need not
import the audit room.  The file name says nothing, so no user name is ever in a plaintext file.
Back it up with the node's key files: without the key it does not open.

Passwords are hashed with Argon2id by ``argon2-cffi``; the PHC string keeps its own parameters,
so a change of :class:`PasswordCost` takes effect for each user at the next good sign-in
(:meth:`AccountStore.check_password` rehashes).  Hashing blocks for a few hundred milliseconds:
an asyncio caller runs it in a worker thread (the store is safe to use from several threads).
"""

from __future__ import annotations

import contextlib
import hmac
import os
import re
import threading
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import argon2
import nacl.exceptions
import nacl.secret

from mftp.crypto import canonical
from mftp.crypto.errors import DecodeError
from mftp.crypto.primitives import hkdf
from mftp.crypto.signing import SigningIdentity

from ..clock import Clock
from ..errors import NodeUsageError, StorageDamaged
from .roles import Role

ACCOUNTS_KEY_INFO: Final = b"mftp-people-accounts-v1"
HASH_KEY_INFO: Final = b"mftp-people-keyed-hash-v1"
STORE_VERSION: Final = 1
MAX_ACCOUNTS: Final = 20_000  # a large hospital has a few thousand staff who send studies
MAX_STORE_BYTES: Final = 64 * 1024 * 1024
MIN_PASSWORD_CHARS: Final = 12  # NIST SP 800-63B asks for at least 8; a second factor follows
MAX_PASSWORD_CHARS: Final = 256  # a bound on what we hash for a stranger
_NAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")


class AccountsCorrupt(StorageDamaged):
    """``accounts.bin`` does not open with this node's key or is damaged: restore from backup."""


@dataclass(frozen=True)
class PasswordCost:
    """Argon2id parameters: passes, memory (KiB) and lanes.

    The default is OWASP's first Argon2id choice (46 MiB, 1 pass, 1 lane): measured on this
    project's 2-core machines at about 160-240 ms per hash under load.  RFC 9106's second
    recommendation (64 MiB, 3 passes, 4 lanes) took 420-650 ms there, too long on a node that
    also runs consensus on two cores; the second factor carries the rest of the weight.
    """

    time_cost: int = 1
    memory_kib: int = 46 * 1024
    parallelism: int = 1

    def hasher(self) -> argon2.PasswordHasher:
        """An ``argon2-cffi`` hasher with these parameters (Argon2id, 16-byte salt, 32-byte hash)."""
        return argon2.PasswordHasher(
            time_cost=self.time_cost,
            memory_cost=self.memory_kib,
            parallelism=self.parallelism,
            hash_len=32,
            salt_len=16,
            type=argon2.Type.ID,
        )


TEST_COST: Final = PasswordCost(time_cost=1, memory_kib=8, parallelism=1)
"""The cheapest parameters argon2 allows, for tests only (never for a real node)."""


def normalize_name(name: str) -> str:
    """The one spelling of a user name: NFC, trimmed, lower case; ``[a-z0-9._@-]``, at most 64.

    Lower case so that ``Dr.Hansen`` and ``dr.hansen`` cannot be two people.
    """
    text = unicodedata.normalize("NFC", name).strip().lower()
    if not _NAME.fullmatch(text):
        raise NodeUsageError("a user name is 1-64 of a-z 0-9 . _ @ -, starting with a letter or digit")
    return text


def check_password_shape(password: str) -> None:
    """Refuse a password too short or too long (the caller's input, said without echoing it)."""
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise NodeUsageError(f"a password has {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters")


@dataclass(frozen=True)
class Passkey:
    """One WebAuthn credential: its id, COSE public key and the last signature counter seen."""

    credential_id: bytes
    public_key: bytes
    sign_count: int
    created_ms: int


@dataclass(frozen=True)
class Account:
    """One user (or service account) of this institution; immutable, replaced on change.

    Secrets are held only as hashes (password, recovery codes, enrolment code) except the
    TOTP secret, which verification needs in the clear (it is encrypted with the store).
    """

    name: str = field(repr=False)  # a repr may end up in a log: no name, no secret in it
    roles: frozenset[Role] = frozenset()
    created_ms: int = 0
    service: bool = False  # a service account signs in only with API tokens
    disabled: bool = False
    directory: bool = False  # the hospital directory (LDAP) supplies the password factor
    password_hash: str = field(
        default="", repr=False
    )  # Argon2id PHC string; "" before enrolment or for directory users
    totp_secret: bytes = field(default=b"", repr=False)  # confirmed secret; b"" when none
    totp_last_step: int = -1  # the last accepted time step: a code is never accepted twice
    totp_pending: bytes = field(
        default=b"", repr=False
    )  # secret shown at enrolment, not yet confirmed by a code
    recovery_hashes: tuple[bytes, ...] = field(
        default=(), repr=False
    )  # keyed hashes of unused recovery codes
    passkeys: tuple[Passkey, ...] = field(default=(), repr=False)
    enrolment_hash: bytes = field(default=b"", repr=False)  # keyed hash of the one-time enrolment code
    enrolment_expires_ms: int = 0
    failures: int = 0  # failed sign-ins since the last good one
    locked_until_ms: int = 0  # 0: not locked

    @property
    def principal(self) -> str:
        """The party id this account acts as on the ledger and in the audit vault."""
        return f"user:{self.name}"

    @property
    def has_second_factor(self) -> bool:
        """Whether the account holds a confirmed TOTP secret or a passkey."""
        return bool(self.totp_secret) or bool(self.passkeys)

    def locked(self, now_ms: int) -> bool:
        """Whether repeated failures keep the account locked at ``now_ms``."""
        return now_ms < self.locked_until_ms


def _account_value(a: Account) -> dict[str, Any]:
    return {
        "name": a.name,
        "roles": sorted(r.value for r in a.roles),
        "created_ms": a.created_ms,
        "service": a.service,
        "disabled": a.disabled,
        "directory": a.directory,
        "password_hash": a.password_hash,
        "totp_secret": a.totp_secret,
        "totp_last_step": a.totp_last_step,
        "totp_pending": a.totp_pending,
        "recovery_hashes": list(a.recovery_hashes),
        "passkeys": [[p.credential_id, p.public_key, p.sign_count, p.created_ms] for p in a.passkeys],
        "enrolment_hash": a.enrolment_hash,
        "enrolment_expires_ms": a.enrolment_expires_ms,
        "failures": a.failures,
        "locked_until_ms": a.locked_until_ms,
    }


def _account_from(v: dict[str, Any]) -> Account:
    return Account(
        name=v["name"],
        roles=frozenset(Role(r) for r in v["roles"]),
        created_ms=v["created_ms"],
        service=v["service"],
        disabled=v["disabled"],
        directory=v["directory"],
        password_hash=v["password_hash"],
        totp_secret=v["totp_secret"],
        totp_last_step=v["totp_last_step"],
        totp_pending=v["totp_pending"],
        recovery_hashes=tuple(v["recovery_hashes"]),
        passkeys=tuple(Passkey(c, k, n, t) for c, k, n, t in v["passkeys"]),
        enrolment_hash=v["enrolment_hash"],
        enrolment_expires_ms=v["enrolment_expires_ms"],
        failures=v["failures"],
        locked_until_ms=v["locked_until_ms"],
    )


class SealedFile:
    """One value, canonically encoded, in a secretbox, replaced atomically (mode 0600)."""

    def __init__(self, path: Path, key: bytes) -> None:
        self.path = path
        self._box = nacl.secret.SecretBox(key)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)

    def read(self) -> Any:
        """The stored value, or None if the file does not exist yet."""
        try:
            sealed = self.path.read_bytes()
        except FileNotFoundError:
            return None
        if len(sealed) > MAX_STORE_BYTES:
            raise AccountsCorrupt(f"{self.path} is larger than {MAX_STORE_BYTES} bytes")
        try:
            plain = self._box.decrypt(sealed)
            return canonical.decode(plain, max_bytes=len(plain), max_depth=8)
        except (nacl.exceptions.CryptoError, DecodeError) as exc:
            raise AccountsCorrupt(
                f"{self.path} does not open with this node's key ({exc}); restore it from backup"
            ) from None

    def write(self, value: Any) -> None:
        """Replace the file with ``value``: readers see the old file or the whole new one."""
        data = self._box.encrypt(canonical.encode(value))
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)  # whatever the umask or a stale temporary file
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def store_keys(identity: SigningIdentity) -> tuple[bytes, bytes]:
    """(secretbox key of the account files, HMAC key for keyed hashes of codes and tokens)."""
    box = hkdf(identity.seed, salt=b"", info=ACCOUNTS_KEY_INFO, length=nacl.secret.SecretBox.KEY_SIZE)
    return box, hkdf(identity.seed, salt=b"", info=HASH_KEY_INFO, length=32)


class Passwords:
    """Argon2id hashing and checking, with a dummy check for names that match no account."""

    def __init__(self, cost: PasswordCost = PasswordCost()) -> None:
        self.cost = cost
        self._hasher = cost.hasher()
        # A real hash of a random password, so that checking an unknown name costs the same.
        self._dummy = self._hasher.hash(os.urandom(24).hex())

    def hash(self, password: str) -> str:
        """A fresh Argon2id PHC string for ``password``."""
        check_password_shape(password)
        return self._hasher.hash(password)

    def verify(self, stored: str, password: str) -> bool:
        """Whether ``password`` matches ``stored`` (argon2 compares in constant time)."""
        if not stored or len(password) > MAX_PASSWORD_CHARS:
            self.dummy_verify(password)  # no answer may come back faster than a real check
            return False
        try:
            return self._hasher.verify(stored, password)
        except argon2.exceptions.VerificationError:
            return False
        except argon2.exceptions.InvalidHashError:
            raise AccountsCorrupt("a stored password hash is damaged") from None

    def dummy_verify(self, password: str) -> None:
        """Spend the time of one real check and learn nothing (unknown or password-less names)."""
        with contextlib.suppress(argon2.exceptions.VerificationError):
            self._hasher.verify(self._dummy, password[:MAX_PASSWORD_CHARS])

    def needs_rehash(self, stored: str) -> bool:
        """Whether ``stored`` was made with other parameters than the current ones."""
        return self._hasher.check_needs_rehash(stored)


class AccountStore:
    """Every account of this institution: kept in memory, saved encrypted on every change.

    Operator actions (add, list, disable, enable, unlock, set roles, reset the second factor)
    raise :class:`NodeUsageError` for a name that matches no account; their messages never
    carry the name, because they may be logged.
    """

    def __init__(
        self,
        folder: Path,
        identity: SigningIdentity,
        clock: Clock,
        cost: PasswordCost = PasswordCost(),
    ) -> None:
        box_key, self.hash_key = store_keys(identity)
        self._file = SealedFile(folder / "accounts.bin", box_key)
        self._clock = clock
        self.passwords = Passwords(cost)
        self._lock = threading.RLock()
        self._accounts = self._load()

    def _load(self) -> dict[str, Account]:
        value = self._file.read()
        if value is None:
            return {}
        if not isinstance(value, dict) or value.get("v") != STORE_VERSION:
            raise AccountsCorrupt("accounts.bin has an unknown format")
        try:
            accounts = [_account_from(v) for v in value["accounts"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise AccountsCorrupt(f"accounts.bin is damaged: {type(exc).__name__}") from None
        return {a.name: a for a in accounts}

    def _save(self, accounts: dict[str, Account]) -> None:
        self._file.write({"v": STORE_VERSION, "accounts": [_account_value(a) for a in accounts.values()]})
        self._accounts = accounts

    def resave(self) -> None:
        """Write the store again unchanged (a fresh nonce): the disk work a failure costs a
        known account, spent for an unknown name too, so its time does not tell them apart."""
        with self._lock:
            self._save(self._accounts)

    def keyed_hash(self, secret: str | bytes) -> bytes:
        """HMAC-SHA256 of a high-entropy secret (a code or token) under the store's hash key."""
        data = secret.encode("utf-8") if isinstance(secret, str) else secret
        return hmac.new(self.hash_key, data, "sha256").digest()

    # ------------------------------------------------------------------ reading

    def get(self, name: str) -> Account | None:
        """The account of ``name`` (any spelling), or None."""
        try:
            return self._accounts.get(normalize_name(name))
        except NodeUsageError:
            return None  # a name that cannot exist matches nothing, and says so the same way

    def __len__(self) -> int:
        return len(self._accounts)

    def accounts(self) -> list[Account]:
        """Every account, by name (for ``user list``)."""
        return sorted(self._accounts.values(), key=lambda a: a.name)

    # ------------------------------------------------------------------ changing

    def update(self, name: str, change: Callable[[Account], Account]) -> Account:
        """Apply ``change`` to one account and save; the building block of every mutation."""
        with self._lock:
            current = self.get(name)
            if current is None:
                raise NodeUsageError("no account of that name")
            changed = change(current)
            if changed.name != current.name:
                raise NodeUsageError("an account's name does not change")
            if changed != current:
                self._save({**self._accounts, changed.name: changed})
            return changed

    def add(
        self,
        name: str,
        roles: Iterable[Role],
        *,
        service: bool = False,
        directory: bool = False,
    ) -> Account:
        """A new account with ``roles``, no password and no second factor yet (see enrolment)."""
        held = frozenset(roles)
        if not held:
            raise NodeUsageError("an account holds at least one role")
        if service and directory:
            raise NodeUsageError("a service account has no directory password")
        key = normalize_name(name)
        with self._lock:
            if key in self._accounts:
                raise NodeUsageError("an account of that name exists")
            if len(self._accounts) >= MAX_ACCOUNTS:
                raise NodeUsageError(f"this node holds {MAX_ACCOUNTS} accounts already")
            account = Account(key, held, self._clock.now_ms(), service=service, directory=directory)
            self._save({**self._accounts, key: account})
            return account

    def disable(self, name: str) -> Account:
        """Stop an account from signing in (its sessions and tokens are refused by their owners)."""
        return self.update(name, lambda a: replace(a, disabled=True))

    def enable(self, name: str) -> Account:
        """Let a disabled account sign in again."""
        return self.update(name, lambda a: replace(a, disabled=False))

    def unlock(self, name: str) -> Account:
        """End a lockout before its delay passes and forget the failures (an operator's call)."""
        return self.update(name, lambda a: replace(a, failures=0, locked_until_ms=0))

    def set_roles(self, name: str, roles: Iterable[Role]) -> Account:
        """Replace an account's roles (at least one)."""
        held = frozenset(roles)
        if not held:
            raise NodeUsageError("an account holds at least one role")
        return self.update(name, lambda a: replace(a, roles=held))

    def reset_second_factor(self, name: str) -> Account:
        """Forget every second factor and recovery code: the user enrols again from a new code."""
        return self.update(
            name,
            lambda a: replace(
                a, totp_secret=b"", totp_pending=b"", totp_last_step=-1, recovery_hashes=(), passkeys=()
            ),
        )

    def set_password(self, name: str, password: str) -> Account:
        """Hash and keep a new password (not for directory or service accounts)."""
        account = self.get(name)
        if account is None:
            raise NodeUsageError("no account of that name")
        if account.directory or account.service:
            raise NodeUsageError("this account has no local password")
        hashed = self.passwords.hash(password)  # outside the lock: it is the slow part
        return self.update(name, lambda a: replace(a, password_hash=hashed))

    def check_password(self, account: Account | None, password: str) -> bool:
        """Whether ``password`` is the account's; rehashes on success if the cost changed.

        ``None`` (no such account) costs one dummy Argon2 check and answers False, so the time
        taken says nothing about whether the name exists.
        """
        if account is None:
            self.passwords.dummy_verify(password)
            return False
        ok = self.passwords.verify(account.password_hash, password)
        if ok and self.passwords.needs_rehash(account.password_hash):
            rehashed = self.passwords.hash(password)
            self.update(account.name, lambda a: replace(a, password_hash=rehashed))
        return ok

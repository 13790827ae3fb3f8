"""The node's second factor: TOTP, recovery codes and the one-time enrolment code.

Pure functions over :class:`~.accounts.Account`: each returns the changed account, which the
caller saves with :meth:`~.accounts.AccountStore.update`.  Time comes in as ``now_ms`` (the
node's clock); secrets are compared with :func:`hmac.compare_digest`.

- **TOTP** (RFC 6238 via ``pyotp``): a 160-bit secret (RFC 4226's recommended length), 6 digits,
  a 30 s step; a code of the current step or one step either side is accepted (clock drift),
  and only for a step later than the last one accepted, so a code is never accepted twice,
  not even a neighbour's once a later one was used.  The secret is shown once as an
  ``otpauth://`` URI and its QR code (SVG by ``segno``), and becomes the account's only
  after a first good code confirms the user's authenticator holds it.
- **Recovery codes**: 10 of 80 bits each, shown once, stored as HMAC-SHA256 under the store's
  hash key (not Argon2: they are random and long, so a keyed hash is as strong, and checking
  one against ten Argon2 hashes would cost seconds), removed when used.
- **Enrolment code**: 100 bits the operator hands over after ``user add`` or ``user
  reset-mfa``; it expires (24 h by default) and is refused after its first use.
"""

from __future__ import annotations

import base64
import hmac
import io
import secrets
from collections.abc import Callable
from dataclasses import replace
from typing import Final

import pyotp
import segno

from ..errors import NodeUsageError
from .accounts import Account
from .errors import SignInRefused

KeyedHash = Callable[[str], bytes]
"""The store's keyed hash (:meth:`~.accounts.AccountStore.keyed_hash`)."""

TOTP_STEP_S: Final = 30
TOTP_DIGITS: Final = 6
TOTP_DRIFT_STEPS: Final = 1
TOTP_SECRET_BYTES: Final = 20
RECOVERY_CODES: Final = 10
RECOVERY_CODE_CHARS: Final = 16  # base32: 80 bits
ENROLMENT_CODE_CHARS: Final = 20  # base32: 100 bits
ENROLMENT_TTL_MS: Final = 24 * 3600 * 1000
ISSUER: Final = "MFTP"


def _random_base32(chars: int) -> str:
    """``chars`` random base32 characters (5 bits each), lower case."""
    raw = secrets.token_bytes((chars * 5 + 7) // 8)
    return base64.b32encode(raw).decode("ascii")[:chars].lower()


def _grouped(text: str) -> str:
    return "-".join(text[i : i + 4] for i in range(0, len(text), 4))


def normalize_code(code: str) -> str:
    """A typed code without spaces or dashes, lower case (how it is hashed and compared)."""
    return "".join(ch for ch in code.lower() if ch not in " -\t")


# ---------------------------------------------------------------------------------------- TOTP


def new_totp_secret() -> bytes:
    """A fresh 160-bit TOTP secret."""
    return secrets.token_bytes(TOTP_SECRET_BYTES)


def _totp(secret: bytes) -> pyotp.TOTP:
    return pyotp.TOTP(base64.b32encode(secret).decode("ascii"), digits=TOTP_DIGITS, interval=TOTP_STEP_S)


def totp_step(now_ms: int) -> int:
    """The RFC 6238 time step of ``now_ms`` (T0 = 0, X = 30 s)."""
    return now_ms // 1000 // TOTP_STEP_S


def totp_code(secret: bytes, step: int) -> str:
    """The code of ``step`` (what an authenticator app shows; tests use it)."""
    return _totp(secret).generate_otp(step)


def begin_totp(account: Account, secret: bytes) -> Account:
    """Hold ``secret`` as pending until a first good code confirms it (:func:`confirm_totp`)."""
    if len(secret) != TOTP_SECRET_BYTES:
        raise NodeUsageError(f"a TOTP secret is {TOTP_SECRET_BYTES} bytes")
    return replace(account, totp_pending=secret)


def totp_uri(secret: bytes, account_name: str, issuer: str = ISSUER) -> str:
    """The ``otpauth://totp/...`` URI an authenticator app reads (shown to its user only)."""
    return _totp(secret).provisioning_uri(name=account_name, issuer_name=issuer)


def totp_qr_svg(uri: str) -> str:
    """The URI as a QR code in SVG (error correction M), for the enrolment page."""
    out = io.BytesIO()
    segno.make(uri, error="m").save(out, kind="svg", scale=4, xmldecl=False)
    return out.getvalue().decode("utf-8")


def _matching_step(secret: bytes, code: str, now_ms: int, last_step: int) -> int | None:
    """The step within the drift window whose code is ``code`` and is later than ``last_step``.

    Every candidate is computed and compared (constant time each), so the time does not say
    which step matched.
    """
    typed = normalize_code(code).encode("ascii", "replace")
    now = totp_step(now_ms)
    found = None
    for step in range(max(0, now - TOTP_DRIFT_STEPS), now + TOTP_DRIFT_STEPS + 1):
        same = hmac.compare_digest(totp_code(secret, step).encode("ascii"), typed)
        if same and step > last_step and found is None:
            found = step
    return found


def verify_totp(account: Account, code: str, now_ms: int) -> Account:
    """The account with the code's step remembered, or :class:`SignInRefused` (wrong, replayed)."""
    if not account.totp_secret:
        raise SignInRefused()
    step = _matching_step(account.totp_secret, code, now_ms, account.totp_last_step)
    if step is None:
        raise SignInRefused()
    return replace(account, totp_last_step=step)


def confirm_totp(account: Account, code: str, now_ms: int) -> Account:
    """Make the pending secret the account's, given a good code from the user's authenticator."""
    if not account.totp_pending:
        raise NodeUsageError("no TOTP enrolment is under way")
    step = _matching_step(account.totp_pending, code, now_ms, -1)
    if step is None:
        raise SignInRefused()
    return replace(account, totp_secret=account.totp_pending, totp_pending=b"", totp_last_step=step)


# ------------------------------------------------------------------------------ recovery codes


def new_recovery_codes(account: Account, keyed_hash: KeyedHash) -> tuple[list[str], Account]:
    """Ten fresh recovery codes (to show once) and the account holding only their hashes.

    Replaces any earlier set: the codes printed before are void.
    """
    codes = [_random_base32(RECOVERY_CODE_CHARS) for _ in range(RECOVERY_CODES)]
    hashes = tuple(keyed_hash(c) for c in codes)
    return [_grouped(c) for c in codes], replace(account, recovery_hashes=hashes)


def use_recovery_code(account: Account, code: str, keyed_hash: KeyedHash) -> Account:
    """The account without the code it just used, or :class:`SignInRefused`."""
    typed = keyed_hash(normalize_code(code))
    match = None
    for stored in account.recovery_hashes:  # no early exit: every hash is compared
        if hmac.compare_digest(stored, typed) and match is None:
            match = stored
    if match is None:
        raise SignInRefused()
    return replace(account, recovery_hashes=tuple(h for h in account.recovery_hashes if h != match))


# ------------------------------------------------------------------------------ enrolment code


def issue_enrolment_code(
    account: Account, now_ms: int, keyed_hash: KeyedHash, ttl_ms: int = ENROLMENT_TTL_MS
) -> tuple[str, Account]:
    """A one-time code for the operator to hand over, and the account holding its hash.

    Replaces any earlier code.  Refused for a service account (it never signs in).
    """
    if account.service:
        raise NodeUsageError("a service account signs in with API tokens only")
    if ttl_ms <= 0:
        raise NodeUsageError("an enrolment code needs a positive lifetime")
    code = _random_base32(ENROLMENT_CODE_CHARS)
    changed = replace(account, enrolment_hash=keyed_hash(code), enrolment_expires_ms=now_ms + ttl_ms)
    return _grouped(code), changed


def redeem_enrolment_code(account: Account, code: str, now_ms: int, keyed_hash: KeyedHash) -> Account:
    """The account with its enrolment code spent, or :class:`SignInRefused` (wrong, used, expired)."""
    fresh = now_ms < account.enrolment_expires_ms
    same = hmac.compare_digest(account.enrolment_hash or b"\0" * 32, keyed_hash(normalize_code(code)))
    if not (fresh and same and account.enrolment_hash) or account.disabled:
        raise SignInRefused()
    return replace(account, enrolment_hash=b"", enrolment_expires_ms=0)

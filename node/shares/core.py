"""The pure core of a patient share: its lifecycle, its two secrets, its limits (no disk, no clock).

A share gives one patient access to one study or a set, received at this node, through a
*link* and a *code*:

- the **link token** is :data:`TOKEN_BYTES` (32) random bytes in URL-safe base64: 256 bits,
  beyond any guessing, so it may travel by e-mail or on a QR code;
- the **code** is :data:`CODE_CHARS` (8) characters from :data:`CODE_ALPHABET` (31 letters and
  digits without 0 O 1 I L, so it can be read aloud or copied from paper), about 39.6 bits,
  handed over in person or on the discharge sheet.  Its strength is in the lock: after
  :attr:`Terms.max_failures` wrong codes the share is locked for good.

Only keyed hashes of both are kept (:func:`keyed_hash`, HMAC-SHA256 under a key derived from
the node's identity): a copy of the store opens nothing without the node key.  The token's hash
is the share's lookup key; the code's hash is bound to the share id and compared with
:func:`hmac.compare_digest`.

States move through :data:`SHARE_LIFECYCLE` only::

    active --end date passed--> expired
           --max opens used---> exhausted --revoked--> revoked
           --too many codes---> locked    --revoked--> revoked
           --revoked----------> revoked

Expired and revoked are final; an exhausted or locked share can still be revoked, so that its
revocation is on the ledger too.  :func:`state_at` applies the time- and count-driven moves.
Times are wall-clock milliseconds read by the caller from the node's one clock.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Final

from mftp.ledger.records import MODES

from ..errors import NodeUsageError
from ..lifecycle import Lifecycle

TOKEN_BYTES: Final = 32
SHARE_ID_BYTES: Final = 16
CODE_ALPHABET: Final = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0 O 1 I L: unambiguous on paper
CODE_CHARS: Final = 8
MAX_STUDIES: Final = 16  # a share is one patient's studies: a set, not an archive
MAX_OPENS: Final = 1000
MAX_FAILURES: Final = 20
DEFAULT_FAILURES: Final = 5
MAX_DURATION_MS: Final = 366 * 24 * 3600 * 1000  # at most a year: a link is not for ever
MAX_LABEL_CHARS: Final = 100
DAY_MS: Final = 24 * 3600 * 1000


class ShareState(Enum):
    """Where a share stands."""

    ACTIVE = "active"
    EXPIRED = "expired"  # past its end date
    EXHAUSTED = "exhausted"  # opened as many times as allowed
    LOCKED = "locked"  # too many wrong codes
    REVOKED = "revoked"  # a clinician ended it


_A, _E, _X, _L, _R = (
    ShareState.ACTIVE,
    ShareState.EXPIRED,
    ShareState.EXHAUSTED,
    ShareState.LOCKED,
    ShareState.REVOKED,
)
SHARE_LIFECYCLE: Final = Lifecycle(
    "patient share",
    {
        _A: frozenset({_E, _X, _L, _R}),
        _X: frozenset({_R, _E}),
        _L: frozenset({_R, _E}),
        _E: frozenset(),
        _R: frozenset(),
    },
)


@dataclass(frozen=True)
class Terms:
    """What a clinician allows: dates, opens, downloads, the de-identification mode."""

    valid_from_ms: int
    valid_until_ms: int
    max_opens: int = 10
    download: bool = False
    mode: str = "identified"  # it is the patient's own data
    max_failures: int = DEFAULT_FAILURES

    def __post_init__(self) -> None:
        problems = terms_problems(self)
        if problems:
            raise NodeUsageError("; ".join(problems))


def terms_problems(terms: Terms) -> list[str]:
    """Why ``terms`` cannot be a share's terms (empty: they can)."""
    problems = []
    for name in ("valid_from_ms", "valid_until_ms", "max_opens", "max_failures"):
        value = getattr(terms, name)
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{name} is an integer")
    if problems:
        return problems
    if terms.valid_from_ms < 0 or terms.valid_until_ms <= terms.valid_from_ms:
        problems.append("the end date comes after the start date")
    elif terms.valid_until_ms - terms.valid_from_ms > MAX_DURATION_MS:
        problems.append(f"a share lasts at most {MAX_DURATION_MS // DAY_MS} days")
    if not 1 <= terms.max_opens <= MAX_OPENS:
        problems.append(f"max_opens is from 1 to {MAX_OPENS}")
    if not 1 <= terms.max_failures <= MAX_FAILURES:
        problems.append(f"max_failures is from 1 to {MAX_FAILURES}")
    if not isinstance(terms.download, bool):
        problems.append("download is true or false")
    if terms.mode not in MODES:
        problems.append(f"mode is one of {', '.join(sorted(MODES))}")
    return problems


@dataclass(frozen=True)
class Share:
    """One share as stored (immutable: each change is a new value).

    ``patient`` is the patient's party id (``patient:<issuer>/<id>``), the vault's name for the
    tags on the ledger; it and ``studies`` (Study Instance UIDs) are patient data and stay in
    the encrypted store, never in a log or a repr.
    """

    share_id: str  # 32 hex digits, public (it is on the ledger)
    token_hash: bytes = field(repr=False)
    code_hash: bytes = field(repr=False)
    transfer_ids: tuple[str, ...]
    studies: tuple[str, ...] = field(repr=False)  # Study Instance UIDs, in transfer order
    patient: str = field(repr=False)
    created_by: str = field(repr=False)  # the clinician's party id (user:<name>)
    created_ms: int
    terms: Terms
    label: str = field(default="", repr=False)  # the clinician's own note, e.g. "CT 12 March"
    state: ShareState = ShareState.ACTIVE
    opens: int = 0
    failures: int = 0
    revoked_ms: int = 0
    revoked_by: str = field(default="", repr=False)
    records: tuple[str, ...] = ()  # ids of the ledger records about this share, oldest first
    revoke_record: str = ""  # the revocation's record id, once it was submitted

    def moved(self, target: ShareState, **changes: object) -> Share:
        """This share in state ``target`` (through :data:`SHARE_LIFECYCLE` only), with ``changes``."""
        state = self.state if target is self.state else SHARE_LIFECYCLE.move(self.state, target)
        return replace(self, state=state, **changes)  # type: ignore[arg-type]

    def usable(self, now_ms: int) -> bool:
        """Whether a patient may open it now (active, started, not past its end)."""
        return state_at(self, now_ms) is ShareState.ACTIVE and now_ms >= self.terms.valid_from_ms

    def session_allowed(self, now_ms: int) -> bool:
        """Whether an already opened session may go on (the last open may have exhausted it)."""
        return state_at(self, now_ms) in (ShareState.ACTIVE, ShareState.EXHAUSTED)


def state_at(share: Share, now_ms: int) -> ShareState:
    """The state ``share`` is in at ``now_ms``: its stored state, expired once past its end."""
    if not SHARE_LIFECYCLE.final(share.state) and now_ms >= share.terms.valid_until_ms:
        return ShareState.EXPIRED
    return share.state


def settle(share: Share, now_ms: int) -> Share:
    """``share`` with the time-driven move applied (to be saved when it changed)."""
    target = state_at(share, now_ms)
    return share if target is share.state else share.moved(target)


def after_open(share: Share) -> Share:
    """A right code: one more open, exhausted at the limit; the failures count again from 0."""
    opens = share.opens + 1
    target = ShareState.EXHAUSTED if opens >= share.terms.max_opens else share.state
    return share.moved(target, opens=opens, failures=0)


def after_failure(share: Share) -> Share:
    """A wrong code: one more failure, locked at the limit (for good: a clinician shares anew)."""
    failures = share.failures + 1
    target = ShareState.LOCKED if failures >= share.terms.max_failures else share.state
    return share.moved(target, failures=failures)


def revoked(share: Share, now_ms: int, by: str) -> Share:
    """``share`` revoked at ``now_ms`` by ``by``; a usage error if it is already over for good."""
    if share.state is ShareState.REVOKED:
        raise NodeUsageError("this share is revoked already")
    if share.state is ShareState.EXPIRED:
        raise NodeUsageError("this share has expired; there is nothing to revoke")
    return share.moved(ShareState.REVOKED, revoked_ms=now_ms, revoked_by=by)


# ------------------------------------------------------------------------------- the secrets


def new_share_id() -> str:
    """32 random hex digits: the share's public id (on the ledger, in the clinician's list)."""
    return secrets.token_hex(SHARE_ID_BYTES)


def new_token() -> str:
    """The link's token: 256 random bits, URL-safe base64 without padding (43 characters)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def new_code() -> str:
    """The patient's code: :data:`CODE_CHARS` characters of :data:`CODE_ALPHABET`."""
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_CHARS))


def format_code(code: str) -> str:
    """The code as printed: two groups of four (``ABCD-EFGH``)."""
    half = len(code) // 2
    return f"{code[:half]}-{code[half:]}"


def normalize_code(typed: str) -> str:
    """What the patient typed, as the code is stored: upper case, without spaces or dashes.

    Bounded before anything is done with it; a string that cannot be a code becomes ``""``,
    which matches no code (and still counts as a failure).
    """
    text = typed[:64].upper().replace("-", "").replace(" ", "").strip()
    if len(text) != CODE_CHARS or any(c not in CODE_ALPHABET for c in text):
        return ""
    return text


def looks_like_token(text: str) -> bool:
    """Whether ``text`` has the shape of a link token (43 URL-safe base64 characters)."""
    return len(text) == 43 and all(c.isascii() and (c.isalnum() or c in "-_") for c in text)


def keyed_hash(key: bytes, purpose: bytes, secret: str) -> bytes:
    """HMAC-SHA256 of ``secret`` under ``key``, for ``purpose`` (``b"token"``, ``b"code:<id>"``)."""
    return hmac.new(key, purpose + b"\0" + secret.encode("utf-8"), "sha256").digest()


def token_hash(key: bytes, token: str) -> bytes:
    """The stored form of a link token (also the share's lookup key)."""
    return keyed_hash(key, b"token", token)


def code_hash(key: bytes, share_id: str, code: str) -> bytes:
    """The stored form of a share's code, bound to the share (a code of one opens no other)."""
    return keyed_hash(key, b"code:" + share_id.encode("ascii"), code)


def code_matches(key: bytes, share: Share, typed: str) -> bool:
    """Whether ``typed`` is ``share``'s code, compared in constant time on the hashes."""
    return hmac.compare_digest(code_hash(key, share.share_id, normalize_code(typed)), share.code_hash)

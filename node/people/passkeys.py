"""WebAuthn passkeys as a second factor: the registration and authentication ceremonies.

``py_webauthn`` (the ``webauthn`` package) does the verification: client data type, challenge,
origin, relying-party id hash, user presence, attestation ("none" is asked for and accepted:
a hospital does not vet authenticator makes), COSE public key and the signature over
``authenticatorData || SHA-256(clientDataJSON)``.  This module adds what the library leaves to
us: options bound to an account, single-use challenges that expire (:class:`Challenges`), the
stored credential (id, COSE public key, signature counter) and refusals as
:class:`~.errors.SignInRefused`.

A counter that does not grow (when either side is non-zero) means a cloned authenticator; the
library refuses it.  The WebAuthn user handle is a keyed hash of the account name, so the
authenticator never holds the name in a form that links accounts across nodes.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from typing import Final

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import parse_authentication_credential_json
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from ..clock import Clock
from ..errors import NodeUsageError
from .accounts import Account, Passkey
from .errors import SignInRefused

CHALLENGE_BYTES: Final = 32
CEREMONY_TIMEOUT_MS: Final = 120_000  # what the browser is told; the challenge lives as long
MAX_PASSKEYS: Final = 10
MAX_CREDENTIAL_JSON_BYTES: Final = 64 * 1024
MAX_PENDING_CHALLENGES: Final = 10_000


@dataclass(frozen=True)
class RelyingParty:
    """This node as a WebAuthn relying party: its id (a host name), a display name, its origins."""

    rp_id: str
    name: str
    origins: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.rp_id or not self.origins:
            raise NodeUsageError("a relying party has an id and at least one origin")


class Challenges:
    """Pending ceremony challenges, single use, expiring on the node's clock.

    Keyed by what the wiring binds the ceremony to (the SHA-256 of the session id), so a
    challenge issued to one session cannot be answered from another.
    """

    def __init__(self, clock: Clock, ttl_ms: int = CEREMONY_TIMEOUT_MS) -> None:
        self._clock, self.ttl_s = clock, ttl_ms / 1000
        self._pending: dict[bytes, tuple[str, bytes, float]] = {}

    def issue(self, key: bytes, purpose: str) -> bytes:
        """A fresh challenge for ``key`` (replacing any earlier one)."""
        now = self._clock.monotonic_s()
        if len(self._pending) >= MAX_PENDING_CHALLENGES:
            self._pending = {k: v for k, v in self._pending.items() if v[2] > now}
            if len(self._pending) >= MAX_PENDING_CHALLENGES:
                raise NodeUsageError("too many passkey ceremonies under way; try again later")
        challenge = secrets.token_bytes(CHALLENGE_BYTES)
        self._pending[key] = (purpose, challenge, now + self.ttl_s)
        return challenge

    def take(self, key: bytes, purpose: str) -> bytes:
        """The challenge issued for ``key`` and ``purpose``, removed; refused if none or expired."""
        entry = self._pending.pop(key, None)
        if entry is None or entry[0] != purpose or self._clock.monotonic_s() > entry[2]:
            raise SignInRefused()
        return entry[1]


def _descriptors(account: Account) -> list[PublicKeyCredentialDescriptor]:
    return [PublicKeyCredentialDescriptor(id=p.credential_id) for p in account.passkeys]


def _bounded(credential_json: str) -> str:
    if len(credential_json.encode("utf-8")) > MAX_CREDENTIAL_JSON_BYTES:
        raise SignInRefused()
    return credential_json


def registration_options(rp: RelyingParty, account: Account, user_handle: bytes, challenge: bytes) -> str:
    """The ``PublicKeyCredentialCreationOptions`` (JSON) for ``navigator.credentials.create``."""
    if len(account.passkeys) >= MAX_PASSKEYS:
        raise NodeUsageError(f"an account holds at most {MAX_PASSKEYS} passkeys")
    options = generate_registration_options(
        rp_id=rp.rp_id,
        rp_name=rp.name,
        user_name=account.name,
        user_id=user_handle,
        challenge=challenge,
        timeout=CEREMONY_TIMEOUT_MS,
        exclude_credentials=_descriptors(account),  # the same authenticator is not added twice
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=UserVerificationRequirement.PREFERRED,
        ),
    )
    return options_to_json(options)


def register(
    rp: RelyingParty, account: Account, credential_json: str, challenge: bytes, now_ms: int
) -> Account:
    """Verify the browser's answer to :func:`registration_options`; the account with the new passkey."""
    try:
        verified = verify_registration_response(
            credential=_bounded(credential_json),
            expected_challenge=challenge,
            expected_rp_id=rp.rp_id,
            expected_origin=list(rp.origins),
        )
    except (WebAuthnException, ValueError, KeyError, TypeError):
        raise SignInRefused() from None
    if any(p.credential_id == verified.credential_id for p in account.passkeys):
        raise SignInRefused()
    passkey = Passkey(verified.credential_id, verified.credential_public_key, verified.sign_count, now_ms)
    return replace(account, passkeys=(*account.passkeys, passkey))


def authentication_options(rp: RelyingParty, account: Account, challenge: bytes) -> str:
    """The ``PublicKeyCredentialRequestOptions`` (JSON) for ``navigator.credentials.get``."""
    if not account.passkeys:
        raise SignInRefused()
    options = generate_authentication_options(
        rp_id=rp.rp_id,
        challenge=challenge,
        timeout=CEREMONY_TIMEOUT_MS,
        allow_credentials=_descriptors(account),
        user_verification=UserVerificationRequirement.PREFERRED,
    )
    return options_to_json(options)


def authenticate(rp: RelyingParty, account: Account, credential_json: str, challenge: bytes) -> Account:
    """Verify an assertion by one of the account's passkeys; the account with its new counter."""
    try:
        credential = parse_authentication_credential_json(_bounded(credential_json))
    except (WebAuthnException, ValueError, KeyError, TypeError):
        raise SignInRefused() from None
    match = next((p for p in account.passkeys if p.credential_id == credential.raw_id), None)
    if match is None:
        raise SignInRefused()
    try:
        verified = verify_authentication_response(
            credential=credential,
            expected_challenge=challenge,
            expected_rp_id=rp.rp_id,
            expected_origin=list(rp.origins),
            credential_public_key=match.public_key,
            credential_current_sign_count=match.sign_count,
        )
    except (WebAuthnException, ValueError, KeyError, TypeError):
        raise SignInRefused() from None
    updated = replace(match, sign_count=verified.new_sign_count)
    return replace(account, passkeys=tuple(updated if p is match else p for p in account.passkeys))

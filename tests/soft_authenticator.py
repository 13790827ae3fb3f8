"""A software WebAuthn authenticator (ES256, "none" attestation) for tests of passkey ceremonies.

It builds what a browser hands back from ``navigator.credentials.create`` and ``.get``: the
client data JSON, the authenticator data (RP id hash, flags, counter, and at registration the
attested credential with its COSE key) and, at authentication, an ECDSA P-256 signature over
``authenticatorData || SHA-256(clientDataJSON)``, as WebAuthn Level 2 sections 6.1, 6.5 and 7
describe.  Knobs let a test forge each part.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import struct
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

UP, UV, AT = 0x01, 0x04, 0x40


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _challenge_of(options_json: str) -> bytes:
    text = json.loads(options_json)["challenge"]
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class SoftAuthenticator:
    """One ES256 credential for one relying party."""

    rp_id: str
    origin: str
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    credential_id: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    sign_count: int = 0

    def _cose_key(self) -> bytes:
        numbers = self.key.public_key().public_numbers()
        return cbor2.dumps(
            {1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big")}
        )

    def _client_data(self, kind: str, challenge: bytes, origin: str | None) -> bytes:
        value = {
            "type": kind,
            "challenge": b64url(challenge),
            "origin": origin or self.origin,
            "crossOrigin": False,
        }
        return json.dumps(value).encode("utf-8")

    def _auth_data(self, flags: int, rp_id: str | None, attested: bytes = b"") -> bytes:
        rp_hash = hashlib.sha256((rp_id or self.rp_id).encode("utf-8")).digest()
        return rp_hash + bytes([flags]) + struct.pack(">I", self.sign_count) + attested

    def create(self, options_json: str, *, origin: str | None = None, rp_id: str | None = None) -> str:
        """The registration credential JSON answering ``options_json``."""
        challenge = _challenge_of(options_json)
        attested = (
            bytes(16) + struct.pack(">H", len(self.credential_id)) + self.credential_id + self._cose_key()
        )
        auth_data = self._auth_data(UP | UV | AT, rp_id, attested)
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return json.dumps(
            {
                "id": b64url(self.credential_id),
                "rawId": b64url(self.credential_id),
                "type": "public-key",
                "response": {
                    "clientDataJSON": b64url(self._client_data("webauthn.create", challenge, origin)),
                    "attestationObject": b64url(attestation),
                },
            }
        )

    def get(
        self,
        options_json: str,
        *,
        origin: str | None = None,
        rp_id: str | None = None,
        count_step: int = 1,
        key: ec.EllipticCurvePrivateKey | None = None,
    ) -> str:
        """The authentication credential JSON answering ``options_json`` (the counter moves on)."""
        challenge = _challenge_of(options_json)
        self.sign_count += count_step
        client_data = self._client_data("webauthn.get", challenge, origin)
        auth_data = self._auth_data(UP | UV, rp_id)
        signer = key or self.key
        signature = signer.sign(auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256()))
        response: dict[str, Any] = {
            "clientDataJSON": b64url(client_data),
            "authenticatorData": b64url(auth_data),
            "signature": b64url(signature),
        }
        return json.dumps(
            {
                "id": b64url(self.credential_id),
                "rawId": b64url(self.credential_id),
                "type": "public-key",
                "response": response,
            }
        )

"""TLS for the data plane: self-signed Ed25519 certificates and public-key pinning.

Members know each other by their Ed25519 signing keys (the genesis and later
membership records), not by names a certificate authority could vouch for.  So:

* each node serves a **self-signed X.509 certificate made with its own node key**
  (:func:`make_certificate`); TLS 1.3 signs the handshake with that key, which
  proves the server holds it;
* clients skip CA and host-name checks and instead **pin the public key**: after
  the handshake, the key in the peer's certificate must equal the member's sign
  key (:class:`KeyPin`).  A server with any other key is refused before a single
  request byte (and so before any capability) is sent.

:class:`KeyPin` plugs into aiohttp through its public ``ssl=`` argument: aiohttp
calls ``check(transport)`` on every new TLS connection, right after the
handshake and before the request is written (it is how aiohttp's own certificate
fingerprints work).  :func:`peer_sign_key` reads the key of a live connection for
a second look.

The private key reaches OpenSSL through a PEM file encrypted under a random
one-time password in a private temporary directory that is removed at once
(``ssl`` loads certificates from files only): nothing usable is ever on disk.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import secrets
import ssl
import tempfile
from pathlib import Path
from typing import Any, Final

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID

from mftp.crypto.signing import PUBLIC_KEY_BYTES, SigningIdentity

from ..clock import SYSTEM_CLOCK
from ..errors import NodeInputError, NodeUsageError

CERT_VALIDITY_DAYS: Final = 3650
"""Certificates are pinned by key, never by date, so they simply last long."""


class PeerKeyMismatch(NodeInputError, aiohttp.ServerFingerprintMismatch):
    """The server's TLS key is not the member key we expected: the connection is refused."""

    def __init__(self, expected: bytes, got: bytes | None, host: str, port: int) -> None:
        aiohttp.ServerFingerprintMismatch.__init__(self, expected, got or b"", host, port)
        self.expected_key = expected
        self.got_key = got

    def __str__(self) -> str:
        got = self.got_key.hex()[:16] if self.got_key else "no Ed25519 key"
        return (
            f"data plane {self.host}:{self.port} presented key {got}..., "
            f"expected member key {self.expected_key.hex()[:16]}...: connection refused"
        )


def make_certificate(identity: SigningIdentity, *, now: datetime.datetime | None = None) -> x509.Certificate:
    """A self-signed certificate for the node's Ed25519 key (subject names the node id)."""
    key = _private_key(identity)
    now = now or datetime.datetime.fromtimestamp(SYSTEM_CLOCK.now_ms() / 1000, datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"mftp-node {identity.public.node_id.hex()}")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=CERT_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, algorithm=None)  # Ed25519 has its hash built in
    )


def server_ssl_context(identity: SigningIdentity) -> ssl.SSLContext:
    """A TLS 1.3-only server context presenting the node's self-signed Ed25519 certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    cert_pem = make_certificate(identity).public_bytes(serialization.Encoding.PEM)
    password = secrets.token_bytes(32)
    key_pem = _private_key(identity).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    with tempfile.TemporaryDirectory(prefix="mftp-tls-") as tmp:  # mode 0700
        cert_path = Path(tmp) / "cert.pem"
        key_path = Path(tmp) / "key.pem"
        cert_path.write_bytes(cert_pem)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key_pem)
        context.load_cert_chain(cert_path, key_path, password=password)
    return context


def certificate_sign_key(der: bytes) -> bytes | None:
    """The raw Ed25519 key of a DER certificate, or ``None`` if it holds another kind of key."""
    try:
        public = x509.load_der_x509_certificate(der).public_key()
    except ValueError:
        return None
    if not isinstance(public, Ed25519PublicKey):
        return None
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def peer_sign_key(transport: asyncio.BaseTransport | None) -> bytes | None:
    """The Ed25519 key in the peer certificate of a TLS transport (``None`` if none)."""
    if transport is None:
        return None
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return certificate_sign_key(der) if der else None


class KeyPin(aiohttp.Fingerprint):
    """Pass as ``ssl=`` to aiohttp: accept only a TLS server whose certificate key is ``sign_key``.

    aiohttp's fingerprint hook runs on each new connection after the TLS handshake
    and before the request is sent; this one compares the certificate's *public
    key* rather than a hash of the certificate, so a node may re-issue its
    certificate (it does at every start) without breaking the pin.
    """

    def __init__(self, sign_key: bytes) -> None:
        if not isinstance(sign_key, bytes) or len(sign_key) != PUBLIC_KEY_BYTES:
            raise NodeUsageError("a pinned key is a 32-byte Ed25519 public key")
        super().__init__(sign_key)  # 32 bytes satisfies the base class; only check() matters
        self.sign_key = sign_key

    def check(self, transport: Any) -> None:
        """Raise :class:`PeerKeyMismatch` unless the peer proved possession of the pinned key."""
        got = peer_sign_key(transport)
        if got is None or not secrets.compare_digest(got, self.sign_key):
            peer = transport.get_extra_info("peername") or ("?", 0)
            raise PeerKeyMismatch(self.sign_key, got, str(peer[0]), int(peer[1]))


def _private_key(identity: SigningIdentity) -> Ed25519PrivateKey:
    # The Ed25519 seed is the private key in RFC 8032 form, the same in pynacl and cryptography.
    return Ed25519PrivateKey.from_private_bytes(identity.seed)

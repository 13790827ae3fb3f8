"""TLS of the data plane (mftp.node.dataplane.tls): Ed25519 self-signed certificates, key pinning."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from mftp.node.dataplane.server import DataPlaneServer, fetch_transfer
from mftp.node.dataplane.tls import KeyPin, PeerKeyMismatch, certificate_sign_key, make_certificate
from mftp.node.errors import NodeInputError
from tests.node.dataplane.helpers import make_transfer
from tests.transfer.package_helpers import RECIPIENT, SENDER, STRANGER


def test_certificate_carries_the_node_key() -> None:
    cert = make_certificate(SENDER)
    public = cert.public_key()
    assert isinstance(public, Ed25519PublicKey)
    der = cert.public_bytes(serialization.Encoding.DER)
    assert certificate_sign_key(der) == SENDER.public.sign_key
    assert cert.issuer == cert.subject
    # Self-signed: the signature verifies under the node key itself.
    public.verify(cert.signature, cert.tbs_certificate_bytes)
    assert SENDER.public.node_id.hex() in cert.subject.rfc4514_string()
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


async def test_a_server_with_another_key_is_refused_before_any_request(tmp_path: Path) -> None:
    transfer = make_transfer(tmp_path, large=1, large_bytes=200_000, chunk_bytes=64 * 1024)
    # An impostor serves the sender's objects under its own key (say, after a DNS hijack).
    async with DataPlaneServer(transfer.sender_store, STRANGER) as impostor:
        with pytest.raises(PeerKeyMismatch) as info:
            await fetch_transfer(
                transfer.manifest,
                transfer.receiver_store,
                impostor.url,
                RECIPIENT,
                transfer.capability,
                retries=3,
            )
        assert isinstance(info.value, NodeInputError)
        assert info.value.got_key == STRANGER.public.sign_key
        assert "expected member key" in str(info.value)
        assert impostor.stats["requests"] == 0  # the capability never left the client


async def test_the_server_speaks_tls13_with_its_node_key() -> None:
    async with DataPlaneServer(_EmptyStore(), SENDER) as server:  # type: ignore[arg-type]
        _, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=_client_context())
        try:
            ssl_object = writer.get_extra_info("ssl_object")
            assert ssl_object.version() == "TLSv1.3"
            assert certificate_sign_key(ssl_object.getpeercert(binary_form=True)) == SENDER.public.sign_key
        finally:
            writer.close()
        pin, url = KeyPin(SENDER.public.sign_key), server.url + "/v1/health"
        async with aiohttp.ClientSession() as session, session.get(url, ssl=pin) as resp:
            assert resp.status == 200


def _client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def test_older_tls_and_plain_http_are_refused() -> None:
    async with DataPlaneServer(_EmptyStore(), SENDER) as server:  # type: ignore[arg-type]
        context = _client_context()
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=context)
            writer.close()
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{server.port}/v1/health") as resp:
                    await resp.read()


def test_pin_needs_a_key() -> None:
    with pytest.raises(ValueError):
        KeyPin(b"short")


class _EmptyStore:
    """Enough of a BlobStore for endpoints that never touch it."""

    root = Path("/nonexistent")

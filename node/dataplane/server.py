"""The node's HTTPS data plane: encrypted objects served by byte range to capability holders.

Endpoints (aiohttp, TLS 1.3 with the node's self-signed Ed25519 certificate, see :mod:`.tls`):

Who is who: the fetching member pins this server's TLS key to the sender's member key
(:class:`~.tls.KeyPin`), and this server checks the fetching member's signature over each
request (below).  That is mutual authentication by the members' chain keys, per request rather
than per connection; the server asks for no TLS client certificate, because a certificate would
add only a second proof of the same key, and the standard library cannot check a self-signed
client certificate against a list of member keys without a certificate file per member.

``GET /v1/objects/{object_id}`` (and ``HEAD``)
    ``object_id`` is 64 lowercase hex digits.  With ``Range: bytes=a-b`` (also ``a-``
    and ``-n``; one range only) the answer is ``206`` with ``Content-Range``; without
    it ``200`` and the whole object.  Objects are immutable ciphertext, so every
    answer carries ``ETag: "<object id>"`` and ``Cache-Control: public,
    max-age=31536000, immutable``: any cache may keep them.  ``416`` for a range
    that is malformed, multiple or past the end; ``404`` for an unknown object.

``GET /v1/transfers/{transfer_id}/manifest``
    The sealed manifest (``transfer_id`` 32 hex digits), for a capability of that
    transfer: offers of big studies need not carry it in one p2p message.

A transfer its sender abandoned (:meth:`DataPlaneServer.abandon_transfer`) answers ``410``.

``GET /v1/health``
    ``{"ok": true}``, without authorization.

Every object and manifest request needs ``Authorization: MFTP-Cap ...`` (see
:mod:`mftp.transfer.capability`): a capability signed by *this* node, unexpired,
for the transfer holding the object, with a fresh proof by the recipient's key
over this very request.  Refusals are ``401`` (missing or malformed) or ``403``
(refused) with a JSON body ``{"error": reason, "message": text}``, counted in
:attr:`DataPlaneServer.stats` and logged without identities.

Limits: request line and header fields 4 KiB, 32 header fields, at most
``max_concurrent_requests`` requests at once (beyond that ``503`` with
``Retry-After``), proofs remembered for twice the clock skew window.  The file is
streamed in 1 MiB pieces read in a worker thread, so memory per request is bounded
whatever the range.

The fetching side is :func:`fetch_manifest` and :func:`fetch_transfer` (:mod:`.client`).

How a transfer is wired, in order::

    # sender
    store = BlobStore(data_dir)
    packager = Packager(sender=me.public, recipient=peer, transfer_id=..., created_ms=now_ms,
                        storage_key=storage_key_for(me), sink_factory=store.object_writer,
                        chunk_bytes=config transfer.chunk_bytes)
    for meta, compressed in study:
        packager.add(meta, compressed)     # on failure: store.delete(oid) for oid in packager.committed
    result = packager.finish()
    store.put_record(f"local-{tid}", seal_local_record(result, storage_key_for(me)))
    sealed = seal_manifest(result.manifest, me)
    server.register_transfer(result.manifest, sealed)                # server = DataPlaneServer(store, me)
    capability = issue_capability(me, recipient=peer.sign_key, transfer_id=tid,
                                  manifest_sha256=result.manifest.sha256, now_ms=now_ms)
    # offer on p2p: {capability.token, data_url, sealed (if small)}

    # recipient
    capability = decode_capability(token)       # sender: the offering member's PublicIdentity
    manifest = open_manifest(sealed, me, sender=sender)
    # or, for a big study: manifest, sealed = await fetch_manifest(url, me, capability, sender=sender)
    await fetch_transfer(manifest, store, url, me, capability, parallel=..., timeout_ms=..., retries=...)
    for entry in manifest.entries:
        compressed = store.read_entry(manifest, entry, identity=me)
        original = codec.decompress(compressed, max_output_bytes=entry.size)
        check_restored(entry, original)                              # then export it
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import ssl
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

from aiohttp import web

from mftp.crypto.signing import SigningIdentity
from mftp.transfer.capability import (
    DEFAULT_SKEW_MS,
    AuthError,
    Capability,
    ReplayCache,
    authorize,
    check_object,
    check_transfer,
)
from mftp.transfer.errors import TransferInputError
from mftp.transfer.manifest import Manifest, sealed_manifest_header

from ..clock import SYSTEM_CLOCK
from ..errors import NodeUsageError
from .blobstore import READ_PIECE_BYTES, BlobStore
from .client import CapabilityRefused, FetchFailed, FetchResult, fetch_manifest, fetch_transfer
from .tls import server_ssl_context

__all__ = [
    "CapabilityRefused",
    "DataPlaneServer",
    "FetchFailed",
    "FetchResult",
    "RangeNotSatisfiable",
    "fetch_manifest",
    "fetch_transfer",
    "parse_range",
]

log = logging.getLogger("mftp.dataplane")

OBJECT_PATH: Final = "/v1/objects/{object_id}"
MANIFEST_PATH: Final = "/v1/transfers/{transfer_id}/manifest"
CACHE_CONTROL: Final = "public, max-age=31536000, immutable"
MAX_HEADER_LINE_BYTES: Final = 4096
MAX_HEADER_FIELDS: Final = 32
DEFAULT_MAX_CONCURRENT_REQUESTS: Final = 64
MAX_SERVED_CACHE: Final = 1024
SHUTDOWN_TIMEOUT_S: Final = 5.0
"""How long :meth:`DataPlaneServer.stop` lets requests in progress finish."""
_HEX_ID: Final = re.compile(r"[0-9a-f]{64}")
_HEX_TRANSFER: Final = re.compile(r"[0-9a-f]{32}")
_RANGE: Final = re.compile(r"bytes=(\d{0,19})-(\d{0,19})")


class RangeNotSatisfiable(Exception):
    """The Range header is malformed, asks for several ranges, or lies past the end."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end)`` (end exclusive) asked by a Range header, or ``None`` for the whole object."""
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if not match or not (match[1] or match[2]):
        raise RangeNotSatisfiable("expected one range 'bytes=a-b', 'bytes=a-' or 'bytes=-n'")
    if not match[1]:  # suffix: the last n bytes
        length = int(match[2])
        if length == 0:
            raise RangeNotSatisfiable("empty suffix range")
        return max(size - length, 0), size
    start = int(match[1])
    end = int(match[2]) + 1 if match[2] else size
    if start >= size or end <= start:
        raise RangeNotSatisfiable(f"range {header} outside an object of {size} bytes")
    return start, min(end, size)


def _error(status: int, reason: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = json.dumps({"error": reason, "message": message})
    return web.Response(status=status, text=body, content_type="application/json", headers=headers)


class DataPlaneServer:
    """Serve this node's objects over HTTPS to holders of capabilities it issued.

    ``register_transfer`` (after packaging) makes a transfer's objects servable;
    the record is kept in the blob store, so a restarted node serves it again.
    """

    def __init__(
        self,
        store: BlobStore,
        identity: SigningIdentity,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        skew_ms: int = DEFAULT_SKEW_MS,
        max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS,
        clock_ms: Callable[[], int] = SYSTEM_CLOCK.now_ms,
        record_requests: bool = False,
    ) -> None:
        self.store = store
        self.identity = identity
        self._host = host
        self._port = port
        self._ssl = ssl_context or server_ssl_context(identity)
        self._skew_ms = skew_ms
        self._max_requests = max_concurrent_requests
        self._active = 0
        self._clock = clock_ms
        self._replay = ReplayCache(window_ms=2 * skew_ms)
        self._served: OrderedDict[bytes, tuple[bytes, frozenset[bytes]] | None] = OrderedDict()
        self._runner: web.AppRunner | None = None
        self.stats: Counter[str] = Counter()
        self.record_requests = record_requests
        self.range_requests: Counter[tuple[bytes, int]] = Counter()
        """With ``record_requests``: requests per ``(object id, range start)`` (diagnostics, tests)."""

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Listen on ``host:port`` (port 0 picks a free one, see :attr:`port`)."""
        if self._runner is not None:
            raise NodeUsageError("data plane already started")
        app = web.Application()
        app.router.add_get(OBJECT_PATH, self._handle_object)
        app.router.add_get(MANIFEST_PATH, self._handle_manifest)
        app.router.add_get("/v1/health", self._handle_health)
        runner = web.AppRunner(
            app,
            access_log=None,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
            # Passed through to aiohttp's RequestHandler: the HTTP parser's limits.
            max_line_size=MAX_HEADER_LINE_BYTES,
            max_field_size=MAX_HEADER_LINE_BYTES,
            max_headers=MAX_HEADER_FIELDS,
        )
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port, ssl_context=self._ssl, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        if self._port == 0:
            self._port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> DataPlaneServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The TCP port (known after :meth:`start` when 0 was asked)."""
        return self._port

    @property
    def url(self) -> str:
        """Base URL for :func:`fetch_transfer`."""
        return f"https://{self._host}:{self._port}"

    # ----------------------------------------------------------------- transfers

    def register_transfer(self, manifest: Manifest, sealed_manifest: bytes | None = None) -> None:
        """Serve ``manifest``'s objects to holders of capabilities for it (persisted; blocks on disk).

        With ``sealed_manifest`` (from :func:`~mftp.transfer.manifest.seal_manifest`) the
        recipient may also fetch the manifest itself (:func:`fetch_manifest`), for
        offers too large for one p2p message.
        """
        if manifest.sender != self.identity.public.sign_key:
            raise NodeUsageError("only transfers this node sent can be served")
        if sealed_manifest is not None:
            try:
                header = sealed_manifest_header(sealed_manifest)
            except TransferInputError as exc:
                raise NodeUsageError(f"not a sealed manifest: {exc}") from None
            if header != {"transfer_id": manifest.transfer_id, "sender": manifest.sender,
                          "recipient": manifest.recipient}:  # fmt: skip
                raise NodeUsageError("sealed manifest is not this manifest's")
        # What may be fetched first, then the manifest that names it: a recipient reading the new
        # (streaming) manifest must find every object it lists already servable.  This runs in a
        # worker thread beside the handlers.
        self.store.save_served(manifest)
        served = (manifest.sha256, frozenset(o.object_id for o in manifest.objects))
        self._remember(manifest.transfer_id, served)
        if sealed_manifest is not None:
            self.store.put_record(_sealed_record(manifest.transfer_id), sealed_manifest)

    def abandon_transfer(self, transfer_id: bytes) -> None:
        """Stop serving a transfer its sender gave up (persisted): requests for it get ``410``.

        A recipient fetching a study still being prepared learns at once that it will never
        be complete, instead of retrying until its capability expires.
        """
        self.store.put_record(_abandoned_record(transfer_id), b"abandoned")
        self.store.delete_record(f"served-{transfer_id.hex()}")
        self.store.delete_record(_sealed_record(transfer_id))
        self._remember(transfer_id, None)

    def _gone(self, transfer_id: bytes) -> web.Response | None:
        if self.store.get_record(_abandoned_record(transfer_id)) is None:
            return None
        self.stats["gone"] += 1
        return _error(410, "abandoned", "the sender abandoned this transfer; it will not be complete")

    def _remember(self, transfer_id: bytes, served: tuple[bytes, frozenset[bytes]] | None) -> None:
        self._served[transfer_id] = served
        self._served.move_to_end(transfer_id)
        while len(self._served) > MAX_SERVED_CACHE:
            self._served.popitem(last=False)

    async def _lookup(self, transfer_id: bytes) -> tuple[bytes, frozenset[bytes]] | None:
        if transfer_id in self._served:
            self._served.move_to_end(transfer_id)
            return self._served[transfer_id]
        # Only capabilities this node signed get here, so unknown ids cannot flood the cache.
        served = await asyncio.to_thread(self.store.load_served, transfer_id)
        if transfer_id in self._served:  # registered (or abandoned) while we read: that is newer
            return self._served[transfer_id]
        self._remember(transfer_id, served)
        return served

    # ----------------------------------------------------------------- handlers

    async def _handle_health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _handle_object(self, request: web.Request) -> web.StreamResponse:
        return await self._limited(self._serve_object, request)

    async def _handle_manifest(self, request: web.Request) -> web.StreamResponse:
        return await self._limited(self._serve_manifest, request)

    async def _limited(
        self, handler: Callable[[web.Request], Awaitable[web.StreamResponse]], request: web.Request
    ) -> web.StreamResponse:
        self.stats["requests"] += 1
        if self._active >= self._max_requests:
            self.stats["busy"] += 1
            return _error(503, "busy", "too many concurrent requests", {"Retry-After": "1"})
        self._active += 1
        try:
            return await handler(request)
        finally:
            self._active -= 1

    async def _authorize(
        self, request: web.Request
    ) -> tuple[Capability, tuple[bytes, frozenset[bytes]] | None]:
        """The request's verified capability and the served record of its transfer (AuthError if refused)."""
        capability = authorize(
            request.headers.get("Authorization"),
            method=request.method,
            path=request.rel_url.raw_path,
            range_header=request.headers.get("Range") or "",
            server=self.identity.public,
            now_ms=self._clock(),
            skew_ms=self._skew_ms,
            replay=self._replay,
        )
        return capability, await self._lookup(capability.transfer_id)

    def _refuse(self, exc: AuthError) -> web.Response:
        self.stats["refused"] += 1
        self.stats[f"refused_{exc.reason}"] += 1
        log.warning("data plane refused a request", extra={"status": exc.status, "reason": exc.reason})
        return _error(exc.status, exc.reason, str(exc))

    async def _serve_object(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["object_id"]
        if not _HEX_ID.fullmatch(name):
            self.stats["bad_request"] += 1
            return _error(400, "bad-object-id", "object id must be 64 lowercase hex digits")
        object_id = bytes.fromhex(name)
        try:
            capability, served = await self._authorize(request)
            if served is None and (gone := self._gone(capability.transfer_id)) is not None:
                return gone
            check_object(
                capability,
                object_id,
                manifest_sha256=served[0] if served else None,
                objects=served[1] if served else frozenset(),
            )
        except AuthError as exc:
            return self._refuse(exc)
        headers = {"ETag": f'"{name}"', "Cache-Control": CACHE_CONTROL}
        return await self._send(request, self.store.path_of(object_id), headers, object_id)

    async def _serve_manifest(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["transfer_id"]
        if not _HEX_TRANSFER.fullmatch(name):
            self.stats["bad_request"] += 1
            return _error(400, "bad-transfer-id", "transfer id must be 32 lowercase hex digits")
        try:
            capability, served = await self._authorize(request)
            if served is None and (gone := self._gone(capability.transfer_id)) is not None:
                return gone
            check_transfer(capability, bytes.fromhex(name), manifest_sha256=served[0] if served else None)
        except AuthError as exc:
            return self._refuse(exc)
        path = self.store.record_path(_sealed_record(capability.transfer_id))
        return await self._send(request, path, {"Cache-Control": "no-store"}, None)

    async def _send(
        self, request: web.Request, path: Path, headers: dict[str, str], object_id: bytes | None
    ) -> web.StreamResponse:
        try:
            fd = await asyncio.to_thread(os.open, path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            self.stats["not_found"] += 1
            return _error(404, "not-found", "this node does not hold it")
        try:
            size = os.fstat(fd).st_size
            try:
                span = parse_range(request.headers.get("Range"), size)
            except RangeNotSatisfiable as exc:
                self.stats["bad_range"] += 1
                return _error(416, "bad-range", str(exc), {"Content-Range": f"bytes */{size}"})
            start, end = span or (0, size)
            if self.record_requests and object_id is not None:
                self.range_requests[(object_id, start)] += 1
            response = web.StreamResponse(status=206 if span else 200, headers=headers)
            response.headers.update({"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"})
            if span:
                response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
            response.content_length = end - start
            try:
                await response.prepare(request)
                if request.method != "HEAD":
                    await self._stream(response, fd, start, end)
                await response.write_eof()
            except ConnectionError:  # the client went away (or its link dropped): its loss, not ours
                self.stats["aborted"] += 1
                return response
            self.stats["served"] += 1
            return response
        finally:
            os.close(fd)

    async def _stream(self, response: web.StreamResponse, fd: int, start: int, end: int) -> None:
        position = start
        while position < end:
            piece = await asyncio.to_thread(os.pread, fd, min(READ_PIECE_BYTES, end - position), position)
            if not piece:  # objects are immutable; a short read means the disk lost it
                raise ConnectionError("object shorter than its size")
            await response.write(piece)
            position += len(piece)
            self.stats["bytes_sent"] += len(piece)


def _sealed_record(transfer_id: bytes) -> str:
    return f"sealed-manifest-{transfer_id.hex()}"


def _abandoned_record(transfer_id: bytes) -> str:
    return f"abandoned-{transfer_id.hex()}"

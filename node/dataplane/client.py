"""Fetching a transfer from a sender's data plane: parallel, verified, resumable.

:func:`fetch_transfer` downloads every object of a manifest into the recipient's
:class:`~.blobstore.BlobStore`:

* ``parallel`` workers (fewer if ``parallel * chunk_bytes`` would exceed
  ``memory_budget_bytes``) take chunks from a :class:`~mftp.transfer.fetchplan.FetchPlan`
  and fetch each with one ``GET /v1/objects/{id}`` + ``Range``, through a TLS
  connection pinned to the sender's member key (:class:`~.tls.KeyPin`);
* each attempt has its own timeout (``timeout_ms``) and a fresh capability proof;
  failures (connection lost, timeout, 5xx, a short or wrong chunk) are retried up
  to ``retries`` times with exponential backoff and full jitter;
* a chunk is accepted only when its SHA-256 matches the manifest, then written at
  its offset and recorded in the persisted fetch state; an object whose chunks are
  all in is checked against its id and moved into place;
* a refused capability (401/403, e.g. expired) or a pin mismatch stops at once
  (:class:`CapabilityRefused`, :class:`~.tls.PeerKeyMismatch`): retrying cannot help.

Anything that stops a fetch (an error, a cancel, a crash) leaves every verified
chunk on disk; calling :func:`fetch_transfer` again, in this process or after a
restart, fetches only what is missing.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import aiohttp

from mftp.crypto.signing import PublicIdentity, SigningIdentity
from mftp.transfer.capability import Capability, authorization_header, covers_manifest
from mftp.transfer.errors import TransferInputError
from mftp.transfer.fetchplan import ChunkRef, FetchPlan, backoff_ms, verify_chunk
from mftp.transfer.manifest import DEFAULT_LIMITS, Manifest, ManifestLimits, ObjectInfo, open_manifest

from ..clock import SYSTEM_CLOCK
from ..errors import NodeInputError, NodeUsageError
from .blobstore import BlobStore, PartialObject
from .tls import KeyPin, PeerKeyMismatch

DEFAULT_MEMORY_BUDGET_BYTES: Final = 256 << 20
MAX_ERROR_BODY_BYTES: Final = 4096

Progress = Callable[[int, int], None]
"""``progress(done_bytes, total_bytes)`` after each verified chunk (ciphertext bytes)."""

T = TypeVar("T")


class CapabilityRefused(NodeInputError):
    """The sender refused our capability (``reason``: ``expired``, ``bad-proof``...): get a new one."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"sender refused the capability ({status} {reason}): {message}")
        self.status = status
        self.reason = reason


class FetchFailed(NodeInputError):
    """A chunk could not be fetched (after every retry, or for a reason no retry fixes)."""


class _Retryable(Exception):
    """One attempt failed in a way another attempt may not."""


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What one :func:`fetch_transfer` call did."""

    fetched_bytes: int
    fetched_chunks: int
    resumed_bytes: int
    retries: int
    rejected_chunks: int
    seconds: float


async def fetch_transfer(
    manifest: Manifest,
    store: BlobStore,
    peer_url: str,
    identity: SigningIdentity,
    capability: Capability,
    *,
    parallel: int = 4,
    timeout_ms: int = 30_000,
    retries: int = 5,
    progress: Progress | None = None,
    peer_sign_key: bytes | None = None,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
    rng: Callable[[], float] | None = None,
    clock_ms: Callable[[], int] = SYSTEM_CLOCK.now_ms,
    session: aiohttp.ClientSession | None = None,
) -> FetchResult:
    """Fetch every missing object of ``manifest`` from ``peer_url`` into ``store``.

    ``peer_sign_key`` (default: the manifest's sender) is the key the server's TLS
    certificate must carry.  Returns when every object is complete in the store.
    """
    if capability.recipient != identity.public.sign_key or capability.sender != manifest.sender:
        raise NodeUsageError("capability is not from this manifest's sender to this node")
    if not covers_manifest(capability, manifest.sha256) or capability.transfer_id != manifest.transfer_id:
        raise NodeUsageError("capability is for another manifest")
    if parallel < 1 or timeout_ms < 1 or retries < 0:
        raise NodeUsageError("parallel and timeout_ms must be positive, retries not negative")
    fetcher = _Fetcher(
        manifest,
        store,
        peer_url.rstrip("/"),
        identity,
        capability,
        pin=KeyPin(peer_sign_key or manifest.sender),
        timeout_s=timeout_ms / 1000,
        retries=retries,
        progress=progress,
        rng=rng or random.Random().random,
        clock_ms=clock_ms,
    )
    largest = max((obj.chunk_bytes for obj in manifest.objects), default=1)
    workers = max(1, min(parallel, memory_budget_bytes // largest))
    started = SYSTEM_CLOCK.monotonic_s()
    own_session = session is None
    if session is None:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=workers),
            timeout=aiohttp.ClientTimeout(total=None),
        )
    try:
        await fetcher.run(session, workers)
    finally:
        if own_session:
            await session.close()
    return fetcher.result(SYSTEM_CLOCK.monotonic_s() - started)


class _Fetcher:
    """The state of one fetch_transfer call."""

    def __init__(
        self,
        manifest: Manifest,
        store: BlobStore,
        base_url: str,
        identity: SigningIdentity,
        capability: Capability,
        *,
        pin: KeyPin,
        timeout_s: float,
        retries: int,
        progress: Progress | None,
        rng: Callable[[], float],
        clock_ms: Callable[[], int],
    ) -> None:
        self.manifest = manifest
        self.store = store
        self.base_url = base_url
        self.identity = identity
        self.capability = capability
        self.pin = pin
        self.timeout_s = timeout_s
        self.retries = retries
        self.progress = progress
        self.rng = rng
        self.clock_ms = clock_ms
        self.plan: FetchPlan | None = None
        self.partials: dict[bytes, PartialObject] = {}
        self._opening: dict[bytes, asyncio.Future[PartialObject]] = {}
        self._disk_tasks: set[asyncio.Task[Any]] = set()
        self.fetched_bytes = 0
        self.fetched_chunks = 0
        self.resumed_bytes = 0
        self.counters = _Counters()

    def result(self, seconds: float) -> FetchResult:
        return FetchResult(
            self.fetched_bytes,
            self.fetched_chunks,
            self.resumed_bytes,
            self.counters.retries,
            self.counters.rejected,
            seconds,
        )

    async def run(self, session: aiohttp.ClientSession, workers: int) -> None:
        try:
            plan = self.plan = await self._disk(self._load_plan)
            self.resumed_bytes = plan.done_bytes
            self._report()
            tasks = [asyncio.create_task(self._worker(session, plan)) for _ in range(workers)]
            try:
                await asyncio.gather(*tasks)
            except BaseException:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        finally:
            # Let opens and writes already started finish before their files are closed.
            if self._opening:
                await asyncio.gather(*self._opening.values(), return_exceptions=True)
            if self._disk_tasks:
                await asyncio.gather(*self._disk_tasks, return_exceptions=True)
            for partial in self.partials.values():
                partial.close()
            self.partials.clear()

    def _load_plan(self) -> FetchPlan:
        """Build the plan from the store: complete objects, and verified chunks of started ones."""
        complete, progress = [], []
        for obj in self.manifest.objects:
            if self.store.size_of(obj.object_id) == obj.size:
                complete.append(obj.object_id)
            elif self.store.has_partial(obj.object_id):
                partial = self.store.open_partial(obj)
                if partial.progress.complete:  # stopped between its last chunk and finalize
                    partial.finalize()
                    complete.append(obj.object_id)
                    continue
                self.partials[obj.object_id] = partial
                progress.append(partial.progress.copy())
        return FetchPlan(self.manifest, complete=complete, progress=progress)

    async def _disk(self, function: Callable[..., T], *args: Any) -> T:
        """Run blocking disk work in a thread; it completes even if this task is cancelled."""
        task = asyncio.ensure_future(asyncio.to_thread(function, *args))
        self._disk_tasks.add(task)
        task.add_done_callback(self._disk_tasks.discard)
        return await asyncio.shield(task)

    def _report(self) -> None:
        if self.progress is not None and self.plan is not None:
            self.progress(self.plan.done_bytes, self.plan.total_bytes)

    async def _worker(self, session: aiohttp.ClientSession, plan: FetchPlan) -> None:
        while True:
            refs = plan.claim(1)
            if not refs:
                return  # the rest is verified or in other workers' hands
            ref = refs[0]
            obj = self.manifest.object(ref.object_id)
            data = await self._fetch_with_retries(session, obj, ref)
            partial = await self._partial(obj)
            await self._disk(partial.write_chunk, ref, data)
            del data
            self.fetched_bytes += ref.length
            self.fetched_chunks += 1
            # The plan, updated in loop order after each write returned, says when all are in.
            if plan.record_verified(ref):
                self.partials.pop(obj.object_id, None)
                await self._disk(partial.finalize)
                plan.mark_complete(obj.object_id)
            self._report()

    async def _partial(self, obj: ObjectInfo) -> PartialObject:
        partial = self.partials.get(obj.object_id)
        if partial is not None:
            return partial
        opening = self._opening.get(obj.object_id)
        if opening is None:  # the first worker on this object opens it; the others wait
            opening = self._opening[obj.object_id] = asyncio.ensure_future(self._open(obj))
        return await asyncio.shield(opening)

    async def _open(self, obj: ObjectInfo) -> PartialObject:
        # Registers the partial itself, so it is closed at the end even if its waiters were cancelled.
        try:
            partial = await self._disk(self.store.open_partial, obj)
            self.partials[obj.object_id] = partial
            return partial
        finally:
            self._opening.pop(obj.object_id, None)

    async def _fetch_with_retries(
        self, session: aiohttp.ClientSession, obj: ObjectInfo, ref: ChunkRef
    ) -> bytes:
        async def attempt() -> bytes:
            data = await self._get(session, obj, ref)
            await self._disk(verify_chunk, obj, ref, data)  # hashing 4 MiB off the event loop
            return data

        what = f"object {ref.object_id.hex()[:16]} chunk {ref.index}"
        return await _retrying(attempt, self.counters, retries=self.retries, timeout_s=self.timeout_s,
                               rng=self.rng, what=what)  # fmt: skip

    async def _get(self, session: aiohttp.ClientSession, obj: ObjectInfo, ref: ChunkRef) -> bytes:
        path = f"/v1/objects/{ref.object_id.hex()}"
        authorization = authorization_header(
            self.identity,
            self.capability,
            method="GET",
            path=path,
            range_header=ref.range_header,
            now_ms=self.clock_ms(),
        )
        headers = {"Authorization": authorization, "Range": ref.range_header}
        async with session.get(
            self.base_url + path, headers=headers, ssl=self.pin, allow_redirects=False
        ) as resp:
            if resp.status != 206:
                await _raise_for(resp)
            expected_range = f"bytes {ref.start}-{ref.end - 1}/{obj.size}"
            if resp.headers.get("Content-Range") != expected_range or resp.content_length != ref.length:
                raise FetchFailed(
                    f"sender answered {resp.headers.get('Content-Range')}, not {expected_range}"
                )
            return await resp.content.readexactly(ref.length)


@dataclass(slots=True)
class _Counters:
    retries: int = 0
    rejected: int = 0


async def _retrying(
    attempt: Callable[[], Awaitable[T]],
    counters: _Counters,
    *,
    retries: int,
    timeout_s: float,
    rng: Callable[[], float],
    what: str,
) -> T:
    """Run ``attempt`` with a timeout each, retrying what another attempt may fix."""
    last: Exception | None = None
    for number in range(retries + 1):
        if number:
            counters.retries += 1
            await asyncio.sleep(backoff_ms(number, rng) / 1000)
        try:
            async with asyncio.timeout(timeout_s):
                return await attempt()
        except TransferInputError as exc:  # wrong bytes: a bad cache or a flaky path; ask again
            counters.rejected += 1
            last = exc
        except (PeerKeyMismatch, CapabilityRefused, FetchFailed):
            raise
        except (_Retryable, aiohttp.ClientError, TimeoutError, OSError, EOFError) as exc:
            last = exc
    raise FetchFailed(f"{what}: gave up after {retries + 1} attempts ({type(last).__name__}: {last})")


async def _raise_for(resp: aiohttp.ClientResponse) -> None:
    """Raise the error an unexpected answer calls for."""
    body = await resp.content.read(MAX_ERROR_BODY_BYTES)
    try:
        detail = json.loads(body)
        reason, message = str(detail["error"]), str(detail["message"])
    except (ValueError, KeyError, TypeError):
        reason, message = "unknown", body[:200].decode("utf-8", "replace")
    if resp.status == 403 and reason == "replayed":
        # aiohttp re-sends an idempotent request once, same headers, when a kept-alive
        # connection drops under it; the server saw the first copy. A fresh proof fixes it.
        raise _Retryable("sender saw this proof before (our request was re-sent)")
    if resp.status in (401, 403, 410):  # 410: the sender abandoned the transfer
        raise CapabilityRefused(resp.status, reason, message)
    if resp.status in (400, 404, 416):
        raise FetchFailed(f"sender answered {resp.status} {reason}: {message}")
    raise _Retryable(f"sender answered {resp.status} {reason}")


async def fetch_manifest(
    peer_url: str,
    identity: SigningIdentity,
    capability: Capability,
    *,
    sender: PublicIdentity,
    timeout_ms: int = 30_000,
    retries: int = 5,
    limits: ManifestLimits = DEFAULT_LIMITS,
    rng: Callable[[], float] | None = None,
    clock_ms: Callable[[], int] = SYSTEM_CLOCK.now_ms,
    session: aiohttp.ClientSession | None = None,
) -> tuple[Manifest, bytes]:
    """Fetch, open and check the sealed manifest a capability names; returns it and its sealed bytes.

    For offers too large for a p2p message: the offer carries the capability only,
    and the manifest comes from the sender's data plane.  Keep the sealed bytes to
    reopen the manifest after a restart.
    """
    if capability.recipient != identity.public.sign_key or capability.sender != sender.sign_key:
        raise NodeUsageError("capability is not from this sender to this node")
    path = f"/v1/transfers/{capability.transfer_id.hex()}/manifest"
    url = peer_url.rstrip("/") + path
    max_bytes = limits.max_encoded_bytes + (1 << 20)
    pin = KeyPin(sender.sign_key)

    async def attempt(http: aiohttp.ClientSession) -> tuple[Manifest, bytes]:
        authorization = authorization_header(
            identity, capability, method="GET", path=path, range_header="", now_ms=clock_ms()
        )
        async with http.get(
            url, headers={"Authorization": authorization}, ssl=pin, allow_redirects=False
        ) as resp:
            if resp.status != 200:
                await _raise_for(resp)
            if resp.content_length is None or not 0 < resp.content_length <= max_bytes:
                raise FetchFailed(f"sealed manifest of {resp.content_length} bytes (limit {max_bytes})")
            sealed = await resp.content.readexactly(resp.content_length)
        manifest = await asyncio.to_thread(open_manifest, sealed, identity, sender=sender, limits=limits)
        if not covers_manifest(capability, manifest.sha256) or manifest.transfer_id != capability.transfer_id:
            raise FetchFailed("sender's manifest is not the one its capability names")
        return manifest, sealed

    http = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
    try:
        return await _retrying(
            lambda: attempt(http),
            _Counters(),
            retries=retries,
            timeout_s=timeout_ms / 1000,
            rng=rng or random.Random().random,
            what="sealed manifest",
        )
    finally:
        if session is None:
            await http.close()

"""``GET /overview``: what an operator watches, with an alert for each figure that is wrong.

The figures are the node's own: ``/status``, ``/peers``, the Prometheus registry behind
``/metrics`` (read from the same collectors, so the page and a scraper never disagree), the
ledger's newest certificates (did this validator sign?), the disk under ``data_dir``, the
transfer queues, and whether each configured PACS answers a TCP connection (probed at most once
per :data:`PACS_PROBE_EVERY_S`, in parallel, each within :data:`PACS_PROBE_TIMEOUT_S`).

Alerts are ``{"level": "error"|"warning", "what", "message"}``; the page turns the rows red.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import CollectorRegistry

from mftp.ledger.ledger import Ledger

from ..clock import Clock
from ..people.roles import Permission, requires

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RECENT_HEIGHTS: Final = 20
STALE_BLOCK_S: Final = 30.0
"""A validator commits an empty block each ``empty_block_interval_ms``: silence this long is wrong."""
LOW_DISK_FRACTION: Final = 0.05
LOW_DISK_BYTES: Final = 1 << 30
PACS_PROBE_EVERY_S: Final = 30.0
PACS_PROBE_TIMEOUT_S: Final = 1.5
MAX_PACS: Final = 16
ACTIVE: Final = frozenset({"preparing", "offered", "accepted", "fetching", "verifying"})


class OverviewNode(Protocol):
    """What the overview reads of a running node."""

    name: str
    role: str
    ledger: Ledger
    registry: CollectorRegistry
    data_dir: Path

    def status(self) -> dict[str, Any]:
        """``GET /status``."""

    def peers(self) -> list[dict[str, Any]]:
        """``GET /peers``."""


class TransferList(Protocol):
    """The transfer service's list (for the queue lengths)."""

    def list(self) -> list[dict[str, Any]]:
        """Every transfer."""


def metric_figures(registry: CollectorRegistry) -> dict[str, float]:
    """Every unlabelled sample of ``registry`` by name (histograms as ``_count`` and ``_sum``)."""
    figures: dict[str, float] = {}
    for family in registry.collect():
        for sample in family.samples:
            if not sample.labels:
                figures[sample.name] = sample.value
    return figures


def pacs_addresses(dicomweb_urls: list[str], dimse_peers: list[str]) -> list[tuple[str, str, int]]:
    """(label, host, port) of each configured PACS.

    A DICOMweb entry with neither a port nor a path (``http://127.0.0.1``) is an allow-list
    pattern ("any port of this host"), not a server: it is not probed.
    """
    out: list[tuple[str, str, int]] = []
    for url in dicomweb_urls[:MAX_PACS]:
        parts = urlsplit(url)
        if parts.hostname and (parts.port is not None or parts.path.strip("/")):
            out.append((url, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)))
    for peer in dimse_peers[:MAX_PACS]:
        _, _, address = peer.partition("@")
        host, _, port = address.rpartition(":")
        if host and port.isdigit():
            out.append((f"dimse:{peer}", host.strip("[]"), int(port)))
    return out


async def _reachable(host: str, port: int) -> bool:
    try:
        async with asyncio.timeout(PACS_PROBE_TIMEOUT_S):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


class OverviewApi:
    """The operator's overview over one node."""

    def __init__(
        self,
        node: OverviewNode,
        transfers: TransferList | None,
        clock: Clock,
        *,
        own_key: bytes,
        pacs: list[tuple[str, str, int]] = (),  # type: ignore[assignment]
    ) -> None:
        self.node = node
        self.transfers = transfers
        self.clock = clock
        self.own_key = own_key
        self.pacs = list(pacs)
        self._pacs_seen: list[dict[str, Any]] = []
        self._pacs_at_s = float("-inf")
        self._probing: asyncio.Lock | None = None

    def add_routes(self, router: web.UrlDispatcher, authenticated: Callable[[Handler], Handler]) -> None:
        """Register ``GET /overview`` behind ``authenticated``."""
        router.add_get("/overview", authenticated(self.overview))

    @requires(Permission.NODE_SETTINGS)
    async def overview(self, request: web.Request) -> web.Response:
        """Ledger, participation, peers, sync, PACS, disk, queues and metrics, with alerts."""
        return web.json_response(await self.figures())

    async def figures(self) -> dict[str, Any]:
        """The overview as JSON-ready data."""
        status = self.node.status()
        peers = self.node.peers()
        store = self.node.ledger.store
        head = store.head_height
        last_block_ms = store.header(head).time_ms if head >= 1 else None
        now_ms = self.clock.now_ms()
        participation = self._participation(head)
        disk = shutil.disk_usage(self.node.data_dir)
        queues = self._queues(status)
        pacs = await self._pacs()
        alerts: list[dict[str, str]] = []

        def alert(level: str, what: str, message: str) -> None:
            alerts.append({"level": level, "what": what, "message": message})

        for peer in peers:
            if not peer.get("connected"):
                alert("error", f"peer:{peer['name']}", f"peer {peer['name']} is not connected")
        if status.get("sync", {}).get("state") != "synced":
            alert("warning", "sync", "this node is catching up with the chain")
        if last_block_ms is not None and now_ms - last_block_ms > STALE_BLOCK_S * 1000:
            alert("error", "ledger", f"no block for {(now_ms - last_block_ms) / 1000:.0f} s")
        if (
            self.node.role == "validator"
            and participation
            and not any(p["signed"] for p in participation[-5:])
        ):
            alert("error", "participation", "this validator signed none of the last 5 blocks")
        if disk.free < LOW_DISK_BYTES or disk.free < disk.total * LOW_DISK_FRACTION:
            alert("error", "disk", f"only {disk.free // (1 << 20)} MiB free under data_dir")
        for entry in pacs:
            if not entry["reachable"]:
                alert("error", f"pacs:{entry['pacs']}", f"PACS {entry['pacs']} does not answer")
        return {
            "name": self.node.name,
            "role": self.node.role,
            "now_ms": now_ms,
            "height": head,
            "last_block_ms": last_block_ms,
            "participation": participation,
            "peers": peers,
            "peers_connected": sum(1 for p in peers if p.get("connected")),
            "sync": status.get("sync", {}),
            "pacs": pacs,
            "disk": {"free_bytes": disk.free, "total_bytes": disk.total},
            "queues": queues,
            "metrics": metric_figures(self.node.registry),
            "alerts": alerts,
        }

    def _participation(self, head: int) -> list[dict[str, Any]]:
        """Whether this node's key signed the certificate of each of the last heights."""
        store = self.node.ledger.store
        out = []
        for height in range(max(1, head - RECENT_HEIGHTS + 1), head + 1):
            cert = store.certificate(height)
            signers = {key for key, _ in cert.signatures} if cert is not None else set()
            out.append({"height": height, "signed": self.own_key in signers, "signers": len(signers)})
        return out

    def _queues(self, status: dict[str, Any]) -> dict[str, int]:
        listed = self.transfers.list() if self.transfers is not None else []
        return {
            "mempool_records": int(status.get("mempool_records", 0)),
            "sending": sum(1 for t in listed if t.get("direction") == "out" and t.get("state") in ACTIVE),
            "receiving": sum(1 for t in listed if t.get("direction") == "in" and t.get("state") in ACTIVE),
            "failed": sum(1 for t in listed if t.get("state") == "failed"),
        }

    async def _pacs(self) -> list[dict[str, Any]]:
        if self._probing is None:
            self._probing = asyncio.Lock()
        async with self._probing:  # one probe at a time, however many pages poll
            now = self.clock.monotonic_s()
            if now - self._pacs_at_s >= PACS_PROBE_EVERY_S:
                answers = await asyncio.gather(*(_reachable(host, port) for _, host, port in self.pacs))
                self._pacs_seen = [
                    {"pacs": label, "reachable": ok}
                    for (label, _, _), ok in zip(self.pacs, answers, strict=True)
                ]
                self._pacs_at_s = now
        return self._pacs_seen

"""A running node: the process that assembles ledger, consensus reactor, peer network, services and API.

:class:`Node` builds the parts, starts and stops them in order, and dispatches each peer message
to the service that registered its channel (:meth:`Node.register_channels`): the consensus
reactor (:mod:`.chain.reactor`: ``c.*`` and ``records``), transfers (``t.*``) and audit
(``a.*``).  It reads time only through the one :class:`~.clock.Clock` it is given, and hands
that clock to every service.

Anything malformed is dropped and counted against its sender.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable
from typing import Any, Final

from aiohttp import web

from mftp.consensus.errors import ConsensusInputError
from mftp.consensus.events import Tick
from mftp.crypto.signing import SigningIdentity
from mftp.ledger.errors import LedgerError
from mftp.ledger.genesis import Genesis
from mftp.ledger.ledger import Ledger
from mftp.ledger.records import Record
from mftp.ledger.store_leveldb import LevelDBStore
from mftp.ledger.verify import verify_chain

from .api.auth import Gate
from .api.people_routes import PeopleApi
from .api.server import Api, RouteProvider
from .audit.routes import AuditApi
from .audit.scan import Auditor
from .audit.service import AuditService
from .chain.reactor import ChainReactor
from .clock import SYSTEM_CLOCK, Clock
from .config import Config, Peer
from .console.overview import OverviewApi, pacs_addresses
from .console.pages import ConsolePages
from .dataplane.blobstore import BlobStore
from .dataplane.server import DataPlaneServer
from .errors import NodeError, NodeInputError, NodeUsageError
from .membership import directory
from .membership.console import MembershipConsole
from .membership.routes import MembershipApi
from .membership.service import MembershipService
from .metrics import NodeMetrics
from .p2p.network import P2PLimits, PeerNetwork, sign_key_from_peer_id
from .people.service import build_people
from .people.sessions import Principal
from .shares.held import TransferStudies
from .shares.routes import ShareApi
from .shares.service import COOKIE_NAME as SHARE_COOKIE
from .shares.service import ShareScope, ShareService, ShareSessionRefused, ShareUnavailable
from .transfers.console_routes import TransferConsoleApi
from .transfers.service import TransferService
from .viewing.routes import ViewingRoutes

log = logging.getLogger("mftp.node")

TICK_MS: Final = 500
VIEWER_URL: Final = "/ohif/viewer?StudyInstanceUIDs={study}"
"""Where a study opens in the viewer (the OHIF app the viewing room serves)."""

ChannelHandler = Callable[[bytes, Any], None]


class Node:
    """One institution's node process: builds the parts, runs them, routes peer messages."""

    def __init__(
        self, config: Config, identity: SigningIdentity, genesis: Genesis, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.config = config
        self.identity = identity
        self.genesis = genesis
        self.clock = clock
        self.name: str = config.get("node", "name")
        self.role = config.role
        self.metrics = NodeMetrics()
        self.registry = self.metrics.registry
        data_dir = config.resolve("node", "data_dir")
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self.ledger = Ledger(LevelDBStore(data_dir / "ledger"), genesis)
        self.chain = ChainReactor(config, identity, self.ledger, self.metrics, clock)
        self.network: PeerNetwork | None = None
        self.audit = AuditService(self)
        self.auditor = Auditor(self.audit)
        self.people = build_people(
            config, identity, clock, self.audit.vault.security.append, data_dir / "people"
        )
        host, _, port = config.get("transfer", "data_listen").rpartition(":")
        self.dataplane = DataPlaneServer(
            BlobStore(data_dir / "blobs"),
            identity,
            host=host.strip("[]"),
            port=int(port),
            clock_ms=clock.now_ms,
        )
        self.transfers = TransferService(self, self.dataplane.store, self.dataplane, self.audit)
        self.membership = MembershipService(self)
        self.viewing = ViewingRoutes.for_node(self.transfers, identity)  # indexes studies as they arrive
        self.shares = ShareService(
            self,
            TransferStudies(self.transfers.access),
            self.audit,
            secret=self.transfers.secret,
            viewer_url=VIEWER_URL,
        )
        self._background: set[asyncio.Task[Any]] = set()
        self._channels: dict[str, ChannelHandler] = {}
        self._runner: web.AppRunner | None = None
        self._tick_task: asyncio.Task[None] | None = None
        self.stopped = asyncio.Event()
        for service in (self.chain, self.audit):
            self.register_channels(service.channels())

    @property
    def failed(self) -> asyncio.Event:
        """Set when the node stopped itself (see :meth:`ChainReactor._fail_stop`)."""
        return self.chain.failed

    @property
    def failure(self) -> BaseException | None:
        """Why the node stopped itself, if it did."""
        return self.chain.failure

    def register_channels(self, handlers: dict[str, ChannelHandler]) -> None:
        """Route the peer messages of these channels to their handlers (each channel has one)."""
        taken = set(handlers) & set(self._channels)
        if taken:
            raise NodeUsageError(f"peer channels registered twice: {sorted(taken)}")
        self._channels.update(handlers)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Recover from the WAL, connect to the members, serve the API and begin consensus."""
        if self.role == "audit" and self.ledger.height > 0:
            # An audit node trusts nothing it has not checked: verify the stored chain first.
            await asyncio.to_thread(verify_chain, self.ledger.store, self.genesis, workers=2)
        self.network = PeerNetwork(
            self.identity,
            self.config.get("p2p", "listen"),
            self.chain.member_names(),
            on_message=self._on_message,
            limits=P2PLimits(max_message_bytes=self.config.get("p2p", "max_message_bytes")),
            logger=logging.getLogger("mftp.node.p2p"),
            clock=self.clock,
        )
        self._dial()
        await self.network.start()
        self.chain.on_membership_change.append(self._membership_changed)
        self.chain.start(self.network)
        self._membership_changed()  # publish our directory entry if the chain's is stale
        # The data plane serves the node's objects to recipients; then unfinished transfers resume.
        await self.dataplane.start()
        self.transfers.start()
        self.register_channels(self.transfers.channels())  # until now its messages are dropped
        await self._start_api()
        self._tick_task = asyncio.get_running_loop().create_task(self._ticker(), name="mftp-tick")
        log.info(
            "node started",
            extra={
                "fields": {"role": self.role, "height": self.ledger.height, "peer_id": self.network.peer_id}
            },
        )

    async def stop(self) -> None:
        """Stop cleanly: timers, API, network, WAL and ledger."""
        self.chain.cancel_timers()
        if self._tick_task is not None:
            self._tick_task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.transfers.stop()
        await self.dataplane.stop()
        if self.network is not None:
            await self.network.stop()
        self.chain.stop()
        self.ledger.close()
        self.stopped.set()
        log.info("node stopped", extra={"fields": {"height": self.ledger.height}})

    def api(self) -> Api:
        """The node's HTTP API: every room's routes behind one gate."""
        gate = Gate(
            self.people.signin,
            public_origin=self.config.get("api", "public_origin"),
            shares=self._share_session,
        )
        return Api(
            self,
            gate,
            max_request_bytes=self.config.get("api", "max_request_bytes"),
            transfers=self.transfers,
            providers=self.route_providers(gate),
        )

    def route_providers(self, gate: Gate) -> tuple[RouteProvider, ...]:
        """The routes of the rooms (each states its rules and documents itself)."""
        people = PeopleApi(
            self.people.signin,
            self.people.admin,
            gate,
            self.audit.vault.security,
            self.name,
            on_user_added=lambda name: self.audit.vault.party(f"user:{name}", "user"),
        )
        public_url = self.config.get("api", "public_origin")
        return (
            people,
            AuditApi(self.audit, self.auditor),
            MembershipApi(self.membership, self.genesis.to_json),
            MembershipConsole(),
            ShareApi(self.shares, public_url=public_url, institution=self.name),
            self.viewing,
            *self._console_providers(),
        )

    def _share_session(self, request: web.Request) -> tuple[Principal, ShareScope] | None:
        """A patient's share session (its cookie), for the viewer; None if there is none that holds."""
        session_id = request.cookies.get(SHARE_COOKIE)
        if session_id is None:
            return None
        try:
            scope = self.shares.scope(session_id)
        except (ShareSessionRefused, ShareUnavailable):
            return None
        return scope.principal, scope

    async def _start_api(self) -> None:
        # aiohttp's access log would record paths, and a share link's path holds its token.
        self._runner = web.AppRunner(self.api().app(), access_log=None)
        await self._runner.setup()
        host, _, port = self.config.get("api", "listen").rpartition(":")
        await web.TCPSite(self._runner, host.strip("[]"), int(port)).start()

    def _console_providers(self) -> tuple[Any, ...]:
        """The web console (issue 18): its pages, the operator's overview, the clinician's routes."""
        overview = OverviewApi(
            self,
            self.transfers,
            self.clock,
            own_key=self.identity.public.sign_key,
            pacs=pacs_addresses(
                self.config.get("transfer", "dicomweb_urls"), self.config.get("transfer", "dimse_peers")
            ),
        )
        clinical = TransferConsoleApi(self.transfers, self.ledger, self.audit.vault, self.member_name)
        return (ConsolePages(), overview, clinical)

    async def _ticker(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(TICK_MS / 1000)
            self.chain.tick(Tick())
            self._refresh_gauges()
            ticks += 1
            if ticks % 60 == 0:  # an entry lost on its way to the chain is sent again
                self._membership_changed()

    # ------------------------------------------------------------------ membership

    @property
    def chain_state(self) -> Any:
        """The chain state after the newest stored block."""
        return self.ledger.state

    def known_peers(self) -> tuple[Peer, ...]:
        """Members as the chain's directory says, else as ``[[p2p.peers]]`` says."""
        return directory.known_peers(self.ledger.state, self._bootstrap())

    def _bootstrap(self) -> list[Peer]:
        """``[[p2p.peers]]``: by key, or by the ``/p2p/<peer id>`` of an address (key unknown)."""
        peers = []
        for peer in self.config.peers:
            if peer.sign_key:
                peers.append(peer)
                continue
            for address in peer.address:
                try:
                    key = sign_key_from_peer_id(address.rsplit("/p2p/", 1)[1])
                except (IndexError, NodeInputError):
                    continue
                peers.append(Peer(peer.name, key, (address,), peer.data_url, peer.country))
        return peers

    def _dial(self) -> None:
        """Dial every member (and candidate) where the chain's directory and the config say."""
        if self.network is None:
            return
        members = self.network.members()
        for key, addresses in directory.dial_addresses(self.ledger.state, self._bootstrap()).items():
            if key not in members:
                continue  # not a member (yet): the network would refuse it anyway
            for address in addresses:
                try:
                    self.network.add_peer_address(key, address)
                except NodeUsageError as exc:  # a member's bad address: skip it, dial the others
                    log.warning("address not dialled", extra={"fields": {"reason": str(exc)}})

    def _membership_changed(self) -> None:
        self._dial()
        task = asyncio.get_running_loop().create_task(self._publish_entry())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _publish_entry(self) -> None:
        try:
            await self.membership.publish_entry_if_stale()
        except NodeError as exc:  # not a member yet, or the mempool is full: next change or tick
            log.info("directory entry not published", extra={"fields": {"reason": str(exc)}})

    # ------------------------------------------------------------------ what services ask of the node

    def is_member(self, sign_key: bytes) -> bool:
        """Whether ``sign_key`` is a member now (validator or audit node)."""
        return self.ledger.state.is_member(sign_key)

    def member_name(self, sign_key: bytes) -> str:
        """A member's name from the chain's membership, else the start of its key in hex."""
        return self.chain.member_names().get(sign_key) or sign_key.hex()[:16]

    def send_peer(self, sign_key: bytes, channel: str, value: Any) -> None:
        """Queue a message to one member on the peer network."""
        assert self.network is not None
        self.network.send(sign_key, channel, value)

    async def submit_records(self, records: list[Record]) -> list[str]:
        """Offer records to the mempool and gossip the admitted ones (see :class:`ChainReactor`)."""
        return await self.chain.submit_records(records)

    async def wait_for_height(self, height: int, timeout_s: float) -> None:
        """Return once block ``height`` is stored, or after ``timeout_s`` (``GET /blocks?wait_ms``)."""
        await self.chain.wait_for_height(height, timeout_s)

    # ------------------------------------------------------------------ peers

    def _on_message(self, sender: bytes, channel: str, value: Any) -> None:
        handler = self._channels.get(channel)
        try:
            if handler is None:
                raise NodeInputError(f"unknown channel {channel!r}")
            handler(sender, value)
        except (ConsensusInputError, LedgerError, NodeInputError) as exc:
            self.chain.reject(sender, channel, exc)

    # ------------------------------------------------------------------ API view

    def status(self) -> dict[str, Any]:
        """What ``GET /status`` shows."""
        return {
            "name": self.name,
            "role": self.role,
            "chain_id": self.genesis.chain_id,
            **self.chain.status(),
            "peers": len(self.network.peers()) if self.network is not None else 0,
            "peer_id": self.network.peer_id if self.network is not None else "",
        }

    def peers(self) -> list[dict[str, Any]]:
        """Members and whether this node is connected to them."""
        if self.network is None:
            return []
        connected = self.network.peers()
        return [
            {"name": name, "sign_key": key.hex(), "connected": key in connected}
            for key, name in sorted(self.network.members().items(), key=lambda item: item[1])
            if key != self.identity.public.sign_key
        ]

    def _refresh_gauges(self) -> None:
        self.chain.refresh_gauges()
        if self.network is not None:
            self.metrics.peers.set(len(self.network.peers()))
            self.metrics.rejected_handshakes.set(self.network.stats().rejected_handshakes)


def settle_gc() -> None:
    """Keep the cyclic garbage collector's pauses short for the life of the process.

    After start-up some 135,000 objects (modules, classes, functions of aiohttp, libp2p,
    trio...) are live and stay live.  A full (generation 2) collection walks every one of
    them: at full load each node ran one about every 30 s, 70 ms of CPU and 90-280 ms of
    wall time on a shared machine, stalling that node's votes and commits -- a tail of the
    commit latency.  :func:`gc.freeze` moves them out of the collector's sight, so a full
    collection walks only what came after (records in flight, the check caches): about
    20,000 objects, 11 ms of CPU.
    """
    gc.collect()
    gc.freeze()


async def run_node(config: Config, identity: SigningIdentity, genesis: Genesis, stop: asyncio.Event) -> None:
    """Run a node until ``stop`` is set."""
    node = Node(config, identity, genesis)
    await node.start()
    settle_gc()
    try:
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(node.failed.wait())]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for waiting in waits:
            waiting.cancel()
    finally:
        await node.stop()
    if node.failure is not None:
        raise NodeError(f"the node stopped itself: {node.failure!r}")

"""A node's share service in one process, for the share tests (API, pages, browser).

Real: the share store on disk, the audit service and vault (tags, escrow, details), a ledger of
one validator whose blocks are certified (so inclusion proofs verify), the aiohttp routes.
Fake: the studies are held in memory as their original DICOM bytes (the transfers room's
restore is tested with the transfers), the ``authenticated`` wrapper sets a principal the way
the gate does, and :meth:`World.commit` plays consensus: it puts the submitted
records in the next certified block.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from aiohttp import web

from mftp.crypto.signing import SigningIdentity
from mftp.ledger.ledger import Ledger
from mftp.ledger.records import Record
from mftp.ledger.sample import ChainBuilder, sample_genesis
from mftp.ledger.store_memory import MemoryStore
from mftp.node.audit.service import AuditService
from mftp.node.clock import FakeClock
from mftp.node.devnet.client import make_study
from mftp.node.errors import NodeUsageError
from mftp.node.people.roles import Role, rule_of
from mftp.node.people.sessions import Principal
from mftp.node.shares.routes import ShareApi
from mftp.node.shares.service import HeldStudy, ShareService

NOW_MS = 1_767_225_600_000  # 2026-01-01
DAY_MS = 86_400_000


class FakeConfig:
    """Only the node's name."""

    def get(self, section: str, key: str) -> Any:
        assert (section, key) == ("node", "name")
        return "St Olav"


class MemoryStudies:
    """Received studies as their original files, in memory (name -> bytes, in order)."""

    def __init__(self) -> None:
        self.studies: dict[str, list[tuple[str, bytes]]] = {}
        self.reads = 0

    def add(self, transfer_id: str, files: list[bytes]) -> None:
        self.studies[transfer_id] = [(f"{i:05d}.dcm", data) for i, data in enumerate(files)]

    async def open_study(self, transfer_id: str) -> HeldStudy:
        if transfer_id not in self.studies:
            raise NodeUsageError(f"no received transfer {transfer_id}")
        files = self.studies[transfer_id]
        return HeldStudy(transfer_id, tuple(n for n, _ in files), dict(files))

    async def read(self, study: HeldStudy, name: str) -> bytes:
        self.reads += 1
        return cast(dict[str, bytes], study.handle)[name]


def study_files(folder: Path, patient_id: str = "PAT-0042") -> list[bytes]:
    """A real study (pydicom-data images made one study of one patient), as bytes in order."""
    make_study(folder, patient_id)
    return [p.read_bytes() for p in sorted(folder.iterdir())]


@dataclass
class World:
    """The service, its ledger and what was submitted."""

    root: Path
    clock: FakeClock = field(default_factory=lambda: FakeClock(NOW_MS))
    identity: SigningIdentity = field(
        default_factory=lambda: SigningIdentity(hashlib.sha256(b"st-olav").digest())
    )
    submitted: list[Record] = field(default_factory=list)
    refuse_records: bool = False

    def __post_init__(self) -> None:
        self.config = FakeConfig()
        self.data_dir = self.root / "data"
        genesis = sample_genesis([self.identity], chain_id="share-test")
        self.ledger = Ledger(MemoryStore(), genesis)
        self.builder = ChainBuilder(genesis, [self.identity])
        self.audit = AuditService(cast(Any, self))
        self.studies = MemoryStudies()
        self.service = ShareService(cast(Any, self), self.studies, self.audit, secret=b"s" * 32)

    # what the audit service and the share service ask of the node
    def is_member(self, sign_key: bytes) -> bool:
        return sign_key == self.identity.public.sign_key

    def send_peer(self, sign_key: bytes, channel: str, value: Any) -> None:
        raise AssertionError("no peer messages in a share")

    async def submit_records(self, records: list[Record]) -> list[str]:
        if self.refuse_records:
            return ["refused: mempool full"] * len(records)
        self.submitted.extend(records)
        return ["accepted"] * len(records)

    def member_name(self, sign_key: bytes) -> str:
        return "st-olav" if sign_key == self.identity.public.sign_key else sign_key.hex()[:8]

    def commit(self) -> int:
        """Put every submitted record in the next certified block; its height."""
        pending = [r for r in self.submitted if not self.ledger.store.has_record(r.record_id)]
        block, cert = self.builder.next_block(
            pending, time_ms=max(self.clock.now_ms(), self.builder.state.last_time_ms + 1)
        )
        self.ledger.append(block, cert)
        return block.height


def clinician(name: str = "dr.hansen") -> Principal:
    """A signed-in clinician with a fresh second factor."""
    return Principal(name, "session", frozenset({Role.CLINICIAN}), second_factor_s=1000.0)


def fake_authenticated(world_principal: dict[str, Principal | None]) -> Any:
    """The gate's work in short: sets the request's principal on a rule's route (see api.auth).

    A route with a permission gets the principal in ``world_principal["who"]`` (401 if None, 403
    if its roles do not allow the rule); a public route gets nothing.
    """
    from mftp.node.api.auth import PRINCIPAL
    from mftp.node.people.roles import allows

    def wrap(handler: Any) -> Any:
        rule = rule_of(handler)
        assert rule is not None, f"{handler} states no rule"

        async def check(request: web.Request) -> web.StreamResponse:
            if not rule.public:
                who = world_principal.get("who")
                if who is None:
                    return web.json_response({"error": "sign in"}, status=401)
                assert rule.permission is not None
                if not allows(who.roles, rule.permission):
                    return web.json_response({"error": "not permitted"}, status=403)
                request[PRINCIPAL] = who
            return cast(web.StreamResponse, await handler(request))

        check.__mftp_route_rule__ = rule  # type: ignore[attr-defined]
        return check

    return wrap


def share_app(world: World, who: dict[str, Principal | None], **api: Any) -> web.Application:
    """An aiohttp app with the share routes and the API's error mapping."""
    from mftp.node.api.server import Api

    errors = Api(cast(Any, None), cast(Any, None))._errors  # the node's error middleware, unchanged
    app = web.Application(middlewares=[errors], client_max_size=1 << 20)
    ShareApi(world.service, institution="St Olav", **api).add_routes(app.router, fake_authenticated(who))
    return app

"""An in-process node side for the viewer's tests: studies packaged, "received" and stored encrypted.

:class:`Node` holds a real blob store and transfer states; :meth:`Node.receive` packages files
as a sender would (compressed, encrypted for this node's identity, sealed manifest) and records
the transfer as received, so the catalog reads them exactly as it reads a study fetched from a
peer.  :meth:`Node.send` does the same for a study this node sent (its local record).
Access records are collected instead of signed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from mftp.crypto.signing import SigningIdentity
from mftp.node.api.auth import PRINCIPAL
from mftp.node.dataplane.blobstore import BlobStore
from mftp.node.people.roles import Role, rule_of
from mftp.node.people.sessions import Principal
from mftp.node.transfers.state import IN, OUT, Phase, TransferState, TransferStates
from mftp.node.viewing.catalog import Catalog
from mftp.node.viewing.routes import ViewingRoutes
from mftp.transfer.codec import compress
from mftp.transfer.manifest import EntryMeta, Manifest, seal_manifest
from mftp.transfer.package import Packager, seal_local_record, storage_key_for

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FakeVault:
    """Vault references without the vault: ``vault:<party>`` (tests only)."""

    def reference(self, party_id: str) -> str:
        return "vault:" + party_id

    def resolve(self, reference: str) -> str | None:
        return reference.removeprefix("vault:")

    def is_erased_reference(self, reference: str) -> bool:
        return False


class Node:
    """A recipient node's store, states and catalog (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.identity = SigningIdentity(os.urandom(32))
        self.peer = SigningIdentity(os.urandom(32))
        self.store = BlobStore(root / "blobs")
        self.states = TransferStates(root / "transfers", names=FakeVault())
        self.records: list[tuple[str, str, str]] = []  # (transfer, user, action)
        self.catalog = Catalog(
            store=self.store, states=self.states, identity=self.identity, record_access=self.record_access
        )

    async def record_access(
        self, state: TransferState, manifest: Manifest, user: str, purpose: str, action: str
    ) -> str:
        self.records.append((state.transfer_id, user, action))
        return os.urandom(16).hex()

    def package(self, files: dict[str, bytes], *, outgoing: bool = False) -> tuple[str, Any]:
        """Package ``files`` into the store; ``(transfer id, PackageResult)``."""
        sender, recipient = (self.identity, self.peer) if outgoing else (self.peer, self.identity)
        transfer_id = os.urandom(16)
        packager = Packager(
            sender=sender.public,
            recipient=recipient.public,
            transfer_id=transfer_id,
            created_ms=1_750_000_000_000,
            storage_key=storage_key_for(sender),
            sink_factory=self.store.object_writer,
        )
        for name, data in files.items():
            meta = EntryMeta(name, "instance", len(data), hashlib.sha256(data).digest(), "mftp-dcm")
            packager.add(meta, compress(data, name=name))
        return transfer_id.hex(), packager.finish()

    def receive(self, files: dict[str, bytes], *, to_user: str = "", state: Phase = Phase.COMPLETE) -> str:
        """A study received from the peer (for ``to_user``, or the institution); its transfer id."""
        tid, result = self.package(files)
        self.store.put_record(f"offer-{tid}", seal_manifest(result.manifest, self.peer))
        self.states.save(
            TransferState(
                transfer_id=tid, direction=IN, peer="hospital-a", peer_key=self.peer.public.sign_key.hex(),
                purpose="TREAT", mode="identified", state=state, created_ms=1, to_user=to_user,
            )
        )  # fmt: skip
        return tid

    def send(self, files: dict[str, bytes], *, user: str) -> str:
        """A study this node sent for ``user`` (the prepared copy it keeps); its transfer id."""
        tid, result = self.package(files, outgoing=True)
        self.store.put_record(f"local-{tid}", seal_local_record(result, storage_key_for(self.identity)))
        self.states.save(
            TransferState(
                transfer_id=tid, direction=OUT, peer="hospital-b", peer_key=self.peer.public.sign_key.hex(),
                purpose="TREAT", mode="identified", state=Phase.DELIVERED, created_ms=2, user=user,
            )
        )  # fmt: skip
        return tid


def fake_authenticated(handler: Handler) -> Handler:
    """The gate in short, from test headers: ``X-Test-User`` (401 without); the real gate is
    tested in tests/node/api and by the browser test, which signs in with a second factor."""

    rule = rule_of(handler)

    async def wrapped(request: web.Request) -> web.StreamResponse:
        name = request.headers.get("X-Test-User")
        if rule is not None and rule.permission is None:  # @public(): no sign-in, as the gate
            return await handler(request)
        if name is None:
            return web.json_response({"error": "sign in"}, status=401)
        via = request.headers.get("X-Test-Via", "session")
        request[PRINCIPAL] = Principal(name=name, via=via, roles=frozenset({Role.CLINICIAN}))
        return await handler(request)

    return wrapped


def viewing_app(node: Node, **kwargs: Any) -> web.Application:
    """An aiohttp app with the viewing routes behind :func:`fake_authenticated`."""
    app = web.Application(middlewares=[errors])
    ViewingRoutes(node.catalog, **kwargs).add_routes(app.router, fake_authenticated)
    return app


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The API's error mapping (node/api/server.py), as the real app applies it."""
    from mftp.node.errors import NodeInputError, NodeUsageError, StorageDamaged

    try:
        return await handler(request)
    except NodeUsageError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    except NodeInputError as exc:
        return web.json_response({"error": str(exc)}, status=502)
    except StorageDamaged as exc:
        return web.json_response({"error": str(exc)}, status=500)


def pydicom_files(*names: str, study_uid: str | None = None, patient_id: str = "PAT-1") -> dict[str, bytes]:
    """pydicom-data files made one study of one patient; ``{entry name: bytes}``."""
    import io

    import pydicom
    from pydicom.data import get_testdata_file

    study_uid = study_uid or pydicom.uid.generate_uid()
    out = {}
    for index, name in enumerate(names):
        path = get_testdata_file(name)
        assert path is not None, name
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.PatientID, ds.PatientName = study_uid, patient_id, "Nordmann^Kari"
        ds.SOPInstanceUID = pydicom.uid.generate_uid()  # pydicom-data reuses UIDs across files
        if "file_meta" in ds.__dict__ or hasattr(ds, "file_meta"):
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        buffer = io.BytesIO()
        ds.save_as(buffer)
        out[f"{index:05d}.dcm"] = buffer.getvalue()
    return out

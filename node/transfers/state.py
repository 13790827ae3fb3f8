"""What a node remembers of each transfer, sent or received: one small JSON file per transfer.

``data_dir/transfers/<transfer id hex>.json`` holds a :class:`TransferState`, replaced
atomically (temporary file, fsync, rename) on every change of state, so a restarted node
knows what it was doing: a received transfer still ``fetching`` is fetched again (the
blob store keeps every verified chunk), a sent one still ``offered`` is offered again.

The file holds no patient data and names no user: ids, the peer's name and key, purpose, mode,
sizes, states, record ids, the capability token (useless without the recipient's private key),
and the sending and recipient users as *vault references*
(:meth:`mftp.node.audit.vault.AuditVault.reference`), which only the encrypted audit vault
resolves, and only until the user is erased; an erased user's reference is blanked
(:meth:`TransferStates.forget`).  A file written before references existed (``"user":
"user:alice"``) is rewritten with references when it is loaded.  Study contents live
encrypted in the blob store; the sealed manifest as a blob-store record.

States, in order (``failed`` can follow any state that is not final, with ``detail`` saying why)::

    sent:     preparing -> offered -> accepted (the recipient is fetching) -> delivered | refused
    received: fetching -> verifying -> complete

A person may cancel a sent transfer before it is delivered (``preparing``, ``offered`` or
``accepted`` -> ``cancelled``) and a received one while it is still ``fetching``; a transfer
being verified is about to be recorded on the ledger either way, so it is not cancelled.

A sent transfer keeps its source (``source_sealed``: the folder, ``dicomweb:`` or ``dimse:``
reference, sealed to this node's own key, since a folder's name or a study UID may identify a
patient) so that it can be sent again (:mod:`.cancelling`).

:data:`TRANSFER_LIFECYCLE` is the table of legal moves and :meth:`TransferState.move` the one way
a transfer changes state; files written before the table existed hold the same state names.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Protocol

from mftp.ledger.pseudonyms import KeyErasedError

from ..audit.vault import REFERENCE_PREFIX
from ..errors import NodeUsageError, StorageDamaged
from ..lifecycle import Lifecycle


class Phase(StrEnum):
    """Where a transfer is (the values are what state files and the API say)."""

    PREPARING = "preparing"
    OFFERED = "offered"
    ACCEPTED = "accepted"
    DELIVERED = "delivered"
    REFUSED = "refused"
    FETCHING = "fetching"
    VERIFYING = "verifying"
    COMPLETE = "complete"
    FAILED = "failed"
    CANCELLED = "cancelled"


TRANSFER_LIFECYCLE: Final = Lifecycle(
    "transfer",
    {
        # sent
        Phase.PREPARING: frozenset({Phase.OFFERED, Phase.REFUSED, Phase.FAILED, Phase.CANCELLED}),
        Phase.OFFERED: frozenset(
            {Phase.ACCEPTED, Phase.DELIVERED, Phase.REFUSED, Phase.FAILED, Phase.CANCELLED}
        ),
        Phase.ACCEPTED: frozenset({Phase.DELIVERED, Phase.REFUSED, Phase.FAILED, Phase.CANCELLED}),
        Phase.DELIVERED: frozenset(),
        Phase.REFUSED: frozenset(),
        # received; a restart resumes a transfer that was verifying by verifying it again
        Phase.FETCHING: frozenset({Phase.VERIFYING, Phase.FAILED, Phase.CANCELLED}),
        Phase.VERIFYING: frozenset({Phase.VERIFYING, Phase.COMPLETE, Phase.FAILED}),
        Phase.COMPLETE: frozenset(),
        Phase.FAILED: frozenset(),
        Phase.CANCELLED: frozenset(),
    },
)

OUT: Final = "out"
IN: Final = "in"
ACTIVE_STATES: Final = frozenset({"preparing", "offered", "accepted", "fetching", "verifying"})
MAX_STATE_FILE_BYTES: Final = 64 * 1024
_HEX_TRANSFER: Final = re.compile(r"[0-9a-f]{32}")


@dataclass
class TransferState:
    """One transfer as this node sees it (see the module docstring for the states)."""

    transfer_id: str
    direction: str
    peer: str
    peer_key: str
    purpose: str
    mode: str
    state: Phase
    created_ms: int
    detail: str = ""
    files: int = 0
    files_done: int = 0
    study_bytes: int = 0
    fetch_bytes: int = 0
    fetched_bytes: int = 0
    capability: str = ""
    data_url: str = ""
    offer_record: str = ""
    received_record: str = ""
    access_records: list[str] = field(default_factory=list)
    # Users by vault reference once saved (a ``user:...`` id until then), "" if none or erased:
    user: str = ""  # who sent; on a received transfer, empty
    to_user: str = ""  # the recipient user the sender named, if any
    fault: str = ""  # when failed: whose fault, as jobs.fault_of says ("caller": the node refused)
    source_sealed: str = ""  # sent: the source, sealed to our own key (base64), to send it again

    def __post_init__(self) -> None:
        self.state = Phase(self.state)  # a name from a file or a caller: refused if unknown

    def move(self, target: Phase, detail: str | None = None) -> None:
        """Move to ``target`` (a usage error if the table forbids it), with ``detail`` if given."""
        self.state = TRANSFER_LIFECYCLE.move(self.state, target)
        if detail is not None:
            self.detail = detail

    @property
    def final(self) -> bool:
        """Whether the transfer has ended (no move is left)."""
        return TRANSFER_LIFECYCLE.final(self.state)

    def view(self) -> dict[str, Any]:
        """Everything but the capability token and the source, users as stored.

        :meth:`TransferStates.view` names the users.
        """
        value = dataclasses.asdict(self)
        del value["capability"], value["source_sealed"]
        return value


def check_transfer_id(text: str) -> str:
    """``text`` if it is a transfer id (32 lowercase hex digits), else :class:`NodeUsageError`."""
    if not _HEX_TRANSFER.fullmatch(text):
        raise NodeUsageError("a transfer id is 32 lowercase hex digits")
    return text


class PartyNames(Protocol):
    """Where the users of a transfer live (the audit vault, :class:`~mftp.node.audit.vault.AuditVault`)."""

    def reference(self, party_id: str) -> str:
        """The opaque reference of ``party_id`` (the vault keeps the name)."""

    def resolve(self, reference: str) -> str | None:
        """The party a reference stands for, or None once erased."""

    def is_erased_reference(self, reference: str) -> bool:
        """Whether the reference stood for a party since erased."""


_USER_FIELDS: Final = ("user", "to_user")


class TransferStates:
    """The transfer files of one node (blocking disk I/O; small files, called from the loop).

    With ``names`` (the node's audit vault) users are written as vault references; without, a
    state naming a user is refused rather than written in plain text.
    """

    def __init__(self, directory: Path, names: PartyNames | None = None) -> None:
        self.directory = directory
        self.names = names
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._cache: dict[str, TransferState] = {}
        for path in sorted(directory.glob("*.json")):
            state = self._load(path)
            self._cache[state.transfer_id] = state
            if names is not None and self._seal(state, loading=True):
                self.save(state)  # a user in plain text (an older file) or an erased one: rewrite

    def _load(self, path: Path) -> TransferState:
        data = path.read_bytes()[: MAX_STATE_FILE_BYTES + 1]
        if len(data) > MAX_STATE_FILE_BYTES:
            raise StorageDamaged(f"{path.name}: transfer state larger than {MAX_STATE_FILE_BYTES} bytes")
        try:
            value = json.loads(data)
            names = {f.name for f in dataclasses.fields(TransferState)}
            state = TransferState(**{k: v for k, v in value.items() if k in names})
            if not all(isinstance(getattr(state, f), str) for f in _USER_FIELDS):
                raise TypeError("users are strings")
            return state
        except (ValueError, TypeError) as exc:
            raise StorageDamaged(f"{path.name}: corrupt transfer state: {exc}") from None

    def _seal(self, state: TransferState, *, loading: bool = False) -> bool:
        """Put the users of ``state`` in the vault, leaving references; whether anything changed.

        An erased user is blanked when loading (the erasure came first) and refused otherwise.
        """
        changed = False
        for name in _USER_FIELDS:
            value = getattr(state, name)
            if not value:
                continue
            if value.startswith(REFERENCE_PREFIX):
                if self.names is not None and self.names.is_erased_reference(value):
                    setattr(state, name, "")  # an erasure that was not yet carried out here
                    changed = True
                continue
            if self.names is None:
                raise NodeUsageError("transfer states name users only through the audit vault")
            try:
                setattr(state, name, self.names.reference(value))
            except KeyErasedError:
                if not loading:
                    raise NodeUsageError("this user was erased at this institution") from None
                setattr(state, name, "")
            except NodeUsageError:
                if not loading:
                    raise
                raise StorageDamaged(f"transfer {state.transfer_id}: its {name} is not a user id") from None
            changed = True
        return changed

    def save(self, state: TransferState) -> None:
        """Write ``state`` atomically and keep it in memory (its users as vault references)."""
        check_transfer_id(state.transfer_id)
        self._seal(state)
        self._cache[state.transfer_id] = state
        path = self.directory / f"{state.transfer_id}.json"
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(dataclasses.asdict(state), handle, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    def party(self, value: str) -> str:
        """The user id a state field stands for: resolved through the vault, "" if none or erased."""
        if not value.startswith(REFERENCE_PREFIX):
            return value  # not saved yet: the id as given
        return (self.names.resolve(value) if self.names is not None else None) or ""

    def view(self, state: TransferState) -> dict[str, Any]:
        """What the API shows of ``state``: no capability token, users named while the vault holds them."""
        value = state.view()
        for name in _USER_FIELDS:
            value[name] = self.party(value[name])
        return value

    def forget(self, reference: str) -> None:
        """Blank every field that refers to ``reference`` (a party just erased) and rewrite its file."""
        for state in list(self._cache.values()):
            if reference in (state.user, state.to_user):
                state.user = "" if state.user == reference else state.user
                state.to_user = "" if state.to_user == reference else state.to_user
                self.save(state)

    def get(self, transfer_id: str) -> TransferState | None:
        """The transfer with this id, or ``None``."""
        return self._cache.get(transfer_id)

    def all(self) -> list[TransferState]:
        """Every transfer, newest first."""
        return sorted(self._cache.values(), key=lambda s: s.created_ms, reverse=True)

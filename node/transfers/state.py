"""What a node remembers of each transfer, sent or received: one small JSON file per transfer.

``data_dir/transfers/<transfer id hex>.json`` holds a :class:`TransferState`, replaced
atomically (temporary file, fsync, rename) on every change of state, so a restarted node
knows what it was doing: a received transfer still ``fetching`` is fetched again (the
blob store keeps every verified chunk), a sent one still ``offered`` is offered again.

The file holds no patient data: ids, the peer's name and key, purpose, mode, sizes, states,
record ids, the sending and recipient user ids (staff, as on the operator's own API) and the
capability token (useless without the recipient's private key).  Study
contents live encrypted in the blob store; the sealed manifest as a blob-store record.

States, in order (``failed`` can follow any state that is not final, with ``detail`` saying why)::

    sent:     preparing -> offered -> accepted (the recipient is fetching) -> delivered | refused
    received: fetching -> verifying -> complete

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
from typing import Any, Final

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


TRANSFER_LIFECYCLE: Final = Lifecycle(
    "transfer",
    {
        # sent
        Phase.PREPARING: frozenset({Phase.OFFERED, Phase.REFUSED, Phase.FAILED}),
        Phase.OFFERED: frozenset({Phase.ACCEPTED, Phase.DELIVERED, Phase.REFUSED, Phase.FAILED}),
        Phase.ACCEPTED: frozenset({Phase.DELIVERED, Phase.REFUSED, Phase.FAILED}),
        Phase.DELIVERED: frozenset(),
        Phase.REFUSED: frozenset(),
        # received; a restart resumes a transfer that was verifying by verifying it again
        Phase.FETCHING: frozenset({Phase.VERIFYING, Phase.FAILED}),
        Phase.VERIFYING: frozenset({Phase.VERIFYING, Phase.COMPLETE, Phase.FAILED}),
        Phase.COMPLETE: frozenset(),
        Phase.FAILED: frozenset(),
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
    user: str = ""  # who sent (``user:...``); on a received transfer, empty
    to_user: str = ""  # the recipient user the sender named, if any
    fault: str = ""  # when failed: whose fault, as jobs.fault_of says ("caller": the node refused)

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
        """What the API shows (everything but the capability token)."""
        value = dataclasses.asdict(self)
        del value["capability"]
        return value


def check_transfer_id(text: str) -> str:
    """``text`` if it is a transfer id (32 lowercase hex digits), else :class:`NodeUsageError`."""
    if not _HEX_TRANSFER.fullmatch(text):
        raise NodeUsageError("a transfer id is 32 lowercase hex digits")
    return text


class TransferStates:
    """The transfer files of one node (blocking disk I/O; small files, called from the loop)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._cache: dict[str, TransferState] = {}
        for path in sorted(directory.glob("*.json")):
            state = self._load(path)
            self._cache[state.transfer_id] = state

    def _load(self, path: Path) -> TransferState:
        data = path.read_bytes()[: MAX_STATE_FILE_BYTES + 1]
        if len(data) > MAX_STATE_FILE_BYTES:
            raise StorageDamaged(f"{path.name}: transfer state larger than {MAX_STATE_FILE_BYTES} bytes")
        try:
            value = json.loads(data)
            names = {f.name for f in dataclasses.fields(TransferState)}
            return TransferState(**{k: v for k, v in value.items() if k in names})
        except (ValueError, TypeError) as exc:
            raise StorageDamaged(f"{path.name}: corrupt transfer state: {exc}") from None

    def save(self, state: TransferState) -> None:
        """Write ``state`` atomically and keep it in memory."""
        check_transfer_id(state.transfer_id)
        self._cache[state.transfer_id] = state
        path = self.directory / f"{state.transfer_id}.json"
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(dataclasses.asdict(state), handle, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    def get(self, transfer_id: str) -> TransferState | None:
        """The transfer with this id, or ``None``."""
        return self._cache.get(transfer_id)

    def all(self) -> list[TransferState]:
        """Every transfer, newest first."""
        return sorted(self._cache.values(), key=lambda s: s.created_ms, reverse=True)

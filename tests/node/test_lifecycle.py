"""Lifecycles as tables: the transfer's and the peer network's legal moves, and one function that moves."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path

import pytest

from mftp.node.errors import NodeUsageError, StorageDamaged
from mftp.node.lifecycle import Lifecycle
from mftp.node.p2p.network import NETWORK_LIFECYCLE, NetworkPhase
from mftp.node.transfers.state import IN, OUT, TRANSFER_LIFECYCLE, Phase, TransferState, TransferStates


class Light(StrEnum):
    RED = "red"
    GREEN = "green"
    OFF = "off"


def test_a_table_moves_only_as_it_says() -> None:
    table = Lifecycle(
        "light", {Light.RED: frozenset({Light.GREEN}), Light.GREEN: frozenset(), Light.OFF: frozenset()}
    )
    assert table.move(Light.RED, Light.GREEN) is Light.GREEN
    with pytest.raises(NodeUsageError, match="light: green -> red is not a legal move"):
        table.move(Light.GREEN, Light.RED)
    assert table.final(Light.GREEN) and not table.final(Light.RED)


def test_a_table_must_give_every_state_a_row() -> None:
    with pytest.raises(NodeUsageError, match="no row"):
        Lifecycle("light", {Light.RED: frozenset({Light.GREEN})})


def _transfer(state: str, direction: str = OUT) -> TransferState:
    return TransferState("ab" * 16, direction, "hospital-b", "00" * 32, "TREAT", "identified", state, 1)


@pytest.mark.parametrize(
    "path",
    [
        ["preparing", "offered", "accepted", "delivered"],
        ["preparing", "offered", "delivered"],
        ["preparing", "offered", "refused"],
        ["preparing", "refused"],
        ["preparing", "failed"],
        ["fetching", "verifying", "complete"],
        ["fetching", "verifying", "verifying", "failed"],
        ["fetching", "failed"],
    ],
)
def test_every_path_a_transfer_takes_is_legal(path: list[str]) -> None:
    state = _transfer(path[0])
    for target in path[1:]:
        state.move(Phase(target))
    assert state.state == path[-1] and state.final == (path[-1] != "verifying")


@pytest.mark.parametrize(
    ("current", "target"),
    [
        ("delivered", "offered"),
        ("refused", "failed"),  # a refusal stands: fail() keeps it (TransferService.fail)
        ("complete", "failed"),
        ("preparing", "fetching"),  # a sent transfer never becomes a received one
        ("fetching", "complete"),  # nothing is complete before it is verified
        ("failed", "fetching"),
    ],
)
def test_an_illegal_move_is_our_bug_and_refused(current: str, target: str) -> None:
    state = _transfer(current)
    with pytest.raises(NodeUsageError, match=f"transfer: {current} -> {target}"):
        state.move(Phase(target))
    assert state.state == current


def test_state_files_written_before_the_table_still_load(tmp_path: Path) -> None:
    folder = tmp_path / "transfers"
    folder.mkdir()
    old = {  # as the node wrote them before: the state a plain string
        "transfer_id": "cd" * 16, "direction": IN, "peer": "hospital-a", "peer_key": "00" * 32,
        "purpose": "TREAT", "mode": "pseudonymised", "state": "fetching", "created_ms": 5, "detail": "",
        "files": 3, "files_done": 1, "study_bytes": 10, "fetch_bytes": 9, "fetched_bytes": 4,
        "capability": "", "data_url": "", "offer_record": "", "received_record": "", "access_records": [],
        "user": "", "to_user": "",
    }  # fmt: skip
    (folder / f"{'cd' * 16}.json").write_text(json.dumps(old))
    states = TransferStates(folder)
    loaded = states.get("cd" * 16)
    assert loaded is not None and loaded.state is Phase.FETCHING
    loaded.move(Phase.VERIFYING)
    states.save(loaded)
    assert json.loads((folder / f"{'cd' * 16}.json").read_text())["state"] == "verifying"
    assert loaded.view()["state"] == "verifying"


def test_a_state_file_with_an_unknown_state_is_refused_by_name(tmp_path: Path) -> None:
    folder = tmp_path / "transfers"
    folder.mkdir()
    state = _transfer("offered")
    TransferStates(folder).save(state)
    path = folder / f"{state.transfer_id}.json"
    path.write_text(path.read_text().replace('"offered"', '"teleported"'))
    with pytest.raises(StorageDamaged, match=f"{state.transfer_id}.json"):
        TransferStates(folder)


def test_the_peer_network_lifecycle() -> None:
    move = NETWORK_LIFECYCLE.move
    phase = NetworkPhase.NEW
    for target in (NetworkPhase.STARTING, NetworkPhase.RUNNING, NetworkPhase.STOPPING, NetworkPhase.STOPPED):
        phase = move(phase, target)
    assert move(phase, NetworkPhase.STOPPED) is NetworkPhase.STOPPED  # stop() twice is safe
    with pytest.raises(NodeUsageError):
        move(NetworkPhase.STOPPED, NetworkPhase.STARTING)  # a network starts once
    with pytest.raises(NodeUsageError):
        move(NetworkPhase.RUNNING, NetworkPhase.STARTING)
    assert TRANSFER_LIFECYCLE.final(Phase.DELIVERED)

"""The share room reads received studies through the transfers room's access (glue only).

The restore itself (decrypt, decompress, check against the manifest) is ``restore_entry``, run
end to end by the transfers' view tests; here the adapter's names, refusals and error mapping.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from mftp.node.errors import NodeInputError, NodeUsageError
from mftp.node.shares import held as held_module
from mftp.node.shares.held import TransferStudies
from mftp.transfer.errors import TransferInputError

T = "ab" * 16


class FakeAccess:
    def __init__(self) -> None:
        self.service = SimpleNamespace(store="store", object_key="key")
        self.manifest_ = SimpleNamespace(
            entries=[SimpleNamespace(name="00000.dcm"), SimpleNamespace(name="00001.dcm")]
        )

    def received(self, transfer_id: str) -> Any:
        if transfer_id != T:
            raise NodeUsageError(f"no received transfer {transfer_id}")
        return SimpleNamespace(transfer_id=T)

    async def manifest(self, state: Any) -> Any:
        return self.manifest_


async def test_the_adapter_names_reads_and_maps_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []

    def restore(store: Any, manifest: Any, key: Any, entry: Any) -> bytes:
        calls.append((store, key, entry.name))
        if entry.name == "00001.dcm":
            raise TransferInputError("00001.dcm: hash mismatch")
        return b"DICM"

    monkeypatch.setattr(held_module, "restore_entry", restore)
    studies = TransferStudies(cast(Any, FakeAccess()))
    study = await studies.open_study(T)
    assert study.transfer_id == T and study.names == ("00000.dcm", "00001.dcm")
    assert await studies.read(study, "00000.dcm") == b"DICM"
    assert calls == [("store", "key", "00000.dcm")]
    with pytest.raises(NodeInputError) as failed:
        await studies.read(study, "00001.dcm")
    assert "00001" not in str(failed.value)  # the transfer is named, not the file
    with pytest.raises(NodeInputError):
        await studies.read(study, "../../etc/passwd")
    with pytest.raises(NodeUsageError):
        await studies.open_study("cd" * 16)

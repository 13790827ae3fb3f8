"""JSON views of ledger objects for the HTTP API (bytes as lowercase hex).

Only public ledger fields appear here: tags are pseudonymous, envelopes are
sealed, and no patient or user identity is ever on the ledger.
"""

from __future__ import annotations

from typing import Any

from mftp.ledger.block import Block, BlockHeader, CommitCertificate, ValidatorSet
from mftp.ledger.records import Record
from mftp.ledger.store import StoredRecord


def _hex(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: _hex(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_hex(v) for v in value]
    return value


def header_view(header: BlockHeader) -> dict[str, Any]:
    """A block header, with its hash."""
    return {"hash": header.hash.hex(), **_hex(header.to_value())}


def certificate_view(cert: CommitCertificate) -> dict[str, Any]:
    """A commit certificate: who signed, and the signatures."""
    return {
        "height": cert.height,
        "round": cert.round,
        "block_hash": cert.block_hash.hex(),
        "signatures": [{"validator": k.hex(), "signature": s.hex()} for k, s in cert.signatures],
    }


def record_view(record: Record) -> dict[str, Any]:
    """A record's public fields."""
    return {
        "id": record.record_id.hex(),
        "type": record.type.name.lower(),
        "schema": record.version,
        "time_ms": record.time_ms,
        "author": record.author.hex(),
        "tags": [t.hex() for t in record.tags],
        "envelope_bytes": len(record.envelope),
        "commitments": _hex(record.commitments),
        "body": _hex(record.body),
        "signature": record.signature.hex(),
        "hash": record.hash.hex(),
    }


def stored_record_view(stored: StoredRecord) -> dict[str, Any]:
    """A record with where it sits in the chain."""
    return {
        **record_view(stored.record),
        "height": stored.height,
        "index_in_block": stored.index_in_block,
        "ledger_index": stored.ledger_index,
    }


def block_view(block: Block, cert: CommitCertificate | None, *, with_records: bool = False) -> dict[str, Any]:
    """A block: header, record ids (or records), last commit and its own certificate."""
    view: dict[str, Any] = {
        "height": block.height,
        "header": header_view(block.header),
        "record_ids": [r.record_id.hex() for r in block.records],
        "last_commit": None if block.last_commit is None else certificate_view(block.last_commit),
        "certificate": None if cert is None else certificate_view(cert),
    }
    if with_records:
        view["records"] = [record_view(r) for r in block.records]
    return view


def validators_view(validators: ValidatorSet) -> list[dict[str, Any]]:
    """The validator set."""
    return [{"name": v.name, "sign_key": v.sign_key.hex(), "power": v.power} for v in validators.validators]

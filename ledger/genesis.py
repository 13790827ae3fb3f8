"""The genesis file: the consortium, its chain id and its founding members.

It is a JSON document the members exchange and check by hash before they start
(keys in hex, so an operator can read and compare them).  Its hash is the
``prev_hash`` of block 1, so every block is bound to one genesis.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from mftp.crypto import canonical

from . import schema as s
from .block import MAX_CHAIN_ID_CHARS, MAX_POWER, MAX_VALIDATORS, Validator, ValidatorSet
from .errors import LedgerInputError, LedgerUsageError

GENESIS_VERSION: Final = 1
MAX_GENESIS_BYTES: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class AuditNode:
    """An audit-only member: syncs and verifies, never votes."""

    name: str
    sign_key: bytes


@dataclass(frozen=True, slots=True)
class Genesis:
    """The founding document of a consortium chain."""

    consortium: str
    chain_id: str
    time_ms: int
    validators: ValidatorSet
    auditors: tuple[AuditNode, ...] = ()

    def to_value(self) -> dict[str, Any]:
        """Canonical map form (what the hash covers)."""
        return {
            "version": GENESIS_VERSION,
            "consortium": self.consortium,
            "chain_id": self.chain_id,
            "time_ms": self.time_ms,
            "validators": self.validators.to_value(),
            "auditors": [{"name": a.name, "key": a.sign_key} for a in self.auditors],
        }

    @property
    def hash(self) -> bytes:
        """The genesis hash (``prev_hash`` of block 1)."""
        return canonical.digest(self.to_value())

    def to_json(self) -> str:
        """Readable JSON with hex keys."""
        value = self.to_value()
        value["validators"] = [{**v, "key": v["key"].hex()} for v in value["validators"]]
        value["auditors"] = [{**a, "key": a["key"].hex()} for a in value["auditors"]]
        return json.dumps(value, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Genesis:
        """Parse and validate a genesis document; errors name the offending field."""
        try:
            raw = json.loads(text)
            raw["validators"] = [{**v, "key": bytes.fromhex(v["key"])} for v in raw["validators"]]
            raw["auditors"] = [{**a, "key": bytes.fromhex(a["key"])} for a in raw.get("auditors", [])]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise LedgerInputError(f"genesis: not a valid genesis document: {exc}") from None
        return cls.from_value(raw)

    @classmethod
    def from_value(cls, raw: Any) -> Genesis:
        """Build from the canonical map form."""
        member = s.Field("map", max_len=3, item=None)
        s.check(
            {
                "version": s.integer(GENESIS_VERSION, GENESIS_VERSION),
                "consortium": s.text(128, min_len=1),
                "chain_id": s.text(MAX_CHAIN_ID_CHARS, min_len=1),
                "time_ms": s.integer(),
                "validators": s.list_of(member, MAX_VALIDATORS, min_len=1),
                "auditors": s.list_of(member, MAX_VALIDATORS),
            },
            raw,
            "genesis",
            LedgerInputError,
        )
        validators = ValidatorSet.from_value(raw["validators"])
        auditor_schema = {"name": s.text(64, min_len=1), "key": s.exact_bytes(32)}
        for item in raw["auditors"]:
            s.check(auditor_schema, item, "genesis.auditors", LedgerInputError)
        auditors = tuple(AuditNode(a["name"], a["key"]) for a in raw["auditors"])
        if {a.sign_key for a in auditors} & {v.sign_key for v in validators.validators}:
            raise LedgerInputError("genesis: a key cannot be both validator and audit node")
        return cls(raw["consortium"], raw["chain_id"], raw["time_ms"], validators, auditors)

    @classmethod
    def load(cls, path: Path) -> Genesis:
        """Read a genesis file."""
        data = Path(path).read_bytes()
        if len(data) > MAX_GENESIS_BYTES:
            raise LedgerInputError(f"genesis file {path} is larger than {MAX_GENESIS_BYTES} bytes")
        return cls.from_json(data.decode("utf-8", errors="replace"))

    def save(self, path: Path) -> None:
        """Write the genesis file (public data: mode 0644)."""
        Path(path).write_text(self.to_json(), encoding="utf-8")


def make_genesis(
    consortium: str,
    chain_id: str,
    time_ms: int,
    validators: list[tuple[str, bytes, int]],
    auditors: list[tuple[str, bytes]] = (),  # type: ignore[assignment]
) -> Genesis:
    """Build a genesis from (name, key, power) and (name, key) tuples."""
    for name, _key, power in validators:
        if not 1 <= power <= MAX_POWER:
            raise LedgerUsageError(f"validator {name!r}: power outside 1..{MAX_POWER}")
    vset = ValidatorSet(Validator(n, k, p) for n, k, p in validators)
    genesis = Genesis(consortium, chain_id, time_ms, vset, tuple(AuditNode(n, k) for n, k in auditors))
    Genesis.from_value(genesis.to_value())  # one validation path for built and loaded genesis
    return genesis

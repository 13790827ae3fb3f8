"""A signed audit report bundle that anyone can verify offline with only the genesis file.

:func:`make_bundle` wraps an auditor's scan (:meth:`~.scan.Auditor.scan`: every match with its
inclusion proof and the institution's disclosed details) with what checking it needs: the
canonical bytes of each matched record, the certified header of the scanned height and its
commit certificate, and the genesis validator set and audit nodes, all signed by the audit
node's key (signature domain ``audit-bundle``).

:func:`verify_bundle` (``mftp-node audit verify FILE --genesis genesis.json``) checks, with no
node and no network:

1. the bundle's genesis part equals the given genesis file (chain id, validators, audit nodes);
2. the signer is an audit node of that genesis, and its signature covers every byte of the
   bundle's content (canonical JSON: sorted keys, no spaces);
3. the header is certified by the genesis validators (a chain whose validator set changed since
   genesis is refused: this verifier follows no membership change);
4. every match's record is in the ledger of that header (its inclusion proof), is signed by its
   author, and has the id, type and time the scan states.

Any failure is a :class:`BundleInvalid`; the CLI exits 4 for it.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Final

from mftp.crypto import canonical
from mftp.crypto.errors import CryptoError
from mftp.crypto.signing import SigningIdentity, verify
from mftp.ledger.block import BlockHeader, CommitCertificate
from mftp.ledger.errors import LedgerError
from mftp.ledger.genesis import Genesis
from mftp.ledger.proofs import InclusionProof, verify_certified_header, verify_record_in_ledger
from mftp.ledger.store import BlockStore

from ..errors import NodeInputError

FORMAT: Final = "mftp-audit-bundle/1"
DOMAIN: Final = "audit-bundle"
MAX_BUNDLE_BYTES: Final = 256 << 20
MAX_MATCHES: Final = 1_000_000


class BundleInvalid(NodeInputError):
    """The bundle does not verify: changed, forged, or not of this consortium."""


def content_bytes(content: dict[str, Any]) -> bytes:
    """The signed bytes of a bundle's content: canonical JSON (sorted keys, no spaces, UTF-8)."""
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _genesis_part(genesis: Genesis) -> dict[str, Any]:
    return {
        "chain_id": genesis.chain_id,
        "hash": genesis.hash.hex(),
        "validators": [
            {"name": v.name, "sign_key": v.sign_key.hex(), "power": v.power}
            for v in genesis.validators.validators
        ],
        "audit_nodes": [{"name": a.name, "sign_key": a.sign_key.hex()} for a in genesis.auditors],
    }


def make_bundle(
    scan: dict[str, Any], store: BlockStore, genesis: Genesis, identity: SigningIdentity
) -> dict[str, Any]:
    """The scan, its records, its certified header and the genesis set, signed by ``identity``."""
    height = int(scan["height"])
    records = {}
    for match in scan["matches"]:
        found = store.record(bytes.fromhex(match["record_id"]))
        if found is None:
            raise BundleInvalid(f"record {match['record_id']} of the scan is not in the store")
        records[match["record_id"]] = _b64(found.record.to_bytes())
    content = {
        "format": FORMAT,
        "genesis": _genesis_part(genesis),
        "header": _b64(canonical.encode(store.header(height).to_value())),
        "certificate": _b64(canonical.encode(store.certificate(height).to_value())),
        "records": records,
        "scan": scan,
        "signer": identity.public.sign_key.hex(),
    }
    return {"content": content, "signature": identity.sign(DOMAIN, content_bytes(content)).hex()}


def _decode(text: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except (binascii.Error, ValueError):
        raise BundleInvalid(f"{what} is not base64") from None


def verify_bundle(data: bytes, genesis: Genesis) -> dict[str, Any]:
    """Check a bundle (module docstring); its summary, or :class:`BundleInvalid`."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleInvalid(f"a bundle is at most {MAX_BUNDLE_BYTES >> 20} MiB")
    try:
        bundle = json.loads(data)
        content, signature = bundle["content"], bytes.fromhex(bundle["signature"])
        signer = bytes.fromhex(content["signer"])
        if content["format"] != FORMAT:
            raise BundleInvalid(f"not an {FORMAT} bundle")
    except (ValueError, KeyError, TypeError, RecursionError):
        raise BundleInvalid("not an audit bundle (malformed JSON or missing parts)") from None
    if content.get("genesis") != _genesis_part(genesis):
        raise BundleInvalid("the bundle is of another consortium than this genesis file")
    if signer not in {a.sign_key for a in genesis.auditors}:
        raise BundleInvalid("the bundle is not signed by an audit node of this genesis")
    try:
        verify(signer, DOMAIN, content_bytes(content), signature)
    except CryptoError:
        raise BundleInvalid("the audit node's signature does not match the bundle's content") from None
    try:
        header = BlockHeader.from_value(canonical.decode(_decode(content["header"], "header")))
        cert = CommitCertificate.from_value(canonical.decode(_decode(content["certificate"], "certificate")))
        verify_certified_header(header, cert, genesis.validators)
        scan = content["scan"]
        if int(scan["height"]) != header.height or scan["ledger_root"] != header.ledger_root.hex():
            raise BundleInvalid("the scan names another height or ledger root than its certified header")
        matches = scan["matches"]
        if not isinstance(matches, list) or len(matches) > MAX_MATCHES or len(matches) != scan["match_count"]:
            raise BundleInvalid("the scan's matches do not add up")
        for match in matches:
            proof = match["proof"]
            path = tuple(bytes.fromhex(p) for p in proof["path"])
            record_bytes = _decode(content["records"][match["record_id"]], "a record")
            record = verify_record_in_ledger(
                record_bytes, InclusionProof(int(proof["ledger_index"]), int(proof["ledger_size"]), path),
                header, cert, genesis.validators,
            )  # fmt: skip
            if (record.record_id.hex(), record.type.name.lower(), record.time_ms) != (
                match["record_id"], match["type"], match["time_ms"],
            ):  # fmt: skip
                raise BundleInvalid(f"match {match['record_id']} does not describe its record")
    except BundleInvalid:
        raise
    except (LedgerError, CryptoError) as exc:
        raise BundleInvalid(f"a proof does not verify: {exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleInvalid(f"a part of the bundle is malformed: {type(exc).__name__}") from None
    return {
        "grant_id": scan.get("grant_id"),
        "subject": scan.get("subject"),
        "height": header.height,
        "ledger_size": header.ledger_size,
        "matches": len(matches),
        "signer": next(a.name for a in genesis.auditors if a.sign_key == signer),
    }

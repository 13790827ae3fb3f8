"""What a privacy officer greps a node's files for: a name in any spelling, and the vault decrypted."""

from __future__ import annotations

import base64
from pathlib import Path

import nacl.secret

from mftp.crypto.signing import SigningIdentity
from mftp.node.audit.vault import FRAME_HEADER, vault_key


def _base64_fragments(word: bytes) -> set[bytes]:
    """The base64 characters fixed by ``word`` alone, at each of the three byte alignments."""
    found = set()
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + word)
        start, end = -(-shift * 8 // 6), (shift + len(word)) * 8 // 6
        found |= {encoded[start:end], encoded[start:end].replace(b"+", b"-").replace(b"/", b"_")}
    return found


def spellings(word: str) -> list[bytes]:
    """``word`` as it could sit in a file: plain, UTF-16 both ways, hex both cases, base64."""
    raw = word.encode()
    return [
        raw.lower(),
        word.encode("utf-16-le"),
        word.encode("utf-16-be"),
        raw.hex().encode(),
        raw.hex().upper().encode(),
        *_base64_fragments(raw),
    ]


def where_named(root: Path, word: str, *, skip: Path | None = None) -> list[str]:
    """Every file under ``root`` (but ``skip``) holding ``word`` in any spelling, with the spelling."""
    hits = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if skip is not None and path.is_relative_to(skip):
            continue
        data = path.read_bytes()
        lowered = data.lower()
        hits += [f"{path.relative_to(root)}: {s!r}" for s in spellings(word) if s in data or s in lowered]
    return hits


def vault_plain(vault_dir: Path, identity: SigningIdentity) -> bytes:
    """Everything in the vault's files, decrypted with the node's own key (the strongest reader)."""
    box = nacl.secret.SecretBox(vault_key(identity))
    plain = [box.decrypt((vault_dir / "parties.bin").read_bytes())]
    log = (vault_dir / "details.log").read_bytes() if (vault_dir / "details.log").exists() else b""
    offset = 0
    while offset < len(log):
        (size,) = FRAME_HEADER.unpack_from(log, offset)
        plain.append(box.decrypt(log[offset + 4 : offset + 4 + size]))
        offset += 4 + size
    return b"\n".join(plain)

"""A newcomer beside a running devnet: its own directory, key and config, one bootstrap address.

What ``mftp-node init`` and ``member request`` do for a real institution, for tests and
``scripts/demo_join.py``: the newcomer knows only the genesis and one member's address (with its
peer id); everything else it learns from the chain once a member's proposal lets it in.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path

from mftp.crypto.keyfile import save_identity, write_public_identity
from mftp.crypto.signing import SigningIdentity
from mftp.ledger.genesis import Genesis

from ..private_files import private_dir, write_private
from .consortium import Member, free_ports

TEST_BOOTSTRAP_REDIAL_MS = 1000  # the newcomer is refused until its proposal is on the chain


def add_newcomer(
    root: Path,
    name: str,
    *,
    role: str,
    bootstrap: Member,
    bootstrap_peer_id: str,
    country: str = "NO",
    consensus: dict[str, int] | None = None,
) -> Member:
    """Lay out a newcomer under ``root`` whose config names only ``bootstrap``'s address."""
    identity = SigningIdentity.generate()
    directory = root / name
    private_dir(directory)
    private_dir(directory / "keys")
    save_identity(directory / "keys" / "node.key", identity)
    write_public_identity(directory / "node.pub.json", identity.public, name=name)
    Genesis.load(bootstrap.directory / "genesis.json").save(directory / "genesis.json")
    p2p, api, data = free_ports(3)
    member = Member(name, role, directory, identity.public.sign_key, p2p, api, data)
    token = secrets.token_urlsafe(32)
    write_private(directory / "keys" / "api.token", token + "\n")
    sandbox = json.dumps(str(root.parent))
    lines = [
        "# A newcomer: it knows the genesis and one member's address; the chain tells it the rest.",
        "[node]",
        f'name = "{name}"',
        f'role = "{role}"',
        f'country = "{country}"',
        'log_format = "json"',
        "",
        "[p2p]",
        f'listen = ["{member.p2p_address}"]',
        f"redial_max_ms = {TEST_BOOTSTRAP_REDIAL_MS}",
        "",
        "[api]",
        f'listen = "127.0.0.1:{api}"',
        f'token_sha256 = ["{hashlib.sha256(token.encode()).hexdigest()}"]',
        'service_account = "devnet-operator"',
        "",
        "[people]",
        "password_memory_kib = 1024  # a throw-away test network (see consortium.py)",
        "",
        "[transfer]",
        f'data_listen = "127.0.0.1:{data}"',
        f"source_dirs = [{sandbox}]",
        f"export_dirs = [{sandbox}]",
        "",
        "[consensus]",
        *(f"{key} = {value}" for key, value in sorted((consensus or {}).items())),
        "",
        "[[p2p.peers]]",
        f'address = ["{bootstrap.p2p_address}/p2p/{bootstrap_peer_id}"]',
    ]
    write_private(member.config_path, "\n".join(lines) + "\n")
    return member

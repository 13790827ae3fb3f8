"""The member directory as the chain says, and who this node dials.

Pure functions of a :class:`~mftp.ledger.chain.ChainState` (and the configured bootstrap
peers): every node that holds the same chain computes the same directory.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mftp.ledger.chain import ChainState
from mftp.ledger.membership import MemberEntry

from ..config import Peer


@dataclass(frozen=True)
class Member:
    """One member (or a candidate of an open proposal to add it) with its directory entry."""

    key: bytes
    name: str
    role: str  # validator | audit | candidate
    power: int
    entry: MemberEntry | None

    def view(self) -> dict[str, Any]:
        """JSON view (keys in hex)."""
        entry = self.entry
        return {
            "name": self.name,
            "sign_key": self.key.hex(),
            "role": self.role,
            "power": self.power,
            "country": entry.country if entry else "",
            "addresses": list(entry.addresses) if entry else [],
            "data_url": entry.data_url if entry else "",
            "tls_key_sha256": entry.tls_key_sha256.hex() if entry else "",
            "entry_seq": entry.seq if entry else None,
        }


def members(state: ChainState, *, candidates: bool = False) -> list[Member]:
    """The validators and audit nodes now (and, if asked, the newcomers of open proposals)."""
    entries = {e.key: e for e in state.directory}
    out = [
        Member(v.sign_key, v.name, "validator", v.power, entries.get(v.sign_key))
        for v in state.validators.validators
    ]
    out += [Member(a.sign_key, a.name, "audit", 0, entries.get(a.sign_key)) for a in state.auditors]
    if candidates:
        out += [
            Member(p.member, p.name, "candidate", p.power, p.entry)
            for p in state.proposals
            if p.action == "add"
        ]
    return out


def candidate_names(state: ChainState) -> dict[bytes, str]:
    """Newcomers of open add proposals: let in on the peer network so they can sync before they vote."""
    return {p.member: p.name for p in state.proposals if p.action == "add"}


def dial_addresses(state: ChainState, bootstrap: Iterable[Peer]) -> dict[bytes, list[str]]:
    """Addresses to dial for each member: its directory entry's, then the configured ones."""
    plan: dict[bytes, list[str]] = {}
    for member in members(state, candidates=True):
        if member.entry is not None:
            plan.setdefault(member.key, []).extend(member.entry.addresses)
    for peer in bootstrap:
        addresses = plan.setdefault(peer.sign_key, [])
        addresses.extend(a for a in peer.address if a not in addresses)
    return plan


def known_peers(state: ChainState, configured: Iterable[Peer]) -> tuple[Peer, ...]:
    """Members as :class:`~mftp.node.config.Peer` records: the chain's entry wins over the config.

    A member without an entry keeps what ``[[p2p.peers]]`` says of it (name, data URL and
    country); a configured peer that is not a member is still listed (the caller checks
    membership, as before).  A ``data_url`` configured for a member is a local route to it (a
    proxy, a NAT) and wins over the entry's: the data plane pins the member's key either way,
    so a wrong route can fail but never reach someone else.  The country is the chain's.
    """
    config = {p.sign_key: p for p in configured}
    out: dict[bytes, Peer] = {}
    for member in members(state):
        entry, old = member.entry, config.get(member.key)
        if entry is not None:
            url = old.data_url if old is not None and old.data_url else entry.data_url
            out[member.key] = Peer(member.name, member.key, entry.addresses, url, entry.country)
        elif old is not None:
            out[member.key] = Peer(member.name, member.key, old.address, old.data_url, old.country)
    for key, peer in config.items():
        if key not in out and peer.name:
            out[key] = peer
    return tuple(out.values())

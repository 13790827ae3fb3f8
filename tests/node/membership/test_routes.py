"""The /membership routes and the service behind them, over a real chain state and a fake sign-in.

Adversarial: every malformed or refused request is a 4xx naming the reason (what f would
become), never a 500; nothing reaches the mempool that the chain's rules would refuse.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mftp.crypto.signing import SigningIdentity
from mftp.ledger import sample
from mftp.ledger.chain import ChainState
from mftp.ledger.records import Record, RecordType
from mftp.node.api.server import Api
from mftp.node.clock import FakeClock
from mftp.node.config import Peer, load_config, parse_config
from mftp.node.errors import ConfigError, NodeUsageError
from mftp.node.membership import directory
from mftp.node.membership.console import MembershipConsole
from mftp.node.membership.routes import MembershipApi
from mftp.node.membership.service import PROPOSAL_LIFECYCLE, MembershipService, ProposalState

VALIDATORS = sample.identities(4, "routes")
NEWCOMER = sample.identities(1, "routes-newcomer")[0]
EXAMPLE = Path(__file__).resolve().parents[3] / "network.example.toml"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FakeHost:
    """The node as the service sees it: a chain builder's state, a mempool that records."""

    def __init__(self, identity: SigningIdentity) -> None:
        self.genesis = sample.sample_genesis(VALIDATORS, chain_id="routes")
        self.builder = sample.ChainBuilder(self.genesis, [*VALIDATORS, NEWCOMER])
        self.builder.next_block([])
        self.identity = identity
        self.config = load_config(EXAMPLE)
        self.clock = FakeClock(now_ms=self.builder.state.last_time_ms + 500)
        self.submitted: list[Record] = []

    @property
    def chain_state(self) -> ChainState:
        return self.builder.state

    async def submit_records(self, records: list[Record]) -> list[str]:
        self.submitted.extend(records)
        return ["accepted"] * len(records)

    def commit(self) -> None:
        """Put what was submitted in the next block (as consensus would) and move the clock."""
        self.builder.next_block(self.submitted, time_ms=self.clock.now_ms())
        self.submitted = []
        self.clock.advance(1000)


def fake_authenticated(handler: Handler) -> Handler:
    """The gate in short (the real one is tested in tests/node/api): an operator unless refused."""

    async def check(request: web.Request) -> web.StreamResponse:
        if request.headers.get("X-Test-Refuse"):
            raise web.HTTPUnauthorized(text="sign in first")
        request["principal"] = {"name": "op", "via": "session", "roles": ["operator"]}
        return await handler(request)

    return check


@pytest.fixture
async def served() -> AsyncIterator[tuple[TestClient, FakeHost]]:
    host = FakeHost(VALIDATORS[0])
    service = MembershipService(cast(Any, host))
    errors = Api(cast(Any, None), [])._errors  # the API's one mapping of errors to statuses
    app = web.Application(middlewares=[errors])
    MembershipApi(service, host.genesis.to_json).add_routes(app.router, fake_authenticated)
    async with TestClient(TestServer(app)) as client:
        yield client, host


def _request_hex(host: FakeHost, **kw: Any) -> str:
    return sample.join_request(NEWCOMER, host.genesis, name=kw.pop("name", "newcomer"), **kw).hex()


async def test_the_flow_through_the_routes(served: tuple[TestClient, FakeHost]) -> None:
    client, host = served
    overview = await (await client.get("/membership")).json()
    assert {m["role"] for m in overview["members"]} == {"validator"} and overview["proposals"] == []
    answer = await client.post("/membership/proposals", json={"request": _request_hex(host)})
    assert answer.status == 202, await answer.text()
    proposal_id = (await answer.json())["proposal_id"]
    assert host.submitted[0].type is RecordType.MEMBERSHIP_PROPOSAL
    host.commit()
    overview = await (await client.get("/membership")).json()
    (pending,) = overview["proposals"]
    assert pending["id"] == proposal_id and pending["state"] == "pending" and pending["expires_ms"] > 0
    assert any(m["role"] == "candidate" and m["name"] == "newcomer" for m in overview["members"])
    vote = await client.post(f"/membership/proposals/{proposal_id}/votes", json={"vote": "approve"})
    assert vote.status == 202
    again = await client.post(f"/membership/proposals/{proposal_id}/votes", json={"vote": "approve"})
    assert again.status == 202  # not yet on the chain: the mempool holds the first one
    host.submitted = host.submitted[:1]
    host.commit()
    again = await client.post(f"/membership/proposals/{proposal_id}/votes", json={"vote": "reject"})
    assert again.status == 400 and "voted on the proposal already" in (await again.json())["error"]
    genesis = await client.get("/membership/genesis")
    assert genesis.status == 200 and "routes" in await genesis.text()


async def test_a_removal_below_four_is_refused_with_what_f_becomes(
    served: tuple[TestClient, FakeHost],
) -> None:
    client, host = served
    member = VALIDATORS[3].public.sign_key.hex()
    answer = await client.post("/membership/proposals", json={"action": "remove", "member": member})
    assert answer.status == 400
    assert "f would become 0" in (await answer.json())["error"] and host.submitted == []
    leave = await client.post("/membership/leave")
    assert leave.status == 400 and "f would become 0" in (await leave.json())["error"]


BAD_BODIES: list[tuple[Any, str]] = [
    ({"request": "zz"}, "must be hex"),
    ({"request": "00" * 40}, "not a valid join request"),
    ({"request": "ab" * 5000}, "too long"),
    ({"request": "00", "member": "00" * 32}, "proposed alone"),
    ({"action": "remove", "member": "00" * 31}, "32 bytes"),
    ({"action": "remove", "member": "00" * 32}, "not a member"),
    ({"action": "power", "member": "00" * 32, "power": "2"}, "names a validator"),
    ({"action": "power", "member": VALIDATORS[1].public.sign_key.hex(), "power": "-1"}, "whole number"),
    ({"action": "dance"}, "expected"),
    ({"expires_in_s": "5", "action": "remove", "member": "00" * 32}, "expires_in_s"),
    ({"nonsense": "1"}, "JSON object"),
    ([1, 2], "JSON object"),
    ({"request": 7}, "JSON object"),
]


@pytest.mark.parametrize(("body", "reason"), BAD_BODIES)
async def test_bad_proposals_are_4xx(served: tuple[TestClient, FakeHost], body: Any, reason: str) -> None:
    client, host = served
    answer = await client.post("/membership/proposals", json=body)
    assert answer.status == 400, await answer.text()
    assert reason in (await answer.json())["error"] and host.submitted == []


async def test_bad_votes_and_refusals(served: tuple[TestClient, FakeHost]) -> None:
    client, host = served
    cases = [
        ("/membership/proposals/xyz/votes", {"vote": "approve"}, 400, "32 hex digits"),
        ("/membership/proposals/" + "00" * 16 + "/votes", {"vote": "approve"}, 400, "no open proposal"),
        ("/membership/proposals/" + "00" * 16 + "/votes", {"vote": "maybe"}, 400, "approve"),
        ("/membership/proposals/" + "00" * 16 + "/votes", {}, 400, "JSON object"),
    ]
    for path, body, status, reason in cases:
        answer = await client.post(path, json=body)
        assert answer.status == status and reason in (await answer.json())["error"], path
    refused = await client.post("/membership/leave", headers={"X-Test-Refuse": "1"})
    assert refused.status == 401
    garbage = await client.post(
        "/membership/proposals", data=b"\xff\xfe", headers={"Content-Type": "application/json"}
    )
    assert 400 <= garbage.status < 500
    assert host.submitted == []


async def test_a_node_that_is_not_a_member_cannot_propose() -> None:
    host = FakeHost(NEWCOMER)
    service = MembershipService(cast(Any, host))
    with pytest.raises(NodeUsageError, match="not a member"):
        await service.vote("00" * 16, True)


async def test_wrong_chain_request_and_taken_name_are_refused(served: tuple[TestClient, FakeHost]) -> None:
    client, host = served
    other = sample.sample_genesis(VALIDATORS, chain_id="elsewhere")
    foreign = sample.join_request(NEWCOMER, other, name="newcomer").hex()
    answer = await client.post("/membership/proposals", json={"request": foreign})
    assert answer.status == 400 and "another chain" in (await answer.json())["error"]
    taken = await client.post(
        "/membership/proposals", json={"request": _request_hex(host, name="validator-1")}
    )
    assert taken.status == 400 and "taken" in (await taken.json())["error"]


def test_the_proposal_lifecycle_is_a_table() -> None:
    assert PROPOSAL_LIFECYCLE.allows(ProposalState.PENDING, ProposalState.APPROVED)
    assert PROPOSAL_LIFECYCLE.final(ProposalState.EFFECTIVE)
    with pytest.raises(NodeUsageError, match="not a legal move"):
        PROPOSAL_LIFECYCLE.move(ProposalState.REJECTED, ProposalState.APPROVED)


async def test_lifecycle_follows_the_chain_to_effective() -> None:
    host = FakeHost(VALIDATORS[0])
    service = MembershipService(cast(Any, host))
    rng = random.Random(1)
    body = sample.proposal_body(
        action="add",
        member=NEWCOMER.public.sign_key,
        name="newcomer",
        expires_ms=host.clock.now_ms() + 3_600_000,
        request=sample.join_request(NEWCOMER, host.genesis, name="newcomer"),
    )
    proposal = sample.flow_record(VALIDATORS[0], RecordType.MEMBERSHIP_PROPOSAL, body, rng=rng)
    host.builder.next_block([proposal])
    service.follow(host.chain_state)
    assert service.states[proposal.record_id][0] is ProposalState.PENDING
    votes = [
        sample.flow_record(
            v, RecordType.MEMBERSHIP_VOTE, {"proposal": proposal.record_id, "approve": True}, rng=rng
        )
        for v in VALIDATORS[:3]
    ]
    host.builder.next_block(votes)
    service.follow(host.chain_state)
    assert service.states[proposal.record_id][0] is ProposalState.APPROVED
    host.builder.next_block([])
    service.follow(host.chain_state)
    assert service.states[proposal.record_id][0] is ProposalState.EFFECTIVE
    views = service.proposals()
    assert views[0]["state"] == "effective"


# --- configuration and directory -----------------------------------------------------------------


def _config(tmp_path: Path, peers: list[dict[str, Any]]) -> Any:
    raw = {"node": {"name": "x", "country": "NO"}, "p2p": {"peers": peers}}
    return parse_config(raw, tmp_path / "node.toml")


def test_a_bootstrap_peer_needs_only_an_address_with_a_peer_id(tmp_path: Path) -> None:
    address = "/ip4/10.0.0.1/tcp/7600/p2p/12D3KooWabc"
    config = _config(tmp_path, [{"address": [address]}])
    assert config.peers[0].address == (address,) and config.peers[0].sign_key == b""
    with pytest.raises(ConfigError, match=r"p2p.peers\[0\]: give sign_key, or an address"):
        _config(tmp_path, [{"address": ["/ip4/10.0.0.1/tcp/7600"]}])
    with pytest.raises(ConfigError, match="must be 64 hex digits"):
        _config(tmp_path, [{"sign_key": "xyz", "address": [address]}])


def test_known_peers_take_the_country_from_the_chain_and_a_local_route_from_the_config() -> None:
    host = FakeHost(VALIDATORS[0])
    key = VALIDATORS[1].public.sign_key
    entry = {
        "name": "validator-1",
        "country": "SE",
        "addresses": ["/ip4/10.0.0.2/tcp/7600"],
        "data_url": "https://10.0.0.2:7800",
        "tls_key_sha256": hashlib.sha256(key).digest(),
        "seq": 1,
    }
    host.builder.next_block(
        [sample.flow_record(VALIDATORS[1], RecordType.MEMBER_ENTRY, entry, rng=random.Random(2))]
    )
    configured = [Peer("old-name", key, ("/ip4/1.1.1.1/tcp/1",), "https://proxy:9000", "NO")]
    (peer,) = [p for p in directory.known_peers(host.chain_state, configured) if p.sign_key == key]
    assert (peer.name, peer.country, peer.data_url) == ("validator-1", "SE", "https://proxy:9000")
    (peer,) = [p for p in directory.known_peers(host.chain_state, []) if p.sign_key == key]
    assert peer.data_url == "https://10.0.0.2:7800"
    plan = directory.dial_addresses(host.chain_state, configured)
    assert plan[key] == ["/ip4/10.0.0.2/tcp/7600", "/ip4/1.1.1.1/tcp/1"]


async def test_the_console_page_is_read_only_and_never_renders_names_as_html() -> None:
    from mftp.node.membership.console import SCRIPT
    from mftp.node.people.roles import rule_of, unstated

    app = web.Application()
    console = MembershipConsole()
    console.add_routes(app.router, fake_authenticated)
    routes = [(r.method, r.resource.canonical, r.handler) for r in app.router.routes()]
    assert (
        unstated(
            [(m, p, getattr(console, "page" if p.endswith("membership") else "script")) for m, p, _ in routes]
        )
        == []
    )
    assert rule_of(console.page) is not None and rule_of(console.page).public  # type: ignore[union-attr]
    async with TestClient(TestServer(app)) as client:
        page = await client.get("/console/membership")
        assert page.status == 200 and "script-src 'self'" in page.headers["Content-Security-Policy"]
        assert "<script>" not in await page.text()  # no inline script: the CSP would refuse it anyway
        script = await client.get("/console/membership.js")
        assert script.status == 200
    # Names come from outsiders' join requests: written as text, never parsed as HTML.
    assert "innerHTML" not in SCRIPT and "X-CSRF-Token" in SCRIPT and "/session" in SCRIPT


def test_every_membership_route_states_its_rule_in_the_node_api(tmp_path: Path) -> None:
    from mftp.node.audit.routes import AuditApi
    from mftp.node.people.roles import Permission, rule_of, unstated
    from tests.people_kit import PeopleKit

    host = FakeHost(VALIDATORS[0])
    providers = (
        AuditApi(cast(Any, None), cast(Any, None)),
        MembershipApi(MembershipService(cast(Any, host)), host.genesis.to_json),
        MembershipConsole(),
    )
    gate = PeopleKit(tmp_path).gate
    app = Api(cast(Any, None), gate, transfers=cast(Any, object()), providers=providers).app()
    routes = [(r.method, r.resource.canonical, r.handler) for r in app.router.routes()]
    assert unstated(routes) == []
    service = MembershipApi(MembershipService(cast(Any, host)), host.genesis.to_json)
    for handler in (service.propose, service.vote, service.leave):
        rule = rule_of(handler)
        assert rule is not None and rule.permission is Permission.MEMBERSHIP_VOTE and rule.step_up

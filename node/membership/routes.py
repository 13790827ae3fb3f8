"""The ``/membership`` routes (registered through ``add_routes(router, authenticated)``).

* ``GET /membership`` (public: the chain is replicated to every member anyway): the members
  with their directory entries, the candidates, the open proposals with expiry and votes, and
  recent outcomes.
* ``GET /membership/genesis`` (public): the genesis document, for a newcomer preparing its
  join request (it must still compare the genesis hash with a member out of band).
* ``POST /membership/proposals`` ``{"request": <join request, hex>, "power"?, "expires_in_s"?}``
  sponsors an addition; ``{"action": "remove"|"power", "member": <key hex>, "power"?}`` a
  removal or a power change.  202 with the proposal id; 400 with the reason the chain's
  rules refuse it (what the fault tolerance f would become).
* ``POST /membership/proposals/{proposal_id}/votes`` ``{"vote": "approve"|"reject"}``.
* ``POST /membership/leave``: propose to remove this node itself.

Every change needs :data:`~mftp.node.people.roles.Permission.MEMBERSHIP_VOTE` (operators,
with a fresh second factor, checked by the sign-in wrapper).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from mftp.ledger.errors import LedgerInputError
from mftp.ledger.membership import parse_join_request

from ..api.openapi import operation, path_param
from ..api.server import json_object
from ..errors import NodeUsageError
from ..people.roles import Permission, public, requires
from .service import MembershipService

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_REQUEST_HEX = 8192


def _hex(text: str, what: str, size: int | None = None) -> bytes:
    if len(text) > MAX_REQUEST_HEX:
        raise NodeUsageError(f"{what} is too long")
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise NodeUsageError(f"{what} must be hex") from None
    if size is not None and len(value) != size:
        raise NodeUsageError(f"{what} must be {size} bytes")
    return value


def _int(text: str, what: str, low: int, high: int) -> int:
    if not text.isdigit() or not low <= int(text) <= high:
        raise NodeUsageError(f"{what} must be a whole number from {low} to {high}")
    return int(text)


class MembershipApi:
    """Routes over a node's :class:`MembershipService`."""

    def __init__(self, service: MembershipService, genesis_json: Callable[[], str]) -> None:
        self.service = service
        self.genesis_json = genesis_json

    def add_routes(self, router: web.UrlDispatcher, authenticated: Callable[[Handler], Handler]) -> None:
        """Register the routes, each behind ``authenticated``."""
        router.add_get("/membership", authenticated(self.overview))
        router.add_get("/membership/genesis", authenticated(self.genesis))
        router.add_post("/membership/proposals", authenticated(self.propose))
        router.add_post("/membership/proposals/{proposal_id}/votes", authenticated(self.vote))
        router.add_post("/membership/leave", authenticated(self.leave))

    def openapi_paths(self) -> dict[str, Any]:
        """The OpenAPI paths of these routes."""
        hex_text = {"type": "string", "pattern": "^[0-9a-f]*$"}
        propose = {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "request": {**hex_text, "description": "a join request (mftp-node member request)"},
                "action": {"type": "string", "enum": ["add", "remove", "power"]},
                "member": {**hex_text, "description": "the member's sign key"},
                "power": {"type": "string", "description": "voting power, 0-1000"},
                "expires_in_s": {"type": "string", "description": "seconds, 60 to 30 days"},
            },
        }
        vote = {
            "type": "object",
            "required": ["vote"],
            "additionalProperties": False,
            "properties": {"vote": {"type": "string", "enum": ["approve", "reject"]}},
        }
        proposal = path_param("proposal_id", "the proposal's record id (hex)")
        return {
            "/membership": {
                "get": operation("Members, the directory, open proposals and outcomes", signed_in=False)
            },
            "/membership/genesis": {"get": operation("The genesis document", signed_in=False)},
            "/membership/proposals": {
                "post": operation(
                    "Sponsor an addition (a join request), a removal or a power change (operators, "
                    "step-up); refused with the reason when a safety rail forbids it",
                    status="202",
                    body=propose,
                )
            },
            "/membership/proposals/{proposal_id}/votes": {
                "post": operation(
                    "Approve or reject an open proposal (a validator's operator, step-up)",
                    status="202",
                    body=vote,
                    parameters=[proposal],
                )
            },
            "/membership/leave": {
                "post": operation("Propose to remove this node (operators, step-up)", status="202")
            },
        }

    @public()
    async def overview(self, request: web.Request) -> web.Response:
        """Members, candidates, open proposals and recent outcomes."""
        return web.json_response({"members": self.service.directory(), "proposals": self.service.proposals()})

    @public()
    async def genesis(self, request: web.Request) -> web.Response:
        """The genesis document (public data)."""
        return web.Response(text=self.genesis_json(), content_type="application/json")

    @requires(Permission.MEMBERSHIP_VOTE)
    async def propose(self, request: web.Request) -> web.Response:
        """Sponsor an addition, a removal or a power change."""
        body = await json_object(
            request, required=(), optional=("request", "action", "member", "power", "expires_in_s")
        )
        lifetime: dict[str, Any] = {}
        if "expires_in_s" in body:
            lifetime["lifetime_ms"] = _int(body["expires_in_s"], "expires_in_s", 60, 30 * 86_400) * 1000
        if "request" in body:
            if ("action" in body and body["action"] != "add") or "member" in body:
                raise NodeUsageError("a join request is proposed alone (action add)")
            try:
                join = parse_join_request(_hex(body["request"], "request"))
            except LedgerInputError as exc:
                raise NodeUsageError(f"not a valid join request: {exc}") from None
            power = _int(body.get("power", "1" if join.role == "validator" else "0"), "power", 0, 1000)
            record = await self.service.propose(
                action="add",
                role=join.role,
                member=join.member,
                name=join.entry.name,
                power=power,
                request=join.encoded,
                **lifetime,
            )
        elif body.get("action") == "remove" and "member" in body:
            record = await self.service.propose_removal(_hex(body["member"], "member", 32), **lifetime)
        elif body.get("action") == "power" and "member" in body and "power" in body:
            member = _hex(body["member"], "member", 32)
            validator = self.service.host.chain_state.validators.get(member)
            if validator is None:
                raise NodeUsageError("a power change names a validator")
            record = await self.service.propose(
                action="power",
                role="validator",
                member=member,
                name=validator.name,
                power=_int(body["power"], "power", 1, 1000),
                **lifetime,
            )
        else:
            raise NodeUsageError('expected {"request": hex} or {"action": "remove"|"power", "member": hex}')
        return web.json_response({"proposal_id": record.record_id.hex()}, status=202)

    @requires(Permission.MEMBERSHIP_VOTE)
    async def vote(self, request: web.Request) -> web.Response:
        """Approve or reject an open proposal."""
        body = await json_object(request, required=("vote",))
        if body["vote"] not in ("approve", "reject"):
            raise NodeUsageError('vote is "approve" or "reject"')
        record = await self.service.vote(request.match_info["proposal_id"], body["vote"] == "approve")
        return web.json_response({"vote_id": record.record_id.hex()}, status=202)

    @requires(Permission.MEMBERSHIP_VOTE)
    async def leave(self, request: web.Request) -> web.Response:
        """Propose to remove this node from the consortium."""
        record = await self.service.propose_removal(self.service.host.identity.public.sign_key)
        return web.json_response({"proposal_id": record.record_id.hex()}, status=202)

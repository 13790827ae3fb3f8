"""Every API route states the role it needs (issue 16, point 1): a route that states none fails.

Enforcement comes with sign-in; until then the node-wide token still guards every route that is
not public, and this table is what sign-in will enforce.
"""

from __future__ import annotations

from typing import Any, cast

from aiohttp import web

from mftp.node.api.server import Api, NodeView, TransferView
from mftp.node.audit.routes import AuditApi
from mftp.node.people.roles import Permission, Role, rule_of, unstated


def _app() -> web.Application:
    audit = AuditApi(cast(Any, None), cast(Any, None))
    transfers = cast(TransferView, object())
    return Api(cast(NodeView, None), ["00" * 32], transfers=transfers, audit=audit).app()


def _routes(app: web.Application) -> list[tuple[str, str, object]]:
    return [(route.method, route.resource.canonical, route.handler) for route in app.router.routes()]


def test_every_route_states_the_role_it_needs() -> None:
    routes = _routes(_app())
    assert len(routes) > 20
    assert unstated(routes) == []


def test_the_table_says_who_may_do_what() -> None:
    rules = {f"{method} {path}": rule_of(handler) for method, path, handler in _routes(_app())}
    send, scan, status = rules["POST /transfers"], rules["POST /audit/scans"], rules["GET /status"]
    assert send is not None and send.permission is Permission.STUDY_SEND
    assert Role.CLINICIAN in send.roles() and Role.OPERATOR not in send.roles()
    assert scan is not None and scan.roles() == {Role.AUDITOR}
    assert status is not None and status.public
    export = rules["POST /transfers/{transfer_id}/export"]
    assert export is not None and export.step_up  # a consequential action needs a fresh factor


def test_the_walk_fails_on_a_route_that_states_nothing() -> None:
    app = _app()

    async def bare(request: web.Request) -> web.Response:
        return web.Response()

    app.router.add_post("/forgotten", bare)
    assert unstated(_routes(app)) == ["POST /forgotten: states no role"]

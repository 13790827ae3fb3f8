"""Every API route states the role it needs (issue 16, point 1): a route that states none fails.

The gate (:mod:`mftp.node.api.auth`) enforces the rules; tests/node/api/test_sign_in.py tries
every refusal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from aiohttp import web

from mftp.node.api.people_routes import PeopleApi
from mftp.node.api.server import Api, NodeView, TransferView
from mftp.node.audit.routes import AuditApi
from mftp.node.console.overview import OverviewApi
from mftp.node.console.pages import ConsolePages
from mftp.node.people.roles import Permission, Role, rule_of, unstated
from mftp.node.transfers.console_routes import TransferConsoleApi
from tests.people_kit import PeopleKit


def _app(tmp_path: Path) -> web.Application:
    kit = PeopleKit(tmp_path)
    audit = AuditApi(cast(Any, None), cast(Any, None))
    people = PeopleApi(kit.signin, kit.admin, kit.gate)
    transfers = cast(TransferView, object())
    console = (
        ConsolePages(),
        OverviewApi(cast(Any, None), None, kit.clock, own_key=b""),
        TransferConsoleApi(cast(Any, None), cast(Any, None), cast(Any, None), str),
    )
    return Api(cast(NodeView, None), kit.gate, transfers=transfers, providers=(people, audit, *console)).app()


def _routes(app: web.Application) -> list[tuple[str, str, object]]:
    return [(route.method, route.resource.canonical, route.handler) for route in app.router.routes()]


def test_every_route_states_the_role_it_needs(tmp_path: Path) -> None:
    routes = _routes(_app(tmp_path))
    assert len(routes) > 20
    assert unstated(routes) == []


def test_the_table_says_who_may_do_what(tmp_path: Path) -> None:
    rules = {f"{method} {path}": rule_of(handler) for method, path, handler in _routes(_app(tmp_path))}
    send, scan, status = rules["POST /transfers"], rules["POST /audit/scans"], rules["GET /status"]
    assert send is not None and send.permission is Permission.STUDY_SEND
    assert Role.CLINICIAN in send.roles() and Role.OPERATOR not in send.roles()
    assert scan is not None and scan.roles() == {Role.AUDITOR}
    assert status is not None and status.public
    export = rules["POST /transfers/{transfer_id}/export"]
    assert export is not None and export.step_up  # a consequential action needs a fresh factor


def test_the_walk_fails_on_a_route_that_states_nothing(tmp_path: Path) -> None:
    app = _app(tmp_path)

    async def bare(request: web.Request) -> web.Response:
        return web.Response()

    app.router.add_post("/forgotten", bare)
    assert unstated(_routes(app)) == ["POST /forgotten: states no role"]

"""Roles and the permission table: who may do what, and the rule every route must state."""

from __future__ import annotations

import pytest

from mftp.node.errors import NodeUsageError
from mftp.node.people.errors import NotPermitted
from mftp.node.people.roles import (
    PERMISSIONS,
    STEP_UP,
    Permission,
    Role,
    RouteRule,
    allows,
    check,
    parse_role,
    permissions_of,
    public,
    requires,
    rule_of,
    unstated,
)

STUDY = {p for p in Permission if p.value.startswith("study.")}


def test_every_permission_has_a_row_and_some_role() -> None:
    assert set(PERMISSIONS) == set(Permission)
    assert all(PERMISSIONS[p] for p in Permission)


def test_clinician_does_clinical_work_only() -> None:
    held = permissions_of([Role.CLINICIAN])
    assert held == STUDY | {Permission.SELF_MANAGE}


def test_operator_has_no_study_access_unless_also_clinician() -> None:
    assert not permissions_of([Role.OPERATOR]) & STUDY
    assert permissions_of([Role.OPERATOR, Role.CLINICIAN]) >= STUDY | {Permission.USERS_MANAGE}


def test_auditor_scans_and_reports_but_sees_no_study() -> None:
    held = permissions_of([Role.AUDITOR])
    assert {Permission.AUDIT_SCAN, Permission.AUDIT_REPORT, Permission.AUDIT_GRANTS_RECEIVED} <= held
    assert not held & STUDY
    assert Permission.AUDIT_GRANT not in held


def test_check_refuses_a_wrong_role_naming_what_is_needed() -> None:
    check([Role.CLINICIAN], Permission.STUDY_EXPORT)
    with pytest.raises(NotPermitted, match=r"users\.manage needs the role operator"):
        check([Role.CLINICIAN], Permission.USERS_MANAGE)
    assert not allows([], Permission.SELF_MANAGE)


def test_parse_role() -> None:
    assert parse_role(" Operator ") is Role.OPERATOR
    with pytest.raises(NodeUsageError, match="clinician, operator, auditor"):
        parse_role("root")


def test_requires_attaches_a_rule_with_the_tables_step_up() -> None:
    @requires(Permission.STUDY_EXPORT)
    async def export() -> None: ...

    @requires(Permission.STUDY_VIEW)
    async def view() -> None: ...

    @requires(Permission.STUDY_VIEW, step_up=True)
    async def careful_view() -> None: ...

    assert rule_of(export) == RouteRule(Permission.STUDY_EXPORT, step_up=True)
    assert rule_of(view) == RouteRule(Permission.STUDY_VIEW, step_up=False)
    assert rule_of(careful_view) == RouteRule(Permission.STUDY_VIEW, step_up=True)
    assert rule_of(export).roles() == {Role.CLINICIAN}  # type: ignore[union-attr]
    assert Permission.STUDY_EXPORT in STEP_UP


def test_a_route_cannot_waive_step_up_nor_state_two_rules() -> None:
    with pytest.raises(NodeUsageError, match="always needs a fresh second factor"):
        requires(Permission.USERS_MANAGE, step_up=False)
    with pytest.raises(NodeUsageError, match="twice"):

        @public()
        @requires(Permission.STUDY_VIEW)
        async def both() -> None: ...


def test_rule_of_sees_through_bound_methods() -> None:
    class Routes:
        @requires(Permission.AUDIT_SCAN)
        async def scan(self) -> None: ...

    assert rule_of(Routes().scan) == RouteRule(Permission.AUDIT_SCAN)


def test_walking_a_route_table_finds_routes_that_state_nothing() -> None:
    @public()
    async def status() -> None: ...

    @public()
    async def open_write() -> None: ...

    @requires(Permission.STUDY_SEND)
    async def send() -> None: ...

    async def forgotten() -> None: ...

    table = [
        ("GET", "/status", status),
        ("POST", "/transfers", send),
        ("POST", "/users", forgotten),
        ("DELETE", "/oops", open_write),
    ]
    assert unstated(table) == [
        "POST /users: states no role",
        "DELETE /oops: a public route may not change anything",
    ]

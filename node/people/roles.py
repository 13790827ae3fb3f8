"""Roles and what each may do: one table, read by every check and by the route table.

A user holds one or more :class:`Role` values; a :class:`Permission` is one kind of action
(send a study, manage users, scan with a grant...).  :data:`PERMISSIONS` says which roles
allow each permission, and :data:`STEP_UP` which permissions are consequential enough to need
a second factor verified within the last few minutes (issue 16, point 5).

Routes state what they need with :func:`requires` (or :func:`public` for open reads): the
decorator only attaches a :class:`RouteRule` to the handler, so a test can walk the whole route
table and fail on a handler that states nothing (:func:`unstated`).  Enforcement belongs to
the API wiring, which reads the rule with :func:`rule_of`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, TypeVar

from ..errors import NodeUsageError
from .errors import NotPermitted

F = TypeVar("F", bound=Callable[..., object])
RULE_ATTRIBUTE: Final = "__mftp_route_rule__"


class Role(StrEnum):
    """What a person (or a service account) is at this institution."""

    CLINICIAN = "clinician"  # sends, receives, views and exports studies, shares with a patient
    OPERATOR = "operator"  # runs the node: settings, users, tokens, membership votes
    AUDITOR = "auditor"  # on an audit node: grants received, scans, reports


class Permission(StrEnum):
    """One kind of action a route performs."""

    # clinical work
    STUDY_SEND = "study.send"
    STUDY_RECEIVE = "study.receive"  # the inbox: what was received, and its state
    STUDY_VIEW = "study.view"
    STUDY_EXPORT = "study.export"
    STUDY_SHARE_PATIENT = "study.share-patient"
    # running the node
    NODE_SETTINGS = "node.settings"
    USERS_MANAGE = "users.manage"  # add, disable, enable, unlock, reset a second factor, roles
    USERS_READ = "users.read"  # the accounts, their tokens and the security events
    TOKENS_MANAGE = "tokens.manage"  # other people's API tokens and service accounts
    MEMBERSHIP_VOTE = "membership.vote"
    AUDIT_GRANT = "audit.grant"  # hand an auditor one party's keys (at the subject's home)
    # auditing, on an audit node
    AUDIT_GRANTS_RECEIVED = "audit.grants-received"
    AUDIT_SCAN = "audit.scan"
    AUDIT_REPORT = "audit.report"
    # every signed-in principal: its own API tokens and second factors
    SELF_MANAGE = "self.manage"


_C, _O, _A = Role.CLINICIAN, Role.OPERATOR, Role.AUDITOR
PERMISSIONS: Final[dict[Permission, frozenset[Role]]] = {
    Permission.STUDY_SEND: frozenset({_C}),
    Permission.STUDY_RECEIVE: frozenset({_C}),
    Permission.STUDY_VIEW: frozenset({_C}),
    Permission.STUDY_EXPORT: frozenset({_C}),
    Permission.STUDY_SHARE_PATIENT: frozenset({_C}),
    # An operator has no study access unless also a clinician: no row above names it.
    Permission.NODE_SETTINGS: frozenset({_O}),
    Permission.USERS_MANAGE: frozenset({_O}),
    Permission.USERS_READ: frozenset({_O}),
    Permission.TOKENS_MANAGE: frozenset({_O}),
    Permission.MEMBERSHIP_VOTE: frozenset({_O}),
    Permission.AUDIT_GRANT: frozenset({_O}),
    Permission.AUDIT_GRANTS_RECEIVED: frozenset({_A}),
    Permission.AUDIT_SCAN: frozenset({_A}),
    Permission.AUDIT_REPORT: frozenset({_A}),
    Permission.SELF_MANAGE: frozenset({_C, _O, _A}),
}

# Consequential: data leaves the institution or its control, or someone's power changes.
STEP_UP: Final[frozenset[Permission]] = frozenset(
    {
        # STUDY_SEND is not here: only a send in identified mode needs the step-up, and the
        # send route asks for it when the body says so.
        Permission.STUDY_EXPORT,
        Permission.STUDY_SHARE_PATIENT,
        Permission.USERS_MANAGE,
        Permission.TOKENS_MANAGE,
        Permission.MEMBERSHIP_VOTE,
        Permission.AUDIT_GRANT,
        Permission.AUDIT_REPORT,
    }
)


def parse_role(text: str) -> Role:
    """The role named ``text`` (as typed on the command line); a usage error lists the choices."""
    try:
        return Role(text.strip().lower())
    except ValueError:
        choices = ", ".join(r.value for r in Role)
        raise NodeUsageError(f"unknown role {text!r}; choose one of {choices}") from None


def allows(roles: Iterable[Role], permission: Permission) -> bool:
    """Whether any of ``roles`` allows ``permission``."""
    return not PERMISSIONS[permission].isdisjoint(roles)


def check(roles: Iterable[Role], permission: Permission) -> None:
    """Raise :class:`NotPermitted` unless one of ``roles`` allows ``permission``."""
    if not allows(roles, permission):
        needed = " or ".join(sorted(r.value for r in PERMISSIONS[permission]))
        raise NotPermitted(f"{permission.value} needs the role {needed}")


def permissions_of(roles: Iterable[Role]) -> frozenset[Permission]:
    """Every permission ``roles`` allow together."""
    held = frozenset(roles)
    return frozenset(p for p, allowed in PERMISSIONS.items() if not allowed.isdisjoint(held))


@dataclass(frozen=True)
class RouteRule:
    """What a route needs: nothing (a public read) or one permission, perhaps with step-up."""

    permission: Permission | None  # None: public, no sign-in at all
    step_up: bool = False
    sign_in: bool = False  # a step of signing in or out: public, yet it writes (a session)
    shared: bool = False  # a patient's share session may call it too, within the shared studies

    @property
    def public(self) -> bool:
        """Whether the route is open to anyone (it then must not change anything)."""
        return self.permission is None

    def roles(self) -> frozenset[Role]:
        """The roles that may call the route (empty for a public one: no role needed)."""
        return frozenset() if self.permission is None else PERMISSIONS[self.permission]


def requires(
    permission: Permission, *, step_up: bool | None = None, shared: bool = False
) -> Callable[[F], F]:
    """Decorate a route handler with the permission it needs.

    ``step_up`` defaults to the table (:data:`STEP_UP`); a route may only ask for more, never
    less, so a consequential action cannot be exempted by one careless decorator.
    ``shared`` lets a patient's share session (issue 19) call the route as well: a read of
    studies, answered within the shared ones only (the route's handler scopes it).
    """
    needed = permission in STEP_UP or bool(step_up)
    if step_up is False and permission in STEP_UP:
        raise NodeUsageError(f"{permission.value} always needs a fresh second factor")
    if shared and permission is not Permission.STUDY_VIEW:
        raise NodeUsageError("only viewing studies is open to a patient's share session")
    return _attach(RouteRule(permission, needed, shared=shared))


def public() -> Callable[[F], F]:
    """Decorate a read-only route that anyone may call (status, the ledger's public views)."""
    return _attach(RouteRule(None))


def sign_in_step() -> Callable[[F], F]:
    """Decorate a step of signing in, enrolling or signing out: open to anyone, it changes only
    the caller's own session, and checks what it is given itself (password, code, CSRF)."""
    return _attach(RouteRule(None, sign_in=True))


def _attach(rule: RouteRule) -> Callable[[F], F]:
    def decorate(handler: F) -> F:
        if getattr(handler, RULE_ATTRIBUTE, None) is not None:
            raise NodeUsageError(f"{getattr(handler, '__name__', handler)!r} states its rule twice")
        setattr(handler, RULE_ATTRIBUTE, rule)
        return handler

    return decorate


def rule_of(handler: object) -> RouteRule | None:
    """The rule a handler states, or None if it states none (bound methods included)."""
    rule = getattr(handler, RULE_ATTRIBUTE, None)
    if rule is None:
        rule = getattr(getattr(handler, "__func__", None), RULE_ATTRIBUTE, None)
    return rule if isinstance(rule, RouteRule) else None


def unstated(routes: Iterable[tuple[str, str, object]]) -> list[str]:
    """``"METHOD path"`` of every route (method, path, handler) whose handler states no rule.

    Also flags a public route whose method changes something: a write is never open.
    """
    problems = []
    for method, path, handler in routes:
        rule = rule_of(handler)
        if rule is None:
            problems.append(f"{method} {path}: states no role")
        elif rule.public and not rule.sign_in and method.upper() not in ("GET", "HEAD", "OPTIONS"):
            problems.append(f"{method} {path}: a public route may not change anything")
    return problems

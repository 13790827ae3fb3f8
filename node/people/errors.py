"""Refusals of the people room: each is the caller's fault, so each is a :class:`NodeUsageError`.

============================  =======================================================  ===========
class                         when                                                     API answer
============================  =======================================================  ===========
:class:`SignInRefused`        wrong name, password or code; unknown, disabled or       401
                              locked account (one message for all: it never says
                              which, so it cannot tell whether a user exists)
:class:`SessionRefused`       no session, an unknown, ended or expired one, a bad      401
                              CSRF token, an unknown, expired or revoked API token
:class:`NotPermitted`         the principal's roles do not allow the action            403
:class:`StepUpRequired`       the action needs a second factor within the last         403
                              few minutes and the session's is older
:class:`RateLimited`          too many failures from this account or address           429
============================  =======================================================  ===========

The API answers are for the wiring still to come (``api/``); ``status`` carries them.
Messages never name a user, a password, a code or a token: they may be logged.
"""

from __future__ import annotations

from typing import ClassVar

from ..errors import NodeUsageError


class AccessRefused(NodeUsageError):
    """Base of the people room's refusals of a caller."""

    status: ClassVar[int] = 403


class SignInRefused(AccessRefused):
    """A sign-in step failed; the message is the same whatever the reason."""

    status: ClassVar[int] = 401
    MESSAGE: ClassVar[str] = "sign-in refused: wrong name, password or code, or the account cannot sign in"

    def __init__(self) -> None:
        super().__init__(self.MESSAGE)


class SessionRefused(AccessRefused):
    """The request carries no valid session or API token (or a bad CSRF token)."""

    status: ClassVar[int] = 401


class NotPermitted(AccessRefused):
    """The principal is known, but none of its roles allows the action."""


class StepUpRequired(AccessRefused):
    """A consequential action, and the second factor was verified too long ago."""


class RateLimited(AccessRefused):
    """Too many failed attempts; ``retry_after_s`` says when trying again makes sense."""

    status: ClassVar[int] = 429

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"too many failed attempts; retry after {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s

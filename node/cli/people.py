"""``mftp-node login``, ``logout``, ``enrol`` and ``user ...``: people, through the node's API.

* ``login --config node.toml [--name N] [--role R]``: password, then a TOTP (or recovery) code;
  keeps a personal API token (one role, 12 h by default) in a 0600 file under the user's
  config folder (:mod:`.tokens`).  Every other command then acts as this user.
* ``logout``: revokes that token at the node and deletes the file.
* ``enrol --config node.toml --name N``: the one-time code the operator handed over, a new
  password; shows the TOTP secret (a QR code in the terminal and its URI) once, asks for a first
  code, prints the 10 recovery codes once, and signs in.
* ``user add NAME --role R [--role R2]``, ``user list``, ``user disable|enable|unlock NAME``,
  ``user reset-mfa NAME``, ``user roles NAME --role R...``: an operator's work (signed in as an
  operator, or with ``--token-file`` of the operator service account, ``keys/api.token``,
  to add the first person).

Passwords and codes are read with ``getpass`` (never echoed) or from ``$MFTP_PASSWORD`` and
``$MFTP_CODE`` for scripts; they are never printed or logged.
"""

from __future__ import annotations

import argparse
import getpass
import os
from typing import Any, Final

from ..api_client import ApiRefused, SessionClient
from .tokens import forget_personal_token, personal_token_path, save_personal_token
from .transfers import EXIT_OK, ApiClient, _refused, api_base

LOGIN_TTL_S: Final = 12 * 3600
ROLES: Final = ("clinician", "operator", "auditor")


def _secret(prompt: str, env: str) -> str:
    return os.environ.get(env) or getpass.getpass(prompt)


def _name(args: argparse.Namespace) -> str:
    return str(args.name or input("user name: ")).strip()


def _choose_role(session: dict[str, Any], wanted: str | None) -> str:
    roles = list(session.get("roles", []))
    if wanted:
        return wanted
    if len(roles) != 1:
        raise ApiRefused(400, f"this account holds {', '.join(roles)}: choose one with --role")
    return str(roles[0])


def _make_token(client: SessionClient, session: dict[str, Any], args: argparse.Namespace) -> str:
    role = _choose_role(session, args.role)
    made = client.expect("POST", "/tokens", {"role": role, "ttl_s": args.ttl_s, "label": "mftp-node login"})
    path = save_personal_token(client.base_url, made["token"])
    print(f"signed in as {session['name']} ({role}) until the token expires in {args.ttl_s // 3600} h")
    print(f"  token kept in {path} (mode 0600)")
    return str(made["token"])


def run_login(args: argparse.Namespace) -> int:
    """Sign in with password and second factor; keep a personal token."""
    client = SessionClient(api_base(args.config))
    try:
        first = client.expect(
            "POST", "/session", {"name": _name(args), "password": _secret("password: ", "MFTP_PASSWORD")}
        )
        client.csrf = first["csrf_token"]
        code = _secret("code from your authenticator (or a recovery code): ", "MFTP_CODE").strip()
        body = {"recovery_code": code} if "-" in code or len(code) > 8 else {"code": code}
        session = client.expect("POST", "/session/second-factor", body)
        _make_token(client, session, args)
    except ApiRefused as exc:
        return _refused("login", exc.status, {"error": str(exc).partition(": ")[2]})
    return EXIT_OK


def run_logout(args: argparse.Namespace) -> int:
    """Revoke the kept token at the node and forget it."""
    base = api_base(args.config)
    if not personal_token_path(base).exists():
        print("not signed in")
        return EXIT_OK
    client = ApiClient(args.config, None)
    status, answer = client.call("GET", "/tokens")
    if status == 200:
        own = [t for t in answer["tokens"] if t["live"] and t["label"] == "mftp-node login"]
        for token in own[-1:]:  # the newest login token is this one
            client.call("DELETE", f"/tokens/{token['token_id']}")
    forget_personal_token(base)
    print("signed out")
    return EXIT_OK


def run_enrol(args: argparse.Namespace) -> int:
    """First sign-in: the operator's one-time code, a password, a TOTP authenticator."""
    import segno

    client = SessionClient(api_base(args.config))
    name = _name(args)
    try:
        code = _secret("one-time enrolment code from your operator: ", "MFTP_ENROLMENT_CODE").strip()
        password = _secret(
            "password (at least 12 characters; a directory account: its password): ", "MFTP_PASSWORD"
        )
        started = client.expect("POST", "/enrolment", {"name": name, "code": code, "password": password})
        client.csrf = started["csrf_token"]
        print("add this account to your authenticator app (shown once):")
        segno.make(started["totp_uri"], error="m").terminal(compact=True)
        print(f"  or enter: {started['totp_uri']}")
        first = _secret("first code from the authenticator: ", "MFTP_CODE").strip()
        codes = client.expect("POST", "/enrolment/confirm", {"code": first})["recovery_codes"]
        print("recovery codes (each works once; keep them somewhere safe, they are not shown again):")
        for recovery in codes:
            print(f"  {recovery}")
        session = client.expect("GET", "/session")
        _make_token(client, session, args)
    except ApiRefused as exc:
        return _refused("enrol", exc.status, {"error": str(exc).partition(": ")[2]})
    return EXIT_OK


def add_login_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``login`` and ``enrol``."""
    parser.add_argument("--config", required=True, help="the node's node.toml (API address)")
    parser.add_argument("--name", help="your user name (asked if not given)")
    parser.add_argument("--role", choices=ROLES, help="the role to act in (needed if you hold several)")
    parser.add_argument(
        "--ttl-s", type=int, default=LOGIN_TTL_S, help=f"token lifetime in seconds (default {LOGIN_TTL_S})"
    )


def add_logout_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``logout``."""
    parser.add_argument("--config", required=True, help="the node's node.toml (API address)")


# ---------------------------------------------------------------------------------- users


def _user_call(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> int:
    status, answer = ApiClient(args.config, args.token_file).call(method, path, body)
    if status >= 300:
        return _refused(f"user {args.user_action}", status, answer)
    if args.user_action == "list":
        for user in answer["users"]:
            flags = [f for f in ("service", "directory", "disabled", "locked") if user[f]]
            enrolled = (
                "2FA"
                if user["second_factor"]
                else ("enrolment pending" if user["enrolment_pending"] else "no 2FA")
            )
            print(f"{user['name']:<24} {','.join(user['roles']):<28} {enrolled:<18} {' '.join(flags)}")
    elif answer and answer.get("enrolment_code"):
        print(f"one-time enrolment code for {args.name} (hand it over in person; valid 24 h):")
        print(f"  {answer['enrolment_code']}")
    else:
        print(f"{args.user_action}: done")
    return EXIT_OK


def run_user(args: argparse.Namespace) -> int:
    """Dispatch ``user add|list|disable|enable|unlock|reset-mfa|roles``."""
    action = args.user_action
    if action == "list":
        return _user_call(args, "GET", "/users")
    if action == "add":
        body = {"name": args.name, "roles": args.role, "service": args.service, "directory": args.directory}
        return _user_call(args, "POST", "/users", body)
    if action == "roles":
        return _user_call(args, "PUT", f"/users/{args.name}/roles", {"roles": args.role})
    return _user_call(args, "POST", f"/users/{args.name}/{action}")


def add_user_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``user``."""
    sub = parser.add_subparsers(dest="user_action", required=True, metavar="ACTION")
    actions = {
        "add": "add an account; prints its one-time enrolment code",
        "list": "list the accounts (roles, second factor, disabled, locked)",
        "disable": "stop an account: its sessions end and its tokens are revoked",
        "enable": "let a disabled account sign in again",
        "unlock": "end a lockout now",
        "reset-mfa": "forget an account's second factors; prints a new enrolment code",
        "roles": "replace an account's roles",
    }
    for action, help_text in actions.items():
        child = sub.add_parser(action, help=help_text, description=help_text)
        if action != "list":
            child.add_argument("name", help="the account's name")
        if action in ("add", "roles"):
            child.add_argument(
                "--role", action="append", required=True, choices=ROLES, help="a role (repeatable)"
            )
        if action == "add":
            child.add_argument("--service", action="store_true", help="a service account (API tokens only)")
            child.add_argument(
                "--directory", action="store_true", help="the hospital directory (LDAP) checks its password"
            )
        child.add_argument("--config", required=True, help="the node's node.toml (API address)")
        child.add_argument(
            "--token-file",
            help="act with this token (default: your `mftp-node login`); "
            "keys/api.token is the operator service account's",
        )

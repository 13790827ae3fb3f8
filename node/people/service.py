"""The people of one node, assembled from its configuration (``[api]`` and ``[people]``).

:func:`build_people` makes the account store, sessions, tokens, abuse guard, sign-in and
operator actions, and turns today's node-wide token (``api.token_sha256``) into the tokens of
one *named* service account (``api.service_account``, role ``api.service_role``): no unnamed,
all-powerful token remains, and what that token does is recorded as that account.

The files live under ``<data_dir>/people/`` (0700): ``accounts.bin`` and ``tokens.bin``, each
sealed with a key derived from the node's identity.  Security events go to ``emit`` (the
node's audit vault).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from mftp.crypto.signing import SigningIdentity

from ..clock import Clock
from ..config import Config
from ..errors import ConfigError
from . import passkeys as pk
from .abuse import AbuseGuard, AbusePolicy
from .accounts import AccountStore, PasswordCost, store_keys
from .admin import Admin
from .ldap import DirectoryConfig, LdapDirectory
from .roles import parse_role
from .sessions import SessionBook, SessionPolicy, TokenBook
from .signin import Emit, PasswordDirectory, SignIn


@dataclass
class People:
    """Everything about the people of one node."""

    store: AccountStore
    sessions: SessionBook
    tokens: TokenBook
    guard: AbuseGuard
    signin: SignIn
    admin: Admin
    service_account: str


def policies(config: Config) -> tuple[SessionPolicy, AbusePolicy, PasswordCost]:
    """The session, abuse and password policies of ``[people]``."""
    people = config.values["people"]
    session = SessionPolicy(
        idle_ms=people["idle_timeout_ms"],
        absolute_ms=people["session_lifetime_ms"],
        step_up_ms=people["step_up_ms"],
    )
    abuse = AbusePolicy(
        name_failures=people["failures_per_name"],
        address_failures=people["failures_per_address"],
        lockout_after=people["lockout_after"],
        lockout_ms=people["lockout_ms"],
    )
    return session, abuse, PasswordCost(memory_kib=people["password_memory_kib"])


def relying_party(config: Config) -> pk.RelyingParty | None:
    """The node as a WebAuthn relying party, if it has a public origin (passkeys need one)."""
    origin = config.get("api", "public_origin")
    if not origin:
        host = config.get("api", "listen").rpartition(":")[0].strip("[]")
        if host not in ("127.0.0.1", "localhost", "::1"):
            return None  # a browser allows WebAuthn only over https or on localhost
        origin = "http://localhost:" + config.get("api", "listen").rpartition(":")[2]
    rp_id = config.get("people", "passkey_rp_id") or (urlsplit(origin).hostname or "")
    return pk.RelyingParty(rp_id, config.get("node", "name"), (origin,))


def directory(config: Config) -> PasswordDirectory | None:
    """The hospital directory of ``[people.directory]``, if configured."""
    table = config.values["people"].get("directory")
    if table is None:
        return None
    return LdapDirectory(DirectoryConfig.from_table(table, config.path.parent))


def build_people(config: Config, identity: SigningIdentity, clock: Clock, emit: Emit, folder: Path) -> People:
    """The people of a node whose files live in ``folder``."""
    session_policy, abuse_policy, cost = policies(config)
    store = AccountStore(folder, identity, clock, cost)
    sessions = SessionBook(clock, session_policy)
    tokens = TokenBook(folder, store_keys(identity)[0], clock)
    guard = AbuseGuard(clock, abuse_policy)
    signin = SignIn(store, sessions, tokens, guard, clock, emit, directory(config), relying_party(config))
    admin = Admin(store, sessions, tokens, clock, emit)
    name = config.get("api", "service_account")
    hashes = config.get("api", "token_sha256")
    if hashes:
        role = parse_role(config.get("api", "service_role"))
        account = store.get(name)
        if account is None:
            store.add(name, [role], service=True)
        elif not account.service:
            raise ConfigError(str(config.path), ["api.service_account: names a person's account"])
        elif account.roles != {role}:
            store.set_roles(name, [role])  # node.toml says what the service may do
        for digest in hashes:
            tokens.declare(name, role, digest)
    return People(store, sessions, tokens, guard, signin, admin, name)

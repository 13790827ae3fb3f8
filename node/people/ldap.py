"""A hospital directory (LDAP, Active Directory style) as the password factor; the second stays ours.

:class:`LdapDirectory` checks a password the way AD integrations do: bind as a search account,
find the user's entry by a filter (``sAMAccountName`` on AD, ``uid`` on OpenLDAP) under a base
DN, demand exactly one match, then bind as that entry's DN with the typed password.  Always over
TLS: ``ldaps://``, or ``ldap://`` followed by StartTLS before any bind; the server's certificate
is verified against the configured CA file (or the system's) and its host name.  A plain
``ldap://`` without StartTLS is refused at configuration time, since the bind carries the
password.

Refusals and failures both answer False (the sign-in then refuses as for a wrong password); a
directory that cannot be reached is counted in :attr:`LdapDirectory.unreachable` and logged
without the user's name.  An empty password is refused before any bind: LDAP treats a simple
bind with a DN and no password as an anonymous ("unauthenticated") bind, which succeeds.

Configuration comes from a ``[people.directory]`` table of ``node.toml``
(:meth:`DirectoryConfig.from_table`); the search account's password is read from a file, so it
never sits in the configuration.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import ldap3
from ldap3.core.exceptions import LDAPCommunicationError, LDAPException, LDAPStartTLSError
from ldap3.utils.conv import escape_filter_chars

from ..errors import ConfigError

log = logging.getLogger("mftp.node.people")

AD_FILTER: Final = "(&(objectClass=user)(sAMAccountName={name}))"
MAX_SECRET_FILE_BYTES: Final = 4096


@dataclass(frozen=True)
class DirectoryConfig:
    """Where the directory is and how to find a user in it."""

    url: str  # ldaps://host[:636] or ldap://host[:389] (then StartTLS)
    base_dn: str
    bind_dn: str  # the search account
    bind_password: str
    user_filter: str = AD_FILTER  # "{name}" is replaced by the escaped typed name
    ca_file: str | None = None  # None: the system's trust store
    timeout_s: float = 5.0

    @property
    def ldaps(self) -> bool:
        """Whether TLS starts at connection (``ldaps://``) rather than by StartTLS."""
        return urlsplit(self.url).scheme == "ldaps"

    @classmethod
    def from_table(
        cls, table: Mapping[str, Any], base: Path, where: str = "people.directory"
    ) -> DirectoryConfig:
        """Read and check a ``[people.directory]`` table; relative paths are from ``base``.

        Keys: ``url``, ``base_dn``, ``bind_dn``, ``bind_password_file``, and optionally
        ``user_filter``, ``ca_file``, ``timeout_s``.  Every problem is reported at once.
        """
        problems: list[str] = []

        def text(key: str, required: bool = True) -> str:
            value = table.get(key)
            if value is None and not required:
                return ""
            if not isinstance(value, str) or not value.strip():
                problems.append(f"{where}.{key}: a non-empty string is required")
                return ""
            return value.strip()

        url = text("url")
        parts = urlsplit(url)
        if url and (parts.scheme not in ("ldap", "ldaps") or not parts.hostname):
            problems.append(f"{where}.url: ldaps://host[:port] or ldap://host[:port] (StartTLS), not {url!r}")
        user_filter = text("user_filter", required=False) or AD_FILTER
        if "{name}" not in user_filter:
            problems.append(f"{where}.user_filter: must contain {{name}}")
        password = ""
        password_file = text("bind_password_file")
        if password_file:
            path = base / password_file
            try:
                if path.stat().st_size > MAX_SECRET_FILE_BYTES:
                    problems.append(f"{where}.bind_password_file: larger than {MAX_SECRET_FILE_BYTES} bytes")
                else:
                    password = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                problems.append(f"{where}.bind_password_file: cannot read it ({exc.strerror})")
        ca = text("ca_file", required=False)
        if ca and not (base / ca).is_file():
            problems.append(f"{where}.ca_file: no such file")
        timeout = table.get("timeout_s", 5.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 60:
            problems.append(f"{where}.timeout_s: a number of seconds from 0 to 60")
            timeout = 5.0
        unknown = set(table) - {
            "url",
            "base_dn",
            "bind_dn",
            "bind_password_file",
            "user_filter",
            "ca_file",
            "timeout_s",
        }
        problems.extend(f"{where}.{key}: unknown key" for key in sorted(unknown))
        config = cls(
            url=url,
            base_dn=text("base_dn"),
            bind_dn=text("bind_dn"),
            bind_password=password,
            user_filter=user_filter,
            ca_file=str(base / ca) if ca else None,
            timeout_s=float(timeout),
        )
        if problems:
            raise ConfigError(where, problems)
        return config


class LdapDirectory:
    """Checks passwords against a directory (see the module doc); a ``PasswordDirectory``."""

    def __init__(self, config: DirectoryConfig) -> None:
        self.config = config
        self.unreachable = 0
        parts = urlsplit(config.url)
        self._tls = ldap3.Tls(
            validate=ssl.CERT_REQUIRED,
            version=ssl.PROTOCOL_TLS_CLIENT,
            ca_certs_file=config.ca_file,
        )
        self._server = ldap3.Server(
            parts.hostname or "",
            port=parts.port or (636 if config.ldaps else 389),
            use_ssl=config.ldaps,
            tls=self._tls,
            connect_timeout=config.timeout_s,
            get_info=ldap3.NONE,
        )

    def _connection(self, user: str, password: str) -> ldap3.Connection:
        """A TLS connection bound as ``user`` (StartTLS first on ``ldap://``); raises on refusal."""
        conn = ldap3.Connection(
            self._server,
            user=user,
            password=password,
            authentication=ldap3.SIMPLE,
            receive_timeout=max(1, round(self.config.timeout_s)),  # ldap3 packs it as an integer
            raise_exceptions=True,
            read_only=True,
        )
        conn.open()
        if not self.config.ldaps:
            conn.start_tls()  # before the bind: the bind carries the password
        conn.bind()
        return conn

    def find_dn(self, name: str) -> str | None:
        """The DN of the one entry matching ``name``, or None (none, several, or unreachable)."""
        query = self.config.user_filter.replace("{name}", escape_filter_chars(name))
        try:
            conn = self._connection(self.config.bind_dn, self.config.bind_password)
        except LDAPException as exc:
            self.unreachable += 1
            log.warning("directory search bind failed", extra={"fields": {"error": type(exc).__name__}})
            return None
        try:
            conn.search(self.config.base_dn, query, search_scope=ldap3.SUBTREE, attributes=[], size_limit=2)
            entries = [e for e in conn.response or [] if e.get("type") == "searchResEntry"]
        except LDAPException as exc:
            log.warning("directory search failed", extra={"fields": {"error": type(exc).__name__}})
            return None
        finally:
            conn.unbind()
        return str(entries[0]["dn"]) if len(entries) == 1 else None

    def check_password(self, name: str, password: str) -> bool:
        """Whether the directory accepts ``password`` for the entry ``name`` finds."""
        if not password:
            return False  # a DN with an empty password is an anonymous bind, which succeeds
        dn = self.find_dn(name)
        if dn is None:
            return False
        try:
            conn = self._connection(dn, password)
        except (LDAPCommunicationError, LDAPStartTLSError) as exc:
            self.unreachable += 1
            log.warning("directory user bind failed", extra={"fields": {"error": type(exc).__name__}})
            return False
        except LDAPException:
            return False  # wrong password, or the entry may not bind: the same to the caller
        conn.unbind()
        return True

"""Node configuration: a TOML file, validated with every error reported by key path.

The file layout is documented key by key in ``network.example.toml`` at the top
of the repository; a test keeps that file and :data:`SPEC` in step.  Relative
paths are resolved against the directory of the configuration file, so a node
directory can be moved as a whole.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from .errors import ConfigError, NodeUsageError
from .private_files import check_file_mode
from .urls import normalise_url

ROLES: Final = ("validator", "audit")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
MAX_CONFIG_BYTES: Final = 1024 * 1024

Check = Callable[[Any], str | None]


@dataclass(frozen=True)
class Key:
    """One configuration key: its type, default (None = required) and an extra check."""

    kind: type | tuple[type, ...]
    default: Any = None
    check: Check | None = None
    required: bool = False


def _one_of(*choices: str) -> Check:
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}"


def _int_range(lo: int, hi: int) -> Check:
    return lambda v: None if lo <= v <= hi else f"must be between {lo} and {hi}"


def _country(v: str) -> str | None:
    return None if _COUNTRY.match(v) else "must be an ISO 3166-1 alpha-2 code such as NO"


def _host_port(v: str) -> str | None:
    host, sep, port = v.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        return "must be HOST:PORT"
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return "host must be an IP address"
    return None


def _multiaddrs(v: list[Any]) -> str | None:
    bad = [a for a in v if not isinstance(a, str) or not a.startswith("/ip")]
    return f"not multiaddrs: {bad}" if bad else None


def _countries(v: list[Any]) -> str | None:
    bad = [c for c in v if not isinstance(c, str) or _country(c)]
    return f"not ISO country codes: {bad}" if bad else None


def _strings(v: list[Any], what: str) -> str | None:
    bad = [x for x in v if not isinstance(x, str) or not x]
    return f"not {what}: {bad}" if bad else None


def _urls(v: list[Any]) -> str | None:
    """Each entry an http(s) base URL in a form the allow-list can match (see :mod:`.urls`)."""
    problems = []
    for entry in v:
        try:
            if not isinstance(entry, str):
                raise NodeUsageError(f"{entry!r} is not a string")
            normalise_url(entry)
        except NodeUsageError as exc:
            problems.append(str(exc))
    return "; ".join(problems) if problems else None


# DICOM AE titles (PS3.5 6.2: 16 characters at most) restricted to a conservative ASCII set with no
# "@", "#", ":" or "?", so "AET@host:port" splits one way only; no leading or trailing space, as
# DICOM does not count those.
_AE_TITLE = re.compile(r"[A-Za-z0-9_.+-](?:[A-Za-z0-9_.+ -]{0,14}[A-Za-z0-9_.+-])?", re.ASCII)
_HOST_NAME = re.compile(
    r"(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
)
_DIMSE_PEER = re.compile(r"(?P<aet>[^@]{1,16})@(?P<host>[^@]+):(?P<port>[1-9][0-9]{0,4})", re.ASCII)


def is_ae_title(text: str) -> bool:
    """Whether ``text`` is an AE title this node accepts (see ``_AE_TITLE``)."""
    return _AE_TITLE.fullmatch(text) is not None


def split_dimse_peer(text: str) -> tuple[str, str, int] | None:
    """``(AE title, host, port)`` of a DIMSE peer spelled ``AET@host:port``; None if not so spelled.

    The host is a DNS name or IPv4 address (lowercased), or an IPv6 address in brackets (kept in
    brackets, compressed).  No user part, path, query or fragment, no leading zero in the port:
    one spelling per peer, so an allow-list can be matched exactly.
    """
    match = _DIMSE_PEER.fullmatch(text) if text.isascii() else None  # "\u212a".lower() == "k"
    if match is None or not is_ae_title(match["aet"]) or int(match["port"]) > 65535:
        return None
    host = match["host"].lower()
    if host.startswith("[") and host.endswith("]"):
        if not set(host[1:-1]) <= set("0123456789abcdef:."):  # no zone id ("%eth0")
            return None
        try:
            host = f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
        except ValueError:
            return None
    elif not _HOST_NAME.fullmatch(host):
        return None
    return match["aet"], host, int(match["port"])


def _ae_title(v: str) -> str | None:
    return None if is_ae_title(v) else "must be an AE title: 1-16 of A-Z a-z 0-9 _ . + - and inner spaces"


def _dimse_peers(v: list[Any]) -> str | None:
    bad = [x for x in v if not isinstance(x, str) or split_dimse_peer(x) is None]
    return f"not AET@host:port: {bad}" if bad else None


def _account_name(v: str) -> str | None:
    return None if re.fullmatch(r"[a-z0-9._@-]{1,64}", v) else "lower-case letters, digits and . _ @ -"


def _origin(v: str) -> str | None:
    if v == "":
        return None
    ok = re.fullmatch(r"https?://[a-z0-9.-]+(:[0-9]{1,5})?", v) is not None
    return None if ok else "scheme://host[:port], lower case, no path (or empty)"


def _hashes(v: list[Any]) -> str | None:
    bad = [h for h in v if not isinstance(h, str) or not _HEX64.match(h)]
    return "each must be the SHA-256 of a token in lowercase hex (64 characters)" if bad else None


SPEC: Final[dict[str, dict[str, Key]]] = {
    "node": {
        "name": Key(str, required=True),
        "role": Key(str, "validator", _one_of(*ROLES)),
        "country": Key(str, required=True, check=_country),
        "identity_file": Key(str, "keys/node.key"),
        "genesis_file": Key(str, "genesis.json"),
        "data_dir": Key(str, "data"),
        "log_level": Key(str, "info", _one_of("debug", "info", "warning", "error")),
        "log_format": Key(str, "json", _one_of("json", "text")),
    },
    "p2p": {
        "listen": Key(list, ["/ip4/127.0.0.1/tcp/7600"], _multiaddrs),
        "max_message_bytes": Key(int, 4 * 1024 * 1024, _int_range(1024, 64 * 1024 * 1024)),
        "redial_max_ms": Key(int, 30_000, _int_range(100, 3_600_000)),
    },
    "api": {
        "listen": Key(str, "127.0.0.1:7700", _host_port),
        # Tokens of one named service account (scripts, the devnet); never an unnamed power.
        "token_sha256": Key(list, [], _hashes),
        "service_account": Key(str, "node-service", _account_name),
        "service_role": Key(str, "operator", _one_of("clinician", "operator", "auditor")),
        "max_request_bytes": Key(int, 1024 * 1024, _int_range(1024, 64 * 1024 * 1024)),
        # The address browsers use ("https://pacs-gw.hospital.example" behind a TLS proxy):
        # the Origin every cookie request must come from, and https makes cookies Secure.
        "public_origin": Key(str, "", _origin),
    },
    "people": {
        "idle_timeout_ms": Key(int, 15 * 60 * 1000, _int_range(60_000, 24 * 3_600_000)),
        "session_lifetime_ms": Key(int, 12 * 3_600_000, _int_range(60_000, 7 * 24 * 3_600_000)),
        "step_up_ms": Key(int, 5 * 60 * 1000, _int_range(10_000, 3_600_000)),
        "failures_per_name": Key(int, 5, _int_range(1, 1000)),
        "failures_per_address": Key(int, 30, _int_range(1, 100_000)),
        "lockout_after": Key(int, 10, _int_range(1, 1000)),
        "lockout_ms": Key(int, 30 * 60 * 1000, _int_range(1000, 30 * 24 * 3_600_000)),
        # Argon2id memory per password check; lower only for throw-away test networks.
        "password_memory_kib": Key(int, 46 * 1024, _int_range(8, 1024 * 1024)),
        "passkey_rp_id": Key(str, ""),
    },
    "consensus": {
        "timeout_propose_ms": Key(int, 1000, _int_range(10, 600_000)),
        "timeout_propose_delta_ms": Key(int, 500, _int_range(0, 600_000)),
        "timeout_prevote_ms": Key(int, 500, _int_range(10, 600_000)),
        "timeout_prevote_delta_ms": Key(int, 500, _int_range(0, 600_000)),
        "timeout_precommit_ms": Key(int, 500, _int_range(10, 600_000)),
        "timeout_precommit_delta_ms": Key(int, 500, _int_range(0, 600_000)),
        "timeout_commit_ms": Key(int, 100, _int_range(0, 600_000)),
        "empty_block_interval_ms": Key(int, 30_000, _int_range(0, 86_400_000)),
        "max_block_records": Key(int, 500, _int_range(1, 10_000)),
        "mempool_max_records": Key(int, 20_000, _int_range(1, 1_000_000)),
    },
    "transfer": {
        "data_listen": Key(str, "127.0.0.1:7800", _host_port),
        "allowed_countries": Key(list, [], _countries),
        "max_study_bytes": Key(int, 64 * 1024**3, _int_range(1, 2**50)),
        "max_instances": Key(int, 20_000, _int_range(1, 1_000_000)),
        "chunk_bytes": Key(int, 4 * 1024 * 1024, _int_range(64 * 1024, 256 * 1024 * 1024)),
        "parallel_fetches": Key(int, 4, _int_range(1, 64)),
        "fetch_timeout_ms": Key(int, 30_000, _int_range(100, 3_600_000)),
        "fetch_retries": Key(int, 5, _int_range(0, 100)),
        "prepare_workers": Key(int, 0, _int_range(0, 64)),
        "compression": Key(str, "auto", _one_of("auto", "ratio", "speed")),
        "burned_in": Key(str, "clean", _one_of("clean", "refuse")),
        "source_dirs": Key(list, [], lambda v: _strings(v, "folder paths")),
        "export_dirs": Key(list, [], lambda v: _strings(v, "folder paths")),
        # Exported files are read by a PACS import job, often another user: the operator's mode.
        "export_file_mode": Key(str, "0640", check_file_mode),
        "dicomweb_urls": Key(list, [], _urls),
        "dimse_peers": Key(list, [], _dimse_peers),
        "dimse_aet": Key(str, "MFTP", _ae_title),
    },
}

# A [[p2p.peers]] entry is a bootstrap address: the chain's member directory says the rest. Name and
# key may be left out when an address ends in /p2p/<peer id> (which holds the key); entries written
# before the directory (name, key, data_url, country) keep working for members without an entry.
PEER_SPEC: Final[dict[str, Key]] = {
    "name": Key(str, ""),
    "sign_key": Key(str, "", check=lambda v: None if _HEX64.match(v) else "must be 64 hex digits"),
    "address": Key(list, [], _multiaddrs),
    "data_url": Key(str, ""),
    # Where the member's data lives; empty = unknown, and then no study may be sent to it.
    "country": Key(str, "", lambda v: None if v == "" else _country(v)),
}


@dataclass(frozen=True)
class Peer:
    """A fellow member this node dials: its name, public key and addresses."""

    name: str
    sign_key: bytes
    address: tuple[str, ...]
    data_url: str
    country: str = ""


@dataclass(frozen=True)
class Config:
    """A validated configuration; ``values[section][key]`` holds every key with defaults filled in."""

    path: Path
    values: dict[str, dict[str, Any]]
    peers: tuple[Peer, ...] = field(default=())

    def get(self, section: str, key: str) -> Any:
        """One value."""
        return self.values[section][key]

    def resolve(self, section: str, key: str) -> Path:
        """A path value, relative to the configuration file's directory."""
        return (self.path.parent / self.values[section][key]).resolve()

    @property
    def role(self) -> str:
        """``validator`` or ``audit``."""
        return str(self.values["node"]["role"])


def load_config(path: Path | str) -> Config:
    """Read and validate a configuration file; raises :class:`ConfigError` listing every problem."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read: {exc.strerror}"]) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(str(path), [f"larger than {MAX_CONFIG_BYTES} bytes"])
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [f"not valid TOML: {exc}"]) from None
    return parse_config(raw, path)


def parse_config(raw: dict[str, Any], path: Path) -> Config:
    """Validate an already parsed TOML document."""
    problems: list[str] = []
    values: dict[str, dict[str, Any]] = {}
    for section in raw.keys() - SPEC.keys():
        problems.append(f"{section}: unknown section")
    for section, keys in SPEC.items():
        given = raw.get(section, {})
        if not isinstance(given, dict):
            problems.append(f"{section}: must be a table")
            given = {}
        extra = dict(given)
        peers_raw = extra.pop("peers", []) if section == "p2p" else []
        directory = extra.pop("directory", None) if section == "people" else None
        values[section] = _check_table(section, keys, extra, problems)
        if section == "p2p":
            values[section]["peers"] = peers_raw
        if section == "people":
            if directory is not None and not isinstance(directory, dict):
                problems.append("people.directory: must be a table ([people.directory])")
                directory = None
            values[section]["directory"] = directory  # checked by people.ldap when the node starts
    peers = _check_peers(values["p2p"].get("peers", []), problems)
    if problems:
        raise ConfigError(str(path), problems)
    return Config(path=path.resolve(), values=values, peers=peers)


def _check_table(
    where: str, keys: dict[str, Key], given: dict[str, Any], problems: list[str]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in given.keys() - keys.keys():
        problems.append(f"{where}.{key}: unknown key")
    for key, spec in keys.items():
        if key not in given:
            if spec.required:
                problems.append(f"{where}.{key}: required")
            out[key] = spec.default
            continue
        value = given[key]
        if not isinstance(value, spec.kind) or (isinstance(value, bool) and spec.kind is int):
            problems.append(f"{where}.{key}: expected {_kind_name(spec.kind)}, got {type(value).__name__}")
            continue
        message = spec.check(value) if spec.check else None
        if message:
            problems.append(f"{where}.{key}: {message}")
        out[key] = value
    return out


def _check_peers(items: Any, problems: list[str]) -> tuple[Peer, ...]:
    if not isinstance(items, list):
        problems.append("p2p.peers: must be an array of tables ([[p2p.peers]])")
        return ()
    peers = []
    for index, item in enumerate(items):
        where = f"p2p.peers[{index}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: must be a table")
            continue
        before = len(problems)
        value = _check_table(where, PEER_SPEC, item, problems)
        if not value["sign_key"] and not any("/p2p/" in a for a in value["address"] if isinstance(a, str)):
            problems.append(f"{where}: give sign_key, or an address ending in /p2p/<peer id>")
        if len(problems) == before:
            peers.append(
                Peer(
                    value["name"],
                    bytes.fromhex(value["sign_key"]),
                    tuple(value["address"]),
                    value["data_url"],
                    value["country"],
                )
            )
    return tuple(peers)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {"str": "a string", "int": "an integer", "list": "an array", "bool": "true or false"}
    return " or ".join(names.get(k.__name__, k.__name__) for k in kinds)

"""A local consortium on loopback: N validators and M audit nodes as separate processes.

``mftp-node devnet`` lays out one directory per member (key, public identity,
API token, node.toml listing every other member as a peer), builds the genesis,
starts every node as its own ``mftp-node run`` process, waits until each API
answers, prints the API addresses, and on Ctrl-C (or SIGTERM) stops every
process cleanly.  Tests and ``make demo`` use the same functions.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from mftp.crypto.keyfile import save_identity, write_public_identity
from mftp.crypto.signing import SigningIdentity
from mftp.ledger.genesis import make_genesis

from ..clock import SYSTEM_CLOCK
from ..errors import NodeError, NodeUsageError
from ..private_files import private_dir, write_private

READY_TIMEOUT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 20.0


@dataclass(frozen=True)
class Member:
    """One member of a devnet: where it lives and where it listens."""

    name: str
    role: str
    directory: Path
    sign_key: bytes
    p2p_port: int
    api_port: int
    data_port: int

    @property
    def config_path(self) -> Path:
        """Its node.toml."""
        return self.directory / "node.toml"

    @property
    def api_url(self) -> str:
        """Base URL of its HTTP API."""
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def token(self) -> str:
        """Its operator service account's API token (read from the 0600 file)."""
        return (self.directory / "keys" / "api.token").read_text(encoding="utf-8").strip()

    @property
    def p2p_address(self) -> str:
        """Its libp2p listen address."""
        return f"/ip4/127.0.0.1/tcp/{self.p2p_port}"


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on loopback right now."""
    sockets, ports = [], []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
            ports.append(int(sock.getsockname()[1]))
    finally:
        for sock in sockets:
            sock.close()
    return ports


def create_devnet(
    root: Path,
    *,
    validators: int = 4,
    audit: int = 1,
    country: str = "NO",
    countries: dict[str, str] | None = None,
    consensus: dict[str, int] | None = None,
) -> list[Member]:
    """Lay out the member directories, keys, configs and genesis of a new devnet under ``root``.

    Every member lives in ``country`` unless ``countries`` names another for it (by member
    name, e.g. ``{"hospital-c": "SE"}``); each config lists every other member's country.
    """
    if validators < 1 or audit < 0 or validators + audit > 32:
        raise NodeUsageError("a devnet has 1 to 32 members, at least one of them a validator")
    if (root / "devnet.json").exists():
        raise NodeUsageError(f"{root} already holds a devnet; pass --fresh to replace it")
    root.mkdir(parents=True, exist_ok=True)
    ports = free_ports(3 * (validators + audit))
    members, identities = [], []
    for index in range(validators + audit):
        role = "validator" if index < validators else "audit"
        name = (
            f"hospital-{chr(ord('a') + index)}"
            if role == "validator"
            else f"regulator-{index - validators + 1}"
        )
        identity = SigningIdentity.generate()
        directory = root / name
        private_dir(directory)  # the member's directory and its keys: 0700 whatever the umask
        private_dir(directory / "keys")
        save_identity(directory / "keys" / "node.key", identity)
        write_public_identity(directory / "node.pub.json", identity.public, name=name)
        p2p, api, data = ports[3 * index : 3 * index + 3]
        members.append(Member(name, role, directory, identity.public.sign_key, p2p, api, data))
        identities.append(identity)
    genesis = make_genesis(
        "MFTP devnet",
        f"mftp-devnet-{secrets.token_hex(3)}",
        SYSTEM_CLOCK.now_ms(),
        [(m.name, m.sign_key, 1) for m in members if m.role == "validator"],
        [(m.name, m.sign_key) for m in members if m.role == "audit"],
    )
    for member in members:
        genesis.save(member.directory / "genesis.json")
        token = secrets.token_urlsafe(32)
        write_private(member.directory / "keys" / "api.token", token + "\n")
        where = {m.name: (countries or {}).get(m.name, country) for m in members}
        text = _config_text(
            member, members, where, hashlib.sha256(token.encode()).hexdigest(), consensus or {}
        )
        write_private(member.config_path, text)
    _save_layout(root, members)
    return members


def _config_text(
    member: Member,
    members: Sequence[Member],
    countries: dict[str, str],
    token_hash: str,
    consensus: dict[str, int],
) -> str:
    lines = [
        "# A devnet member, written by `mftp-node devnet` (keys documented in network.example.toml).",
        "[node]",
        f'name = "{member.name}"',
        f'role = "{member.role}"',
        f'country = "{countries[member.name]}"',
        'log_format = "json"',
        "",
        "[p2p]",
        f'listen = ["{member.p2p_address}"]',
        "",
        "[api]",
        f'listen = "127.0.0.1:{member.api_port}"',
        f'token_sha256 = ["{token_hash}"]',
        'service_account = "devnet-operator"  # keys/api.token: an operator, never a clinician',
        "",
        "[people]",
        # A throw-away network of test accounts: cheap password hashing keeps sign-ins fast on
        # two shared cores.  A real node keeps the default (46 MiB).
        "password_memory_kib = 1024",
        "",
        "[transfer]",
        f'data_listen = "127.0.0.1:{member.data_port}"',
        # A devnet is a sandbox: studies may come from and go to the folder that holds it,
        # and DICOMweb servers on loopback.
        f"source_dirs = [{json.dumps(str(member.directory.parent.parent))}]",
        f"export_dirs = [{json.dumps(str(member.directory.parent.parent))}]",
        'dicomweb_urls = ["http://127.0.0.1"]  # no port given: any port on loopback',
        "",
        "[consensus]",
    ]
    lines += [f"{key} = {value}" for key, value in sorted(consensus.items())]
    for other in members:
        if other is member:
            continue
        lines += [
            "",
            "[[p2p.peers]]",
            f'name = "{other.name}"',
            f'sign_key = "{other.sign_key.hex()}"',
            f'address = ["{other.p2p_address}"]',
            f'data_url = "https://127.0.0.1:{other.data_port}"',
            f'country = "{countries[other.name]}"',
        ]
    return "\n".join(lines) + "\n"


def _save_layout(root: Path, members: Sequence[Member]) -> None:
    layout = [
        {
            "name": m.name,
            "role": m.role,
            "directory": m.directory.name,
            "sign_key": m.sign_key.hex(),
            "ports": [m.p2p_port, m.api_port, m.data_port],
        }
        for m in members
    ]
    (root / "devnet.json").write_text(json.dumps(layout, indent=2) + "\n", encoding="utf-8")


def load_devnet(root: Path) -> list[Member]:
    """The members of an existing devnet under ``root``."""
    try:
        layout = json.loads((root / "devnet.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise NodeUsageError(f"{root} holds no devnet: {exc}") from None
    return [
        Member(e["name"], e["role"], root / e["directory"], bytes.fromhex(e["sign_key"]), *e["ports"])
        for e in layout
    ]


class NodeProcess:
    """One member running as its own ``mftp-node run`` process."""

    def __init__(self, member: Member) -> None:
        self.member = member
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process; its logs go to ``node.log`` in the member's directory."""
        # Private whatever the umask (and narrowed if an older run left it readable).
        log_fd = os.open(self.member.directory / "node.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.fchmod(log_fd, 0o600)
        log = os.fdopen(log_fd, "ab")
        command = [
            sys.executable,
            "-m",
            "mftp.node.cli.main",
            "run",
            "--config",
            str(self.member.config_path),
        ]
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        log.close()

    def kill(self) -> None:
        """SIGKILL: a crash, for tests."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.process is not None and self.process.poll() is None

    def status(self, timeout_s: float = 2.0) -> dict[str, Any] | None:
        """``GET /status`` or None if it does not answer."""
        try:
            with urllib.request.urlopen(f"{self.member.api_url}/status", timeout=timeout_s) as response:
                status: dict[str, Any] = json.loads(response.read())
                return status
        except (OSError, ValueError, urllib.error.URLError):
            return None

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> dict[str, Any]:
        """Wait until the API answers; raises :class:`NodeError` if the process dies or times out."""
        deadline = SYSTEM_CLOCK.monotonic_s() + timeout_s
        while SYSTEM_CLOCK.monotonic_s() < deadline:
            if not self.running:
                raise NodeError(f"{self.member.name} exited; see {self.member.directory / 'node.log'}")
            status = self.status()
            if status is not None:
                return status
            time.sleep(0.1)
        raise NodeError(f"{self.member.name} did not answer within {timeout_s:.0f} s")


def start_all(members: Sequence[Member]) -> list[NodeProcess]:
    """Start every member and wait until each API answers."""
    processes = [NodeProcess(m) for m in members]
    try:
        for process in processes:
            process.start()
        for process in processes:
            process.wait_ready()
    except BaseException:
        stop_all(processes)
        raise
    return processes


def stop_all(processes: Sequence[NodeProcess]) -> None:
    """Stop every process (SIGTERM to all first, so they shut down in parallel)."""
    for process in processes:
        if process.running and process.process is not None:
            process.process.send_signal(signal.SIGTERM)
    for process in processes:
        process.stop()


def wait_for_height(processes: Sequence[NodeProcess], height: int, timeout_s: float) -> list[dict[str, Any]]:
    """Wait until every running process reports at least ``height``; returns their statuses."""
    deadline = SYSTEM_CLOCK.monotonic_s() + timeout_s
    statuses: list[dict[str, Any]] = []
    while SYSTEM_CLOCK.monotonic_s() < deadline:
        statuses = [s for s in (p.status() for p in processes if p.running) if s is not None]
        if len(statuses) == sum(p.running for p in processes) and all(
            s["height"] >= height for s in statuses
        ):
            return statuses
        time.sleep(0.2)
    heights = {s["name"]: s["height"] for s in statuses}
    raise NodeError(f"not every node reached height {height} within {timeout_s:.0f} s: {heights}")

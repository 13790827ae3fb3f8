"""``mftp-node``: the command line of an MFTP node.

Exit codes scripts can rely on:

* 0 success
* 1 runtime failure (a peer, the network, the PACS)
* 2 usage error (bad arguments; argparse's own code)
* 3 configuration or key file error, or this node's stored data is damaged
* 4 verification failed (chain, proof, audit)
* 5 the node refused the request (data residency, bad source, unknown transfer)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from mftp.crypto.errors import CryptoError
from mftp.crypto.keyfile import (
    load_identity,
    read_public_identity_with_name,
    save_identity,
    write_public_identity,
)
from mftp.crypto.signing import SigningIdentity
from mftp.ledger.errors import LedgerError, StoreError
from mftp.ledger.genesis import make_genesis

from ..clock import SYSTEM_CLOCK
from ..errors import ConfigError, NodeError, NodeUsageError, StorageDamaged
from ..private_files import narrow_file, private_dir, set_private_umask, tighten, write_private
from .audit import add_audit_arguments, run_audit
from .member import add_member_arguments, run_member
from .people import (
    add_login_arguments,
    add_logout_arguments,
    add_user_arguments,
    run_enrol,
    run_login,
    run_logout,
    run_user,
)
from .share import add_share_arguments, run_share
from .transfers import (
    add_export_arguments,
    add_inbox_arguments,
    add_send_arguments,
    run_export,
    run_inbox,
    run_send,
)
from .view import add_view_arguments, run_view

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_CONFIG: Final = 3
EXIT_VERIFY: Final = 4

PASSPHRASE_ENV: Final = "MFTP_KEY_PASSPHRASE"

EPILOG: Final = """exit codes: 0 success, 1 runtime failure, 2 usage error,
3 configuration or key file error or damaged stored data, 4 verification failed, 5 refused by the node"""

Handler = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Handler, str]] = {}


def command(name: str, help_text: str) -> Callable[[Callable[[argparse.ArgumentParser], None]], Handler]:
    """Register a sub-command: the decorated function adds its arguments; ``run_<name>`` is its body."""

    def register(add_arguments: Callable[[argparse.ArgumentParser], None]) -> Handler:
        handler: Handler = globals()[f"run_{name.replace('-', '_')}"]
        _COMMANDS[name] = (add_arguments, handler, help_text)
        return handler

    return register


def load_node_identity(path: Path) -> SigningIdentity:
    """Load the node key, unsealing it with ``$MFTP_KEY_PASSPHRASE`` when it is sealed."""
    return load_identity(path, passphrase=os.environ.get(PASSPHRASE_ENV) or None)


# ---------------------------------------------------------------------------------- init


def run_init(args: argparse.Namespace) -> int:
    """Create a node directory: key file, public identity, API token and node.toml."""
    set_private_umask()  # every file made below is private, whatever umask we were started with
    root = Path(args.dir)
    config_path = root / "node.toml"
    if config_path.exists() and not args.force:
        raise NodeUsageError(f"{config_path} exists; pass --force to overwrite the configuration")
    (root / "keys").mkdir(parents=True, exist_ok=True)
    os.chmod(root / "keys", 0o700)
    key_path = root / "keys" / "node.key"
    if key_path.exists():
        identity = load_node_identity(key_path)
        print(f"kept the existing key {key_path}")
    else:
        identity = SigningIdentity.generate()
        save_identity(key_path, identity, passphrase=os.environ.get(PASSPHRASE_ENV) or None)
    write_public_identity(root / "node.pub.json", identity.public, name=args.name)
    token = secrets.token_urlsafe(32)
    _write_private(root / "keys" / "api.token", token + "\n")
    write_private(config_path, _render_config(args, hashlib.sha256(token.encode()).hexdigest()))
    print(f"node {args.name!r} initialised in {root}")
    print(f"  node id       {identity.public.node_id.hex()}")
    print(f"  public key    {identity.public.sign_key.hex()}")
    print(f"  public file   {root / 'node.pub.json'} (give it to the consortium for the genesis)")
    print(f"  API token     {root / 'keys' / 'api.token'} (mode 0600): the operator service account's")
    print("  first person  mftp-node user add NAME --role operator --config node.toml \\")
    print(f"                  --token-file {root / 'keys' / 'api.token'}   (then: mftp-node enrol)")
    return EXIT_OK


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def _render_config(args: argparse.Namespace, token_hash: str) -> str:
    return f"""# Written by `mftp-node init`; every key is documented in network.example.toml.
[node]
name = "{args.name}"
role = "{args.role}"
country = "{args.country}"
identity_file = "keys/node.key"
genesis_file = "genesis.json"
data_dir = "data"

[p2p]
listen = ["/ip4/{args.host}/tcp/{args.p2p_port}"]

[api]
listen = "{args.host}:{args.api_port}"
# keys/api.token: the operator service account's token (scripts; adding the first person)
token_sha256 = ["{token_hash}"]
service_account = "node-operator"

[transfer]
data_listen = "{args.host}:{args.data_port}"
"""


@command("init", "create a node directory with its key, public identity, API token and config")
def _init_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", required=True, help="node directory to create")
    parser.add_argument("--name", required=True, help="institution's display name")
    parser.add_argument("--country", required=True, help="ISO 3166-1 alpha-2 code of where the data lives")
    parser.add_argument("--role", choices=["validator", "audit"], default="validator")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    parser.add_argument("--p2p-port", type=int, default=7600)
    parser.add_argument("--api-port", type=int, default=7700)
    parser.add_argument("--data-port", type=int, default=7800)
    parser.add_argument(
        "--force", action="store_true", help="overwrite an existing node.toml (the key is kept)"
    )


# ------------------------------------------------------------------------------- genesis


def run_genesis(args: argparse.Namespace) -> int:
    """Build the genesis file from the members' public identity files."""
    validators = []
    for spec in args.validator:
        path, _, power = spec.partition(":")
        identity, name = read_public_identity_with_name(path)
        validators.append((name, identity.sign_key, int(power or 1)))
    auditors = []
    for path in args.audit:
        identity, name = read_public_identity_with_name(path)
        auditors.append((name, identity.sign_key))
    time_ms = args.time_ms if args.time_ms is not None else SYSTEM_CLOCK.now_ms()
    genesis = make_genesis(args.consortium, args.chain_id, time_ms, validators, auditors)
    out = Path(args.out)
    genesis.save(out)
    print(f"wrote {out}: {len(validators)} validators, {len(auditors)} audit nodes")
    print(f"  genesis hash  {genesis.hash.hex()} (every member must see the same)")
    return EXIT_OK


@command("genesis", "build the genesis file from members' public identity files")
def _genesis_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--consortium", required=True, help="consortium name")
    parser.add_argument("--chain-id", required=True, help="chain id, e.g. nordic-imaging-1")
    parser.add_argument(
        "--validator", action="append", default=[], metavar="PUB[:POWER]", help="a validator's node.pub.json"
    )
    parser.add_argument(
        "--audit", action="append", default=[], metavar="PUB", help="an audit node's node.pub.json"
    )
    parser.add_argument("--out", default="genesis.json")
    parser.add_argument("--time-ms", type=int, default=None, help="genesis time (default now)")


# --------------------------------------------------------------------------------- token


def run_token(args: argparse.Namespace) -> int:
    """Make a new API token, print it once, and print the hash to put in api.token_sha256."""
    token = secrets.token_urlsafe(32)
    if args.out:
        _write_private(Path(args.out), token + "\n")
        print(f"token written to {args.out} (mode 0600)")
    else:
        print(f"token        {token}")
    print(f"token_sha256 {hashlib.sha256(token.encode()).hexdigest()}")
    return EXIT_OK


@command("token", "make a token for the node's service account and print its hash for node.toml")
def _token_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", help="write the token to this file (mode 0600) instead of printing it")


# ----------------------------------------------------------------------------------- run


def run_run(args: argparse.Namespace) -> int:
    """Run the node until SIGINT or SIGTERM."""
    import asyncio
    import signal

    from mftp.ledger.genesis import Genesis

    from ..config import load_config
    from ..logs import setup_logging
    from ..process import run_node

    set_private_umask()  # the WAL, the ledger, the blobs, the vault: private whatever our umask
    config = load_config(args.config)
    setup_logging(
        config.get("node", "log_level"), config.get("node", "log_format"), config.get("node", "name")
    )
    _make_private(config.path, config.resolve("node", "data_dir"))
    identity = load_node_identity(config.resolve("node", "identity_file"))
    genesis = Genesis.load(config.resolve("node", "genesis_file"))
    key = identity.public.sign_key
    if key not in genesis.validators and all(a.sign_key != key for a in genesis.auditors):
        print(
            "mftp-node run: warning: this node's key is not in the genesis; members will refuse it "
            "until a membership change adds it",
            file=sys.stderr,
        )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_node(config, identity, genesis, stop)

    asyncio.run(main())
    return EXIT_OK


def _make_private(config_path: Path, data_dir: Path) -> None:
    """Narrow what an older version (or a copy under another umask) left readable by others.

    The data directory itself is made 0700 at once, which already shuts everyone else out of
    all it holds; the pass over its contents (one ``lstat`` per file, seconds for millions of
    blobs) then runs beside the node instead of delaying its start.
    """
    import logging
    import threading

    log = logging.getLogger("mftp.node.cli")
    private_dir(data_dir)
    narrowed = sum(narrow_file(p) for p in (config_path, config_path.parent / "node.log") if p.exists())

    def narrow_data_dir() -> None:
        try:
            changed = narrowed + tighten(data_dir)
        except OSError as exc:
            log.warning("file modes not narrowed", extra={"fields": {"error": exc.strerror or str(exc)}})
            return
        if changed:
            log.warning("file modes narrowed to 0600/0700", extra={"fields": {"files": changed}})

    threading.Thread(target=narrow_data_dir, name="narrow-modes", daemon=True).start()


@command("run", "run the node (validator or audit) until SIGINT or SIGTERM")
def _run_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="the node's node.toml")


# -------------------------------------------------------------------------------- status


def run_status(args: argparse.Namespace) -> int:
    """Print a running node's status from its API."""
    import json
    import urllib.error
    import urllib.request

    url = args.api
    if url is None:
        from ..config import load_config

        url = "http://" + load_config(args.config).get("api", "listen")
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/status", timeout=args.timeout) as response:
            status = json.loads(response.read())
    except (OSError, ValueError) as exc:
        print(f"mftp-node status: {url} does not answer: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        for key in ("name", "role", "chain_id", "height", "round", "ledger_size", "peers", "mempool_records"):
            print(f"{key:16} {status.get(key)}")
        print(f"{'sync':16} {status.get('sync', {}).get('state')}")
    return EXIT_OK


@command("status", "show a running node's height, round, peers and sync state")
def _status_args(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--api", help="API base URL, e.g. http://127.0.0.1:7700")
    where.add_argument("--config", help="the node's node.toml (its api.listen is used)")
    parser.add_argument("--json", action="store_true", help="print the raw JSON")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an answer")


# -------------------------------------------------------------------------------- devnet


def run_devnet(args: argparse.Namespace) -> int:
    """Start a local consortium on loopback and keep it running until Ctrl-C."""
    import shutil
    import signal
    import threading

    from ..devnet import consortium as devnet

    set_private_umask()  # the members' directories and files, and their processes, inherit it
    root = Path(args.dir)
    if args.fresh and root.exists():
        shutil.rmtree(root)
    if (root / "devnet.json").exists():
        members = devnet.load_devnet(root)
        print(f"restarting the devnet in {root}")
    else:
        members = devnet.create_devnet(root, validators=args.validators, audit=args.audit)
        print(f"created a devnet in {root}: {args.validators} validators, {args.audit} audit nodes")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    processes = devnet.start_all(members)
    try:
        for member in members:
            token = member.directory / "keys" / "api.token"
            print(f"  {member.name:14} {member.role:9} API {member.api_url}  token {token}")
        print("press Ctrl-C to stop every node")
        while not stop.wait(1.0):
            dead = [p.member.name for p in processes if not p.running]
            if dead:
                print(f"mftp-node devnet: {', '.join(dead)} stopped; see their node.log", file=sys.stderr)
                return EXIT_FAILURE
    finally:
        devnet.stop_all(processes)
        print("every node stopped")
    return EXIT_OK


@command("devnet", "start a local consortium on loopback as separate processes; Ctrl-C stops it")
def _devnet_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", default="devnet", help="directory of the devnet (created if missing)")
    parser.add_argument("--validators", type=int, default=4)
    parser.add_argument("--audit", type=int, default=1, help="audit-only nodes")
    parser.add_argument("--fresh", action="store_true", help="delete an existing devnet in --dir first")


# ----------------------------------------------------------------------------- transfers

# The bodies live in .transfers; registering them here keeps the command order of --help.
command("send", "send a study to a member through the running node, with a progress bar")(add_send_arguments)
command("inbox", "list the studies received (and with --all sent) by the running node")(add_inbox_arguments)
command("export", "deliver a received study into a folder (records the access)")(add_export_arguments)
command("view", "open a received study for viewing, optionally saving its instances (records the access)")(
    add_view_arguments
)
command("audit", "pseudonymous audit: register users, grant an auditor, scan, report")(add_audit_arguments)
command("login", "sign in (password and second factor); keeps your personal API token")(add_login_arguments)
command("logout", "revoke and forget your personal API token")(add_logout_arguments)
command("enrol", "first sign-in with the operator's one-time code: password, authenticator, recovery codes")(
    add_login_arguments
)
command("user", "accounts of this node (operators): add, list, disable, enable, unlock, reset-mfa, roles")(
    add_user_arguments
)
command("share", "share received studies with their patient: a link and a code (create, list, revoke)")(
    add_share_arguments
)
command("member", "join or leave the consortium: request, propose, approve, reject, list, leave")(
    add_member_arguments
)
_TRANSFER_HANDLERS = (run_send, run_inbox, run_export, run_view, run_audit, run_share, run_member)  # by name
_PEOPLE_HANDLERS = (run_login, run_logout, run_enrol, run_user)


# ---------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="mftp-node",
        description="MFTP node: share medical studies between institutions with a verifiable ledger.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (add_arguments, handler, help_text) in _COMMANDS.items():
        child = sub.add_parser(name, help=help_text, description=help_text, epilog=EPILOG)
        add_arguments(child)
        child.set_defaults(handler=handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mftp-node``; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"mftp-node: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (StorageDamaged, StoreError) as exc:  # our own files: restore them from backup
        print(
            f"mftp-node {args.command}: stored data is damaged (restore it from backup): {exc}",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    except (CryptoError, LedgerError, NodeUsageError) as exc:
        print(f"mftp-node {args.command}: {exc}", file=sys.stderr)
        return EXIT_CONFIG if isinstance(exc, CryptoError | NodeUsageError) else EXIT_VERIFY
    except (NodeError, OSError) as exc:
        print(f"mftp-node {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

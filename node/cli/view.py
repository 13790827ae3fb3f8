"""``mftp-node view``: open a received study for viewing through a running node's API.

``view TRANSFER_ID [--purpose P]`` opens a view (the node signs one ``STUDY_ACCESSED``
record, action ``view``) and prints its id and instance count; a viewer then reads the
instances with ``GET /transfers/{id}/views/{view_id}/instances/{name}`` until the view expires.
With ``--save DIR`` this command is that viewer: it downloads every instance into ``DIR`` (an
existing folder on *this* host, unlike ``export``, which the node writes on its own host), each
file mode 0600 and never overwriting one.  The files are patient data in clear: ``DIR`` is the
user's to protect.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from mftp.transfer.manifest import name_problem

from ..errors import NodeError, NodeUsageError
from .transfers import EXIT_OK, ApiClient, _client, _common, _refused

COPY_PIECE_BYTES: Final = 1 << 20


def run_view(args: argparse.Namespace) -> int:
    """Open a view of a received study; with ``--save``, download its instances."""
    save = Path(args.save) if args.save else None
    if save is not None and not save.is_dir():
        # Checked before the view is opened: a failed command should not leave an access record.
        raise NodeUsageError(f"--save {save}: not an existing folder")
    client = _client(args)
    body: dict[str, str] = {}
    if args.purpose:
        body["purpose"] = args.purpose
    transfer = quote(args.transfer_id, safe="")
    status, answer = client.call("POST", f"/transfers/{transfer}/views", body)
    if status != 201:
        return _refused("view", status, answer)
    instances: list[dict[str, Any]] = answer["instances"]
    print(f"view {answer['view_id']} of transfer {answer['transfer_id']}: {len(instances)} instance(s)")
    print(f"  accessed record  {answer['record']}")
    print(f"  expires in       {answer['expires_in_s']} s")
    if save is None:
        return EXIT_OK
    targets = [(item, save / _local_name(item["name"])) for item in instances]
    existing = [str(path) for _, path in targets if path.exists()]
    if existing:
        raise NodeUsageError(f"--save would overwrite {len(existing)} file(s), e.g. {existing[0]}")
    for item, target in targets:
        path = f"/transfers/{transfer}/views/{answer['view_id']}/instances/{quote(item['name'], safe='')}"
        status, error = _download(client, path, target, int(item["size"]))
        if status != 200:
            return _refused("view", status, error)
    print(f"saved {len(targets)} file(s) to {save}")
    return EXIT_OK


def _local_name(name: str) -> str:
    """A file name in ``--save`` for an entry name (from the sender's manifest: checked again)."""
    if name_problem(name) is not None:
        raise NodeError("the node listed an instance with an unsafe name")
    return name.replace("/", "_")  # flat, as the node's own export spills them


def _download(client: ApiClient, path: str, target: Path, size: int) -> tuple[int, Any]:
    """GET ``path`` into a new file ``target`` (mode 0600); ``(status, error body)``."""
    response = client.open("GET", path)
    if isinstance(response, tuple):
        return response
    with response:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                shutil.copyfileobj(response, handle, COPY_PIECE_BYTES)
                written = handle.tell()
            if written != size:
                raise NodeError(f"an instance arrived with {written} bytes instead of {size}")
        except (OSError, http.client.HTTPException) as exc:
            target.unlink(missing_ok=True)  # no truncated file left behind
            raise NodeError(f"downloading an instance failed: {exc}") from None
        except BaseException:
            target.unlink(missing_ok=True)
            raise
    return response.status, None


def add_view_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``view``."""
    parser.add_argument("transfer_id", help="id of a complete received transfer (see inbox)")
    parser.add_argument("--purpose", help="HL7 PurposeOfUse code of this access (default: the offer's)")
    parser.add_argument(
        "--save",
        metavar="DIR",
        help="download every instance into this existing folder on this host (files mode 0600)",
    )
    _common(parser)

"""Where ``mftp-node login`` keeps the signed-in user's personal API token.

One file per node API, ``$XDG_CONFIG_HOME/mftp/tokens/<host>_<port>.token`` (default
``~/.config``), mode 0600 in 0700 folders: readable by this operating-system user only, as an
SSH key is.  ``mftp-node logout`` revokes the token at the node and deletes the file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import NodeUsageError
from ..private_files import write_private


class NotSignedIn(NodeUsageError):
    """No personal token is kept for this node: ``mftp-node login`` first."""


def config_home() -> Path:
    """The user's configuration folder (XDG), where personal tokens live."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mftp"


def personal_token_path(api_base: str) -> Path:
    """The token file for the node API at ``api_base`` (``http://host:port``)."""
    where = re.sub(r"[^A-Za-z0-9.-]+", "_", api_base.split("://", 1)[-1]).strip("_")
    return config_home() / "tokens" / f"{where}.token"


def save_personal_token(api_base: str, token: str) -> Path:
    """Keep ``token`` for ``api_base`` (0600 file, 0700 folders); its path."""
    path = personal_token_path(api_base)
    for folder in (config_home(), path.parent):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
    write_private(path, token + "\n")
    return path


def forget_personal_token(api_base: str) -> bool:
    """Delete the kept token of ``api_base``; whether there was one."""
    try:
        personal_token_path(api_base).unlink()
    except FileNotFoundError:
        return False
    return True

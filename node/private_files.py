"""Files the node keeps are private whatever the umask: 0600 files, 0700 folders.

The node's own files (the WAL, the LevelDB ledger, the blob store, the vault, transfer states,
``node.toml``, ``node.log``, spills) are nobody else's business, yet a process inherits its
umask from whoever started it, typically 022, which would make every new file world-readable.
So the node sets its own umask (:func:`set_private_umask`) at the start of ``mftp-node run``,
``init`` and ``devnet``, the places that know the files (``FileWal``, the node key, the token,
``node.toml``, ``node.log``) also pass explicit modes, and :func:`tighten` narrows the modes of
what an older version or a copy left in the data directory.

Exported files are the exception: a PACS import job usually runs as another user, so their mode
is the operator's (``transfer.export_file_mode``, :func:`parse_file_mode`).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

__all__ = [
    "PRIVATE_DIR_MODE",
    "PRIVATE_FILE_MODE",
    "PRIVATE_UMASK",
    "check_file_mode",
    "dir_mode_for",
    "narrow_file",
    "parse_file_mode",
    "private_dir",
    "set_private_umask",
    "tighten",
    "write_private",
]

PRIVATE_UMASK: Final = 0o077
PRIVATE_FILE_MODE: Final = 0o600
PRIVATE_DIR_MODE: Final = 0o700
_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)


def set_private_umask() -> int:
    """Make every file this process creates from now on private; returns the umask it replaced."""
    return os.umask(PRIVATE_UMASK)


def private_dir(path: Path) -> Path:
    """Create ``path`` and the parents it lacks as 0700 folders; refuse one that is a link.

    An existing ``path`` is narrowed to 0700; existing parents are left as they are (they may
    be the operator's).  A link in ``path``'s place raises :class:`OSError`: a private folder
    reached through someone else's link would not be private.
    """
    missing = []
    folder = path
    while not os.path.lexists(folder) and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for made in reversed(missing):
        try:
            os.mkdir(made, PRIVATE_DIR_MODE)
        except FileExistsError:  # made meanwhile: checked like any existing folder
            continue
        _narrow_dir(made)  # the umask may have taken bits off: exactly 0700
    _narrow_dir(path)
    return path


def _narrow_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW | os.O_CLOEXEC)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != PRIVATE_DIR_MODE:
            os.fchmod(fd, PRIVATE_DIR_MODE)
    finally:
        os.close(fd)


def write_private(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` as a 0600 file (replacing its content; a link there is refused)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), PRIVATE_FILE_MODE)  # an existing file keeps its mode otherwise
        handle.write(raw)


def tighten(root: Path) -> int:
    """Narrow everything under ``root`` (and ``root``) to 0700 folders and 0600 files.

    Links are neither followed nor changed (``chmod`` would act on their target, which may lie
    anywhere).  Returns how many modes were changed.  A missing ``root`` is not an error.
    """
    changed = 0
    if not root.exists() or root.is_symlink():
        return changed
    changed += _narrow(root, PRIVATE_DIR_MODE)
    stack = [root]
    while stack:
        try:
            listing = os.scandir(stack.pop())
        except FileNotFoundError:  # removed meanwhile (a spill cleaned up while we walk)
            continue
        with listing as entries:
            for entry in entries:
                # One lstat per entry (the usual case: already private); opened only to change.
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISDIR(info.st_mode):
                    stack.append(Path(entry.path))
                    wanted = PRIVATE_DIR_MODE
                elif stat.S_ISREG(info.st_mode):
                    wanted = PRIVATE_FILE_MODE
                else:  # links (chmod would act on their target), sockets, fifos
                    continue
                if stat.S_IMODE(info.st_mode) != wanted:
                    changed += _narrow(Path(entry.path), wanted)
    return changed


def narrow_file(path: Path) -> bool:
    """Narrow one existing file to 0600 (a link is left alone); whether its mode changed.

    A file the node may read but not change (a ``node.toml`` owned by root) is left as it is:
    that is the operator's choice, and no reason to refuse to start.
    """
    try:
        return bool(_narrow(path, PRIVATE_FILE_MODE))
    except PermissionError:
        return False


def _narrow(path: Path, mode: int) -> int:
    # Opened without following a link and changed through the descriptor: a link swapped in
    # after the walk saw the name cannot redirect the change to a file elsewhere.
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:  # a link (ELOOP), removed meanwhile, or unreadable: not ours to change
        return 0
    try:
        info = os.fstat(fd)
        if stat.S_IMODE(info.st_mode) == mode:
            return 0
        if not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
            return 0  # sockets, fifos: not ours to change
        os.fchmod(fd, mode)
        return 1
    finally:
        os.close(fd)


def check_file_mode(text: object) -> str | None:
    """Why ``text`` is not an acceptable ``transfer.export_file_mode``, or None.

    Four octal digits such as ``"0640"`` (or three): the owner (the node) can read and write,
    nobody else can write, and nothing is executable, set-id or sticky.
    """
    if not isinstance(text, str) or not 3 <= len(text) <= 4 or any(c not in "01234567" for c in text):
        return 'must be an octal file mode such as "0640"'
    mode = int(text, 8)
    if mode & ~0o777:
        return "must not set the set-user-id, set-group-id or sticky bits"
    if mode & 0o600 != 0o600:
        return "must let the owner (the node) read and write"
    if mode & 0o111:
        return "must not make files executable"
    if mode & 0o002:
        return "must not let everyone write"
    return None


def parse_file_mode(text: str) -> int:
    """The mode ``text`` names (checked by :func:`check_file_mode`); ``ValueError`` if invalid."""
    problem = check_file_mode(text)
    if problem:
        raise ValueError(f"{text!r} {problem}")
    return int(text, 8)


def dir_mode_for(file_mode: int) -> int:
    """The mode of folders holding files of ``file_mode``: whoever may read may also enter."""
    return file_mode | ((file_mode & 0o444) >> 2)

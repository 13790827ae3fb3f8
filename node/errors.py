"""Exceptions of ``mftp.node``: each says whose fault it is.

=========================  =====================================  ==========  ================
class                      whose fault                            API answer  CLI exit code
=========================  =====================================  ==========  ================
:class:`NodeUsageError`    the operator's or caller's (bad         400         3 (config), or 5
                           config, bad arguments), or our own      (403 for    when the node
                           misuse of an internal interface         residency)  refused a request
:class:`NodeInputError`    a peer's, a PACS's or a file's          502         1
                           (malformed messages, bad studies)
:class:`StorageDamaged`    our own disk: a state file, the         500         3
                           vault, the blob store or the ledger
                           store does not read back (restore
                           from backup)
=========================  =====================================  ==========  ================

The API maps the ledger's errors the same way (:mod:`mftp.node.api.server`): its
``StoreError`` is our damaged disk (500), a ``LedgerUsageError`` asks for what the store does not
have (404), and any other ``LedgerError`` is a bad record or proof in the request (400).  Peers
only ever cause input errors, which are dropped and counted, never crash the node.
"""

from __future__ import annotations


class NodeError(Exception):
    """Base of every error raised by ``mftp.node``."""


class NodeUsageError(NodeError, ValueError):
    """The operator or caller misused the node (bad config, bad arguments)."""


class NodeInputError(NodeError):
    """A peer or API client sent something invalid."""


class StorageDamaged(NodeError):
    """Our own stored data does not read back: a damaged disk or a file edited by hand.

    Neither the caller's fault nor a peer's: the operator restores the file from backup.
    """


class ResidencyRefused(NodeUsageError):
    """A transfer to a member in a country this node's policy does not allow (data residency)."""


class ConfigError(NodeUsageError):
    """The configuration file is invalid; ``problems`` lists every error by key path."""

    def __init__(self, path: str, problems: list[str]) -> None:
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{path}: {len(problems)} configuration error(s):\n{lines}")
        self.problems = problems


def sentences(*parts: str) -> str:
    """``parts`` as sentences: each stripped, begun with a capital and ended with a full stop.

    Messages are assembled from parts (a summary, then reasons from files or peers); run
    together they read as one wrong sentence ("failed the source holds ..."), so every part is
    made a sentence of its own and they are joined by a space.  Empty parts are dropped.
    """
    out = []
    for part in parts:
        text = part.strip()
        if not text:
            continue
        text = text[0].upper() + text[1:]
        out.append(text if text[-1] in ".!?" else text + ".")
    return " ".join(out)

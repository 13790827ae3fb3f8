"""Exceptions of ``mftp.node``.

:class:`NodeUsageError` covers operator mistakes (a bad config key, a missing
file) and our own misuse; :class:`NodeInputError` a peer's or client's bad input.
"""

from __future__ import annotations


class NodeError(Exception):
    """Base of every error raised by ``mftp.node``."""


class NodeUsageError(NodeError, ValueError):
    """The operator or caller misused the node (bad config, bad arguments)."""


class NodeInputError(NodeError):
    """A peer or API client sent something invalid."""


class ResidencyRefused(NodeUsageError):
    """A transfer to a member in a country this node's policy does not allow (data residency)."""


class ConfigError(NodeUsageError):
    """The configuration file is invalid; ``problems`` lists every error by key path."""

    def __init__(self, path: str, problems: list[str]) -> None:
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{path}: {len(problems)} configuration error(s):\n{lines}")
        self.problems = problems

"""Structured logging for the node: one JSON object per line, or plain text.

Log lines carry event names and fields (``log.info("peer refused", extra={"fields":
{...}})``), never patient data or user identities: callers pass pseudonymous ids
only (record ids, node names, peer ids), and this module adds nothing else.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Final

_RESERVED: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None)))


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: time, level, logger, event and fields."""

    def __init__(self, node: str = "") -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        """The JSON line for ``record``."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        entry: dict[str, Any] = {
            "ts": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        if self.node:
            entry["node"] = self.node
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        for key, value in vars(record).items():
            if key not in _RESERVED and key not in ("fields", "message"):
                entry[key] = value
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


def setup_logging(level: str = "info", fmt: str = "json", node: str = "") -> None:
    """Configure the root logger to write to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(node))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {node} %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # libp2p detaches its logger and its warnings would reach stderr unformatted; its
    # routine dial failures while peers start are noise, so keep errors only, as JSON.
    libp2p = logging.getLogger("libp2p")
    libp2p.handlers[:] = [handler]
    libp2p.setLevel(logging.ERROR)

"""Structured logs: one JSON object a line on stderr.

Call sites pass facts as ``extra={...}``: ids, addresses, kinds, reasons,
counts. Never message content, tokens or secrets; events' and installations'
reprs hide content and credentials in case one slips into a log anyway.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from typing import TextIO

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                payload[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            payload["error_type"] = type(record.exc_info[1]).__name__
        return json.dumps(payload, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in record.__dict__.items()
                          if k not in _STANDARD and not k.startswith("_"))
        level = record.levelname.lower()
        return f"{level:7} {record.name}: {record.getMessage()} {extras}".rstrip()


def configure_logging(level: str = "info", fmt: str = "json", stream: TextIO | None = None,
                      *, quiet: Mapping[str, int] | None = None) -> None:
    """Send every ``interlink.*`` log to ``stream`` (stderr) in the chosen format.

    ``quiet``: library loggers (by name) that may quote content or secrets, with the
    level below which they are dropped; each adapter spec names its own libraries."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("interlink")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    quiet_libraries(quiet or {})


def quiet_libraries(loggers: Mapping[str, int]) -> None:
    """Keep ``loggers`` out of Interlink's output below their given level."""
    for name, level in loggers.items():
        library = logging.getLogger(name)
        library.setLevel(level)
        library.propagate = False
        if not library.handlers:
            library.addHandler(logging.NullHandler())

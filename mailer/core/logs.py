"""One structured line per event on stderr (DESIGN §5): `key=value` text by default,
one JSON object per line with MAILER_LOG_FORMAT=json. Log calls pass row ids and
counts, never addresses, passwords or keys."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime


class _Json(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document = {"time": datetime.fromtimestamp(record.created, UTC).isoformat(
                        timespec="milliseconds").replace("+00:00", "Z"),
                    "level": record.levelname.lower(), "logger": record.name,
                    "message": record.getMessage()}
        fields = getattr(record, "fields", None)  # log.info(..., extra={"fields": {...}})
        if isinstance(fields, dict):
            document.update({key: value for key, value in fields.items()
                             if key not in document})
        if record.exc_info:
            document["error"] = self.formatException(record.exc_info)
        return json.dumps(document, ensure_ascii=False)


def configure(log_format: str, level: int = logging.INFO) -> None:
    """Send mailer's log lines to stderr in the chosen format (once per process)."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(_Json())
    else:
        handler.setFormatter(logging.Formatter(
            "time=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"))
    root = logging.getLogger("mailer")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False

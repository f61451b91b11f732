"""Log setup: text or JSON lines, and third-party loggers that could leak kept quiet."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

# httpx logs every request line at INFO, query string included: a Microshare URL carries
# the password there. These loggers never go below WARNING.
_QUIET = ("httpx", "httpcore", "urllib3", "kubernetes", "aiohttp.access")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(log_format: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    # kopf reports every successful handler call at INFO: one line per watch event.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)

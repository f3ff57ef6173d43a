"""One line per event on stdout: ``<iso time> <node> <level> <event> key=value ...``."""

from __future__ import annotations

import logging
import sys
import time

LOGGER_NAME = "lab_backend"


class _NodeFormatter(logging.Formatter):
    def __init__(self, node_id: str):
        super().__init__()
        self.node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = (f"{stamp}.{int(record.msecs):03d}Z {self.node_id} {record.levelname.lower()} "
                f"{record.getMessage()}")
        if record.exc_info:
            # Keep one event on one line: the exception's type and message, no traceback.
            exc = record.exc_info[1]
            line += f" error={type(exc).__name__}:{_quote(str(exc))}"
        return line


def _quote(value: object) -> str:
    text = str(value).replace("\n", " ")
    return f'"{text}"' if (" " in text or not text) else text


def configure(node_id: str, level: int = logging.INFO) -> None:
    """Send this package's and uvicorn's records to stdout, one line each, tagged with the node."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_NodeFormatter(node_id))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # A pool retrying a dead database would otherwise log a line per attempt.
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)


def event(name: str, /, level: int = logging.INFO, **fields: object) -> None:
    """Log one event: ``name key=value ...`` (values with spaces are quoted)."""
    parts = [name] + [f"{key}={_quote(value)}" for key, value in fields.items()]
    logging.getLogger(LOGGER_NAME).log(level, " ".join(parts))

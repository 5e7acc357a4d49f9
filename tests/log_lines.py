"""Every log line of this process kept in memory, for tests of nodes running in it: a
line of level error or above (an unhandled exception, ``handler_failed``) is a fault of
the node under test. Users: tests/integration/test_fuzz_live.py,
tests/integration/test_model_live.py.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog


class LogLines:
    """Every log line of the process, structlog's and the stdlib's, kept for the checks:
    a line of level error or above is a fault of the node under test."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []
        self._handler = _Keep(self.lines)
        self._config = structlog.get_config()

    def start(self) -> None:
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.stdlib.add_log_level,
                self._keep,
            ],
            logger_factory=structlog.PrintLoggerFactory(),
            cache_logger_on_first_use=False,
        )
        logging.getLogger().addHandler(self._handler)

    def stop(self) -> None:
        logging.getLogger().removeHandler(self._handler)
        structlog.configure(**self._config)

    def _keep(self, _logger: Any, method: str, event_dict: Any) -> Any:
        line = dict(event_dict)
        if method == "exception":
            line["level"] = "error"
        self.lines.append(line)
        raise structlog.DropEvent

    def errors(self, since: int = 0) -> list[dict[str, Any]]:
        return [
            line
            for line in self.lines[since:]
            if line.get("level") in ("error", "critical") or line.get("exc_info")
        ]


class _Keep(logging.Handler):
    """Stdlib records (asyncio, aiohttp, loggers configured by another test) as lines."""

    def __init__(self, lines: list[dict[str, Any]]) -> None:
        super().__init__(logging.WARNING)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        message = record.msg if isinstance(record.msg, dict) else record.getMessage()
        self.lines.append(
            {
                "event": message,
                "logger": record.name,
                "level": record.levelname.lower(),
                "exc_info": bool(record.exc_info),
            }
        )

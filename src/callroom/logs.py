"""Logging: structlog JSON lines (or a console renderer), one format for every line.

With ``LOG_FORMAT=json`` every line the process writes is one JSON object (SPEC §4):
stdlib loggers (aiohttp, asyncio, alembic) are routed through the same processors.
Per-connection context (``conn_id``, ``room``, ``kind``, ``client_id``) is bound with
structlog's contextvars in the connection task (DESIGN "Logs and metrics").
A token never reaches a log line: access lines carry the path without its query string,
and ``redact_tokens`` scrubs any ``token=`` query value and bearer header that a
third-party message might carry (SPEC §1).

Every line carries ``node`` and ``version`` (SPEC §9): ``node`` is ``NODE_ID``, 12 random
hex digits drawn at each process start (the ``listening`` line names the host and the
process id it belongs to); it starts every connection id of the process, so connection
ids are unique across nodes, and it is the node's id in Redis (``CLIENT LIST`` names).
"""

from __future__ import annotations

import logging
import re
import secrets
import sys
from typing import Any

import structlog
from structlog.typing import EventDict, Processor

from callroom import __version__

NODE_ID = secrets.token_hex(6)

_TOKEN_RE = re.compile(
    r"(token=)[^&\s\"']+|(Bearer\s+)[A-Za-z0-9\-_\.=]+|eyJ[A-Za-z0-9\-_]+\.[A-Za-z0-9\-_]+\.[A-Za-z0-9\-_]*"
)


def _scrub(text: str) -> str:
    return _TOKEN_RE.sub(lambda m: (m.group(1) or m.group(2) or "") + "[redacted]", text)


def redact_tokens(_logger: Any, _name: str, event_dict: EventDict) -> EventDict:
    """Processor: replace anything that looks like a JWT or a token parameter."""
    for key, value in event_dict.items():
        if isinstance(value, str) and ("token" in value or "Bearer" in value or "eyJ" in value):
            event_dict[key] = _scrub(value)
    return event_dict


def add_node(_logger: Any, _name: str, event_dict: EventDict) -> EventDict:
    """Processor: the node id and the version on every line (SPEC §9)."""
    event_dict.setdefault("node", NODE_ID)
    event_dict.setdefault("version", __version__)
    return event_dict


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Configure structlog and the stdlib root logger to write to stderr."""
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_node,
        structlog.processors.format_exc_info,
        redact_tokens,
    ]
    renderer: Processor
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    else:
        renderer = structlog.processors.JSONRenderer()

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's access log would carry the query string, and so the token (SPEC §1): the
    # node writes its own access lines (``callroom.server.access``), without it.
    logging.getLogger("aiohttp.access").disabled = True
    # Chatty libraries: one line per JWKS request, per alembic plugin.
    for name in ("httpx", "httpcore", "alembic.runtime.plugins"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    logging.captureWarnings(True)

"""The live server against its own OpenAPI document (schemathesis, SPEC §4).

A dev-mode server runs as a child process; schemathesis generates requests for every
operation of ``openapi.yaml`` (as an admin, so the API routes answer) and checks each
response against the document: status codes, content types, bodies, no server errors.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from callroom.server.http_api import openapi_document

schema = schemathesis.openapi.from_dict(openapi_document())
# Requests the document allows (the server is lenient with extra query parameters, which
# OpenAPI does not forbid; refusals of bad values are tested in test_rooms_api.py).
schema.config.generation.update(modes=[schemathesis.GenerationMode.POSITIVE])


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(base URL, admin token) of a dev-mode server in a child process."""
    workdir = tmp_path_factory.mktemp("openapi")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTH", "LOG_"))}
    env.update(DATABASE_URL=f"sqlite:///{Path(workdir) / 'chat.db'}", LOG_FORMAT="json")
    proc = subprocess.Popen(
        [sys.executable, "-m", "callroom", "serve", "--dev", "--port", "0"],
        cwd=workdir,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    # The server logs a line per request: its stderr is read for as long as it runs, or
    # the pipe fills (64 KiB) and the server blocks writing its access lines.
    listening: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=read_logs, args=(proc, listening), daemon=True)
    reader.start()
    url = listening.get(timeout=30)
    assert url, "server did not start"
    token = httpx.post(f"{url}/dev/token", json={"sub": "root", "roles": ["admin"]}).json()["token"]
    yield url, token
    proc.terminate()
    assert proc.wait(timeout=10) == 0
    reader.join(timeout=10)


def read_logs(proc: subprocess.Popen[str], listening: queue.Queue[str]) -> None:
    """Read the server's log lines to the end; hand over its URL once it listens."""
    assert proc.stderr is not None
    url = ""
    with proc.stderr:
        for line in proc.stderr:
            if not url and '"listening"' in line:
                url = json.loads(line)["url"]
                listening.put(url)
    if not url:
        listening.put("")  # it ended before listening


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_documented(
    case: schemathesis.Case[Any], live_server: tuple[str, str]
) -> None:
    url, token = live_server
    case.call_and_validate(base_url=url, headers={"Authorization": f"Bearer {token}"})

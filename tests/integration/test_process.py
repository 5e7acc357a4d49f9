"""The real process: CLI start-up, config errors (exit 2), dev mode, SIGTERM, JSON logs.

These run `python -m callroom` as a child process, the way an operator does.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from callroom_testing import AUDIENCE, ISSUER, JwksServer, TokenFactory, open_client

PYTHON = sys.executable


class ServerProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.url = ""

    async def wait_listening(self, timeout: float = 20) -> None:
        assert self.proc.stderr is not None
        deadline = time.monotonic() + timeout
        while not self.url:
            raw = await asyncio.wait_for(self.proc.stderr.readline(), deadline - time.monotonic())
            if not raw:
                raise AssertionError("server exited: " + "".join(self.lines))
            line = raw.decode()
            self.lines.append(line)
            if '"listening"' in line:
                self.url = json.loads(line)["url"]

    async def finish(self, timeout: float) -> int:
        assert self.proc.stderr is not None
        rest = await asyncio.wait_for(self.proc.stderr.read(), timeout)
        self.lines.extend(rest.decode().splitlines(keepends=True))
        return await asyncio.wait_for(self.proc.wait(), timeout)


def base_env(jwks_server: JwksServer, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTH", "LOG_"))}
    env.update(
        AUTH_ISSUER=ISSUER,
        AUTH0_AUDIENCE=AUDIENCE,
        AUTH_JWKS_URL=jwks_server.url,
        DATABASE_URL=f"sqlite:///{tmp_path}/chat.db",
        LOG_FORMAT="json",
        SHUTDOWN_GRACE_SECONDS="3",
    )
    env.update(extra)
    return env


@pytest.fixture
async def spawn(tmp_path: Path) -> AsyncIterator[Any]:
    procs: list[asyncio.subprocess.Process] = []

    async def run(*args: str, env: dict[str, str]) -> ServerProcess:
        proc = await asyncio.create_subprocess_exec(
            PYTHON,
            "-m",
            "callroom",
            *args,
            env=env,
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        procs.append(proc)
        return ServerProcess(proc)

    yield run
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_sigterm_closes_members_with_1001_and_exits_in_grace_logging_json_without_tokens(
    spawn: Any, jwks_server: JwksServer, make_token: TokenFactory, tmp_path: Path
) -> None:
    server = await spawn(
        "serve", "--host", "127.0.0.1", "--port", "0", env=base_env(jwks_server, tmp_path)
    )
    await server.wait_listening()
    ws_base = server.url.replace("http://", "ws://")
    token = make_token("alice", "Alice")
    client = await open_client(f"{ws_base}/ws/zoom/r1?token={token}")
    assert (await client.next())["event"] == "room_state"
    await client.send("bogus_event")
    assert (await client.expect("error"))["code"] == "unknown_event"
    # A refused token must not be logged either.
    bad = make_token("mallory", ttl=-100)
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{server.url}/ws/zoom/r1?token={bad}") as resp,
    ):
        assert resp.status == 401

    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert await client.closed_with() == 1001
    code = await server.finish(timeout=10)
    assert code == 0
    assert time.monotonic() - started < 3 + 1.5  # SHUTDOWN_GRACE_SECONDS + process exit

    output = "".join(server.lines)
    assert token not in output
    assert bad not in output
    assert token.split(".")[1] not in output  # not even the claims part
    stdout = (await server.proc.stdout.read()).decode() if server.proc.stdout else ""
    for line in (output + stdout).splitlines():
        if line.strip():
            json.loads(line)  # LOG_FORMAT=json: every line is one JSON object (SPEC §4)
    events = [json.loads(line)["event"] for line in output.splitlines() if line.strip()]
    assert "shutdown_complete" in events


@pytest.mark.parametrize(
    ("env_extra", "variable"),
    [
        ({"AUTH_ALGORITHMS": "RS256,HS256"}, "AUTH_ALGORITHMS"),
        ({"AUTH_ALGORITHMS": "none"}, "AUTH_ALGORITHMS"),
        ({"PORT": "eighty"}, "PORT"),
        ({"MAX_ROOM_SIZE": "0"}, "MAX_ROOM_SIZE"),
        ({"ALLOWED_ORIGINS": "not an origin"}, "ALLOWED_ORIGINS"),
        ({"AUTH_ISSUER": "", "AUTH0_DOMAIN": ""}, "AUTH_ISSUER"),
    ],
)
async def test_bad_setting_exits_2_naming_the_variable(
    spawn: Any, jwks_server: JwksServer, tmp_path: Path, env_extra: dict[str, str], variable: str
) -> None:
    env = base_env(jwks_server, tmp_path, **env_extra)
    server = await spawn("serve", env=env)
    code = await server.finish(timeout=20)
    assert code == 2
    message = "".join(server.lines)
    assert variable in message
    assert len([line for line in server.lines if line.strip()]) == 1


async def test_dev_mode_mints_and_verifies_its_own_tokens(
    spawn: Any, jwks_server: JwksServer, tmp_path: Path
) -> None:
    env = base_env(jwks_server, tmp_path)
    for key in ("AUTH_ISSUER", "AUTH0_AUDIENCE", "AUTH_JWKS_URL"):
        env.pop(key)
    server = await spawn("serve", "--dev", "--port", "0", env=env)
    await server.wait_listening()
    assert server.url.startswith("http://127.0.0.1:")
    ws_base = server.url.replace("http://", "ws://")
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{server.url}/dev/token", json={"sub": "alice", "name": "Alice"}
        ) as resp:
            assert resp.status == 200
            token = (await resp.json())["token"]
        async with http.get(f"{server.url}/dev/jwks.json") as resp:
            assert (await resp.json())["keys"][0]["kty"] == "RSA"
    host = await open_client(f"{ws_base}/ws/zoom/dev-room?token={token}")
    assert (await host.next())["payload"]["role"] == "host"

    # `callroom token` mints with the same key file, so the server accepts it.
    minted = await asyncio.create_subprocess_exec(
        PYTHON,
        "-m",
        "callroom",
        "token",
        "--sub",
        "bob",
        "--name",
        "Bob",
        "--role",
        "host",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await minted.communicate()
    assert minted.returncode == 0
    bob = await open_client(f"{ws_base}/ws/zoom/dev-room?token={out.decode().strip()}")
    assert (await bob.next())["payload"]["role"] == "host"  # token host joins as host
    await bob.close()
    await host.close()
    server.proc.send_signal(signal.SIGTERM)
    assert await server.finish(timeout=10) == 0
    assert any("DEV MODE" in line for line in server.lines)


async def test_dev_mode_refuses_a_public_host(
    spawn: Any, jwks_server: JwksServer, tmp_path: Path
) -> None:
    server = await spawn("serve", "--dev", "--host", "0.0.0.0", env=base_env(jwks_server, tmp_path))
    assert await server.finish(timeout=20) == 2
    assert "HOST" in "".join(server.lines)


async def test_history_survives_a_process_restart_and_sqlite_backup_restores(
    spawn: Any, jwks_server: JwksServer, make_token: TokenFactory, tmp_path: Path
) -> None:
    """SPEC §8 and issue 4: stop the process, start a new one, history intact;
    `callroom db backup` / `db restore` round trip on the SQLite store."""
    env = base_env(jwks_server, tmp_path)
    token = make_token("alice", "Alice")

    async def chat_round(*contents: str) -> list[str]:
        server = await spawn("serve", "--host", "127.0.0.1", "--port", "0", env=env)
        await server.wait_listening()
        client = await open_client(server.url.replace("http", "ws") + f"/ws/chat/r?token={token}")
        await client.expect("room_state")
        for content in contents:
            await client.send("add_chat", {"chatContent": content})
            await client.expect("add_chat")
        await client.send("get_recent_chats", {"limit": 100})
        history = [m["chatContent"] for m in (await client.expect("get_recent_chats"))["messages"]]
        server.proc.send_signal(signal.SIGTERM)
        assert await server.finish(timeout=10) == 0
        return history

    async def cli(*args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            PYTHON,
            "-m",
            "callroom",
            "db",
            *args,
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, out.decode()

    assert await chat_round("one", "two") == ["one", "two"]
    assert (await cli("backup", str(tmp_path / "backup.db")))[0] == 0
    assert await chat_round("three") == ["one", "two", "three"]  # survived the restart
    assert (await cli("restore", str(tmp_path / "backup.db")))[0] == 0
    assert await chat_round() == ["one", "two"]  # the backup's content, exactly
    code, out = await cli("restore", str(tmp_path / "missing.db"))
    assert code == 2
    assert len(out.strip().splitlines()) == 1
    assert await cli("upgrade") == (0, "chat store schema is up to date\n")
    code, out = await cli("check")  # alembic's own line comes first
    assert code == 0
    assert out.endswith("models match the migrations\n")

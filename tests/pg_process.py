"""A PostgreSQL cluster of a test's own, as real processes (issue 21: "a PostgreSQL
cluster the tests created with ``initdb`` on a free port, killed and restarted").

``initdb`` makes a cluster in a directory of its own (trust authentication, user
``postgres``); ``postgres`` serves it on a free 127.0.0.1 port. ``kill9`` sends SIGKILL
to the postmaster (its backends notice its death and exit on their own, as after a real
``kill -9``); ``restart`` starts a new postmaster on the same data directory and port,
which replays the write-ahead log (crash recovery) before it answers. No step waits a
fixed time: a start polls until this very postmaster answers ``SELECT 1`` (bounded).

PostgreSQL refuses to run as root: when the tests run as root, the cluster belongs to
the ``postgres`` user and every program runs as that user (``setpriv``, which execs, so
the pid the test holds is the postmaster's own).

    async with PostgresProcess() as pg:
        url = pg.url()          # postgresql://postgres@127.0.0.1:<port>/postgres
        await pg.kill9()        # SIGKILL of the postmaster, reaped
        await pg.restart()      # same data directory, same port, recovered
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import signal
import tempfile
import time
from pathlib import Path
from types import TracebackType

import reaping
from ports import free_port

START_SECONDS = 30.0  # until a started postmaster answers (crash recovery included)


def bin_dir() -> Path:
    """The newest installed PostgreSQL's programs (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parts[-3]),
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    assert initdb is not None, "no initdb: install PostgreSQL's server package"
    return Path(initdb).parent


class PostgresFailed(RuntimeError):
    """The cluster could not be made or started (its log's tail says why)."""


class PostgresProcess:
    """One postmaster at a time on one data directory, always on the same port."""

    def __init__(self) -> None:
        self.bin = bin_dir()
        self.as_postgres = os.geteuid() == 0
        self.directory = Path(tempfile.mkdtemp(prefix="callroom-pg-"))
        self.data = self.directory / "data"
        self.port = 0
        self.starts = 0
        self.process: asyncio.subprocess.Process | None = None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def _command(self, program: str, *args: str) -> list[str]:
        command = [str(self.bin / program), *args]
        if self.as_postgres:
            return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", *command]
        return command

    async def start(self) -> None:
        """initdb, then a postmaster on a free port."""
        if self.as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.directory, user.pw_uid, user.pw_gid)
        init = await asyncio.create_subprocess_exec(
            *self._command(
                "initdb",
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await init.communicate()
        if init.returncode != 0:
            raise PostgresFailed(f"initdb failed: {output.decode()[-800:]}")
        self.port = free_port()
        await self._spawn()

    async def kill9(self) -> None:
        """SIGKILL to the postmaster, as ``kill -9`` does; returns once it is reaped."""
        process = self.process
        assert process is not None, "never started"
        await reaping.kill9(process)

    async def restart(self) -> None:
        """A new postmaster on the same data directory and port. Until the killed one's
        backends are gone it refuses to start (its shared memory is still in use): try
        again until it starts, within ``START_SECONDS``."""
        assert not self.running, "kill9() or stop() it first"
        await self._spawn()

    async def stop(self) -> None:
        """Fast shutdown (SIGINT), SIGKILL if it does not end; the directory removed."""
        process = self.process
        if process is not None:
            await reaping.end(process, signal.SIGINT)
        shutil.rmtree(self.directory, ignore_errors=True)

    async def __aenter__(self) -> PostgresProcess:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _spawn(self) -> None:
        deadline = time.monotonic() + START_SECONDS
        while True:
            self.starts += 1
            log = self.directory / f"postgres-{self.starts}.log"
            with log.open("wb") as out:
                self.process = await asyncio.create_subprocess_exec(
                    *self._command(
                        "postgres",
                        "-D",
                        str(self.data),
                        "-p",
                        str(self.port),
                        "-k",
                        str(self.directory),
                        "-c",
                        "listen_addresses=127.0.0.1",
                    ),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                )
            if await self._answers(deadline):
                return
            tail = log.read_text(errors="replace")[-800:]
            if time.monotonic() > deadline:
                await self.stop()
                raise PostgresFailed(f"postgres on port {self.port} did not start: {tail}")
            # The killed postmaster's backends still hold its shared memory: again.

    async def _answers(self, deadline: float) -> bool:
        """Whether this postmaster answers before it exits (False: it exited)."""
        import asyncpg  # type: ignore[import-untyped]

        process = self.process
        assert process is not None
        while time.monotonic() < deadline:
            if process.returncode is not None:
                return False
            with contextlib.suppress(OSError, asyncpg.PostgresError, TimeoutError):
                connection = await asyncpg.connect(self.url(), timeout=1)
                try:
                    pid_file = (self.data / "postmaster.pid").read_text().split("\n")[0]
                    await connection.fetchval("SELECT 1")
                finally:
                    await connection.close()
                if pid_file.strip() == str(process.pid):
                    return True
            await asyncio.sleep(0.05)  # polling a state with a deadline, not a wait for time
        return False

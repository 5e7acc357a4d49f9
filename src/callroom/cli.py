"""The ``callroom`` command: ``serve``, ``token``, ``config``, ``connect``, ``db``.

A bad setting exits with code 2 and one line naming the variable (SPEC §6); so does any
other start-up failure (a port in use, an address that is not this machine's; SPEC §9).
The benchmark is not part of the product: it is ``callroom-bench``, a project of its own
in bench/ (docs/performance.md), and nothing here imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import structlog
import typer

from callroom import __version__
from callroom.config import Settings, load_settings
from callroom.errors import CallroomError, ConfigError

app = typer.Typer(
    name="callroom",
    help="Real-time session server for video meetings.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
db_app = typer.Typer(help="Chat history store: migrations, backup, restore.", no_args_is_help=True)
app.add_typer(db_app, name="db")

DEFAULT_DEV_KEY = Path(".callroom-dev-key.pem")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def fail(message: str) -> NoReturn:
    """One line on stderr and exit code 2: how every start-up failure ends (SPEC §6, §9)."""
    typer.echo(f"callroom: {message}", err=True)
    raise typer.Exit(2)


def _settings(env_file: str | None, **overrides: Any) -> Settings:
    try:
        return load_settings(env_file, **{k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        fail(f"configuration error: {exc}")


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"callroom {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    _version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Real-time session server for video meetings."""


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (PORT).")] = None,
    dev: Annotated[
        bool, typer.Option("--dev", help="Dev mode: own RSA key, /dev/token, 127.0.0.1 only.")
    ] = False,
    log_format: Annotated[str | None, typer.Option(help="json or console (LOG_FORMAT).")] = None,
    log_level: Annotated[str | None, typer.Option(help="LOG_LEVEL.")] = None,
    env_file: Annotated[
        str, typer.Option(help="Settings file read besides the environment.")
    ] = ".env",
    dev_key_file: Annotated[
        Path, typer.Option(help="Dev mode RSA key file, shared with `callroom token`.")
    ] = DEFAULT_DEV_KEY,
) -> None:
    """Start the server."""
    if dev and host is not None and host not in LOOPBACK:
        typer.echo("callroom: configuration error: HOST: --dev binds 127.0.0.1 only", err=True)
        raise typer.Exit(2)
    settings = _settings(
        env_file,
        HOST="127.0.0.1" if dev else host,
        PORT=port,
        LOG_FORMAT=log_format,
        LOG_LEVEL=log_level.upper() if log_level else None,
        DEV_MODE=True if dev else None,
    )
    from callroom.logs import configure_logging

    configure_logging(settings.LOG_LEVEL, settings.LOG_FORMAT)
    import uvloop

    code = uvloop.run(_serve(settings, dev_key_file))
    if code:
        raise typer.Exit(code)


# A driver's message may quote a URL: its password never reaches the log.
_URL_PASSWORD_RE = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def startup_cause(exc: Exception) -> str:
    """One line naming why the node could not start, without a traceback."""
    text = str(exc).strip()
    if not isinstance(exc, CallroomError | ValueError) or not text:
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    line = text.splitlines()[0]
    return _URL_PASSWORD_RE.sub(r"\1***@", line)


async def _serve(settings: Settings, dev_key_file: Path) -> int:
    """Serve until SIGTERM/SIGINT; 2 when the node cannot start (logged as one line)."""
    from callroom.server.node import Node

    log = structlog.get_logger("callroom")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    node: Node | None = None
    try:
        node = Node(settings, dev_key_file=dev_key_file)
        await node.start()
    except Exception as exc:  # a bind, a key file, a driver: one line, exit 2 (SPEC §9)
        log.critical("cannot_start", cause=startup_cause(exc))
        if node is not None and node.port:  # failed after binding: release what started
            with contextlib.suppress(Exception):
                await node.stop()
        return 2
    if settings.DEV_MODE:
        log.warning(
            "DEV MODE: tokens are minted by this server, do not expose it",
            url=node.url,
            bound_to="127.0.0.1 only",
            get_a_token=(
                f"curl -s -X POST {node.url}/dev/token -d "
                """'{"sub": "alice", "name": "Alice"}'  or  callroom token --sub alice"""
            ),
            connect=(f"callroom connect ws://127.0.0.1:{node.port}/ws/zoom/my-room --token TOKEN"),
        )
    log.info("ready_to_serve", url=node.url)
    await stop.wait()
    log.info("signal_received", action="shutdown")
    await node.stop()
    return 0


@app.command()
def token(
    sub: Annotated[str, typer.Option(help="The user id (token sub).")],
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    role: Annotated[
        list[str] | None, typer.Option(help="Token role, repeatable: host, moderator, admin.")
    ] = None,
    ttl: Annotated[int, typer.Option(min=1, help="Lifetime in seconds.")] = 3600,
    key_file: Annotated[
        Path, typer.Option(help="The dev key of `callroom serve --dev` (its --dev-key-file).")
    ] = DEFAULT_DEV_KEY,
    new_key: Annotated[
        bool,
        typer.Option(
            "--new-key", help="Create the key file when it does not exist (serve --dev uses it)."
        ),
    ] = False,
    env_file: Annotated[str, typer.Option(help="Settings file (claim names).")] = ".env",
) -> None:
    """Mint a dev-mode token, verified by `callroom serve --dev` with the same key file.

    Only the token goes to stdout (`TOKEN=$(callroom token --sub alice)`); logs go to
    stderr. Without --new-key a missing key file is an error, not a new key: a key the
    running server does not have would sign tokens it refuses.
    """
    from callroom.auth.dev import DevKeys
    from callroom.logs import configure_logging
    from callroom.server.http_api import mint_dev_token
    from callroom.server.node import dev_settings

    settings = dev_settings(_settings(env_file, DEV_MODE=True))
    configure_logging(settings.LOG_LEVEL, settings.LOG_FORMAT)  # stderr: stdout is the token
    if settings.AUTH_JWKS_URL:
        fail(
            "AUTH_JWKS_URL is set: the server verifies tokens with those keys, "
            "never with a dev key; get a token from the identity provider"
        )
    try:
        keys = DevKeys.load_or_create(key_file) if new_key else DevKeys.load(key_file)
    except FileNotFoundError:
        fail(
            f"no dev key at {key_file}: run this where `callroom serve --dev` runs, "
            "pass its key with --key-file, or --new-key to create one"
        )
    except (OSError, ValueError) as exc:
        fail(f"dev key: {exc}")
    typer.echo(mint_dev_token(settings, keys, sub, name, role or [], ttl))


@app.command("config")
def show_config(
    dev: Annotated[
        bool, typer.Option("--dev", help="As `callroom serve --dev` sees them.")
    ] = False,
    env_file: Annotated[
        str, typer.Option(help="Settings file read besides the environment.")
    ] = ".env",
) -> None:
    """Print the effective settings (environment, .env, defaults), secrets masked."""
    from callroom.config import effective_settings

    settings = _settings(env_file, DEV_MODE=True if dev else None)
    if dev:
        from callroom.server.node import dev_settings

        settings = dev_settings(settings)
        typer.echo("# --dev: tokens are checked with this server's own key (/dev/jwks.json)")
    for name, value in effective_settings(settings):
        typer.echo(f"{name}={value}")


@app.command()
def connect(
    url: Annotated[str, typer.Argument(help="ws://HOST:PORT/ws/{kind}/{roomId}")],
    token_value: Annotated[
        str | None,
        typer.Option("--token", envvar="CALLROOM_TOKEN", help="The JWT (or CALLROOM_TOKEN)."),
    ] = None,
) -> None:
    """Join a room: frames received go to stdout, lines typed are sent (docs/protocol.md).

    A line is a frame `{"event": ..., "payload": {...}}` or `EVENT {PAYLOAD}`; the end of
    input leaves the room (close 1000). Exit 1 when refused or closed with another code.
    """
    from callroom.client import run

    raise typer.Exit(run(url, token_value))


def _store_settings(env_file: str) -> Settings:
    """The ``db`` commands need only ``DATABASE_URL``; token settings are not checked."""
    return _settings(env_file, DEV_MODE=True)


def _store_command(action: Callable[[], object], done: str) -> None:
    """Run a blocking store command; any failure is one line on stderr and exit 2."""
    try:
        action()
    except Exception as exc:  # a driver, alembic or file error: say it, do not trace it
        typer.echo(f"callroom: {type(exc).__name__}: {exc}".splitlines()[0], err=True)
        raise typer.Exit(2) from None
    typer.echo(done)


@db_app.command("upgrade")
def db_upgrade(env_file: str = ".env") -> None:
    """Run the chat store migrations up to the newest."""
    from callroom.chat.admin import upgrade

    settings = _store_settings(env_file)
    _store_command(lambda: upgrade(settings.DATABASE_URL), "chat store schema is up to date")


@db_app.command("check")
def db_check(env_file: str = ".env") -> None:
    """Fail when the models and the migrations differ."""
    from callroom.chat.admin import check_models

    settings = _store_settings(env_file)
    _store_command(lambda: check_models(settings.DATABASE_URL), "models match the migrations")


@db_app.command("backup")
def db_backup(path: Path, env_file: str = ".env") -> None:
    """Consistent online copy of the SQLite chat store to PATH."""
    from callroom.chat.admin import backup_sqlite

    settings = _store_settings(env_file)
    _store_command(lambda: backup_sqlite(settings.DATABASE_URL, path), f"backed up to {path}")


@db_app.command("restore")
def db_restore(path: Path, env_file: str = ".env") -> None:
    """Restore the SQLite chat store from PATH (stop the server first)."""
    from callroom.chat.admin import restore_sqlite

    settings = _store_settings(env_file)
    _store_command(lambda: restore_sqlite(settings.DATABASE_URL, path), f"restored from {path}")


def main() -> None:
    app(prog_name="callroom")  # the same name under `python -m callroom`


if __name__ == "__main__":  # pragma: no cover
    main()

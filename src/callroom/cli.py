"""The ``callroom`` command: ``serve``, ``token``, ``db`` and ``bench`` (SPEC §5, §6).

A bad setting exits with code 2 and one line naming the variable (SPEC §6).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import structlog
import typer

from callroom.bench.cli import bench_app
from callroom.config import Settings, load_settings
from callroom.errors import ConfigError

app = typer.Typer(
    name="callroom",
    help="Real-time session server for video meetings.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Chat history store: migrations, backup, restore.", no_args_is_help=True)
app.add_typer(db_app, name="db")

DEFAULT_DEV_KEY = Path(".callroom-dev-key.pem")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _settings(env_file: str | None, **overrides: Any) -> Settings:
    try:
        return load_settings(env_file, **{k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        typer.echo(f"callroom: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None


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

    uvloop.run(_serve(settings, dev_key_file))


async def _serve(settings: Settings, dev_key_file: Path) -> None:
    from callroom.server.node import Node

    log = structlog.get_logger("callroom")
    node = Node(settings, dev_key_file=dev_key_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await node.start()
    if settings.DEV_MODE:
        log.warning(
            "DEV MODE: tokens are minted by this server, do not expose it",
            url=node.url,
            bound_to="127.0.0.1 only",
            get_a_token=(
                f"curl -s -X POST {node.url}/dev/token -d "
                """'{"sub": "alice", "name": "Alice"}'  or  callroom token --sub alice"""
            ),
            connect=f"ws://127.0.0.1:{node.port}/ws/zoom/my-room with the token as query parameter",
        )
    log.info("ready_to_serve", url=node.url)
    await stop.wait()
    log.info("signal_received", action="shutdown")
    await node.stop()


@app.command()
def token(
    sub: Annotated[str, typer.Option(help="The user id (token sub).")],
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    role: Annotated[
        list[str] | None, typer.Option(help="Token role, repeatable: host, moderator, admin.")
    ] = None,
    ttl: Annotated[int, typer.Option(help="Lifetime in seconds.")] = 3600,
    key_file: Annotated[Path, typer.Option(help="Dev mode RSA key file.")] = DEFAULT_DEV_KEY,
    env_file: Annotated[str, typer.Option(help="Settings file (claim names).")] = ".env",
) -> None:
    """Mint a dev-mode token (verified by `callroom serve --dev` with the same key file)."""
    from callroom.auth.dev import DevKeys
    from callroom.server.http_api import mint_dev_token
    from callroom.server.node import dev_settings

    settings = dev_settings(_settings(env_file, DEV_MODE=True))
    keys = DevKeys.load_or_create(key_file)
    typer.echo(mint_dev_token(settings, keys, sub, name, role or [], ttl))


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


app.add_typer(bench_app, name="bench")


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()

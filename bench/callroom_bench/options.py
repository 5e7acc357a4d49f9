"""The options the ``callroom-bench`` scenario commands share (cli.py), as typer types,
and the choices some of them take."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from callroom_bench.client import Protocol
from callroom_bench.servers import ServerKind


class Workload(StrEnum):
    CHAT = "chat"
    SIGNAL = "signal"


class Comparable(StrEnum):
    JOIN = "join"
    STORM = "storm"
    CHAT = "chat"
    BIGROOM = "bigroom"
    SIGNAL = "signal"
    IDLE = "idle"


Url = Annotated[
    list[str] | None,
    typer.Option(
        "--url",
        help="Base URL of a running server, e.g. ws://127.0.0.1:8080. Repeat it to spread "
        "every room's members round-robin over nodes. Without it the bench spawns a server.",
    ),
]
Spawn = Annotated[ServerKind, typer.Option(help="Server to start when no --url is given.")]
ProtocolOpt = Annotated[
    Protocol,
    typer.Option(help="Wire protocol of --url: callroom (JWT), raw (bench peers), socketio."),
]
ServerPid = Annotated[
    list[int] | None,
    typer.Option(help="PID of the --url server (repeatable): report its CPU and memory."),
]
KeyFile = Annotated[
    Path, typer.Option(help="RSA private key (PEM) that signs the tokens for --url.")
]
Issuer = Annotated[str, typer.Option(help="Token issuer for --url (default: dev mode's).")]
Audience = Annotated[str, typer.Option(help="Token audience for --url (default: dev mode's).")]
Concurrency = Annotated[int, typer.Option(min=1, help="Handshakes in flight while joining.")]
JsonOut = Annotated[Path | None, typer.Option("--json", help="Write the full result here.")]
Pin = Annotated[
    bool, typer.Option(help="Pin a spawned server and the generator to different cores.")
]
Rates = Annotated[
    str | None,
    typer.Option(help="Total send rates (msgs/s), comma-separated, ascending; one step each."),
]
Duration = Annotated[float, typer.Option(min=0.05, help="Seconds per step (idle: hold time).")]
PayloadBytes = Annotated[int, typer.Option(min=32, help="Size of the chat text / candidate.")]
PayloadOverride = Annotated[
    int | None,
    typer.Option(min=32, help="Size of the chat text / candidate (default: 100 / 2048)."),
]
Rooms = Annotated[int, typer.Option(min=1, help="Rooms.")]
RoomSize = Annotated[int, typer.Option(min=1, help="Members per room.")]
Connections = Annotated[int, typer.Option(min=1, help="Connections in total.")]
Pairs = Annotated[int, typer.Option(min=1, help="Signaling pairs (a room each).")]

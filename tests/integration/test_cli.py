"""The `callroom` command as an operator runs it: real child processes, real sockets.

Start-up failures are one line naming the cause and exit 2 (SPEC §6, §9 "CLI");
`--version`, `-h`; `config` masks secrets; `token` writes only the token to stdout and
never invents a key the server does not have; `serve` never imports the benchmark
(callroom-bench, a project of its own: docs/performance.md).
"""

from __future__ import annotations

import ast
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from importlib.metadata import version
from importlib.util import find_spec
from pathlib import Path

import jwt
import pytest

from callroom.cli import startup_cause
from callroom.errors import StartupError
from callroom_testing import AUDIENCE, ISSUER

PYTHON = sys.executable
# The benchmark's package and the WebSocket library only it uses.
BENCH_ROOTS = {"callroom_bench", "picows"}


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AUTH", "LOG_", "DATABASE_URL", "REDIS_URL", "TURN_"))
    }
    env.update(
        AUTH_ISSUER=ISSUER,
        AUTH0_AUDIENCE=AUDIENCE,
        AUTH_JWKS_URL="http://127.0.0.1:9/.well-known/jwks.json",  # never fetched here
        DATABASE_URL=f"sqlite:///{tmp_path}/chat.db",
        LOG_FORMAT="json",
    )
    env.update(extra)
    return env


def callroom(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "callroom", *args],
        cwd=tmp_path,
        env=env if env is not None else cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def test_version_matches_the_installed_package(tmp_path: Path) -> None:
    result = callroom(tmp_path, "--version")
    assert result.returncode == 0
    assert result.stdout == f"callroom {version('callroom')}\n"


@pytest.mark.parametrize("args", [["-h"], ["serve", "-h"], ["db", "-h"], ["token", "-h"]])
def test_short_help_is_help(tmp_path: Path, args: list[str]) -> None:
    result = callroom(tmp_path, *args)
    assert result.returncode == 0, result.stderr
    assert "Usage: callroom" in result.stdout
    assert result.stdout == callroom(tmp_path, *args[:-1], "--help").stdout


def test_a_port_in_use_is_one_line_naming_it_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = callroom(tmp_path, "serve", "--host", "127.0.0.1", "--port", str(port))
    assert result.returncode == 2
    line = json.loads(one_line(result.stderr))  # LOG_FORMAT=json: still a JSON line
    assert line["event"] == "cannot_start"
    assert line["cause"] == f"PORT: 127.0.0.1:{port} is already in use"
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("host", "cause"),
    [
        ("no-such-host.invalid", "HOST: cannot resolve 'no-such-host.invalid'"),
        ("192.0.2.1", "HOST: 192.0.2.1 is not an address of this machine"),  # TEST-NET-1
    ],
)
def test_an_unusable_address_is_one_line_naming_it_and_exit_2(
    tmp_path: Path, host: str, cause: str
) -> None:
    result = callroom(tmp_path, "serve", "--host", host, "--port", "0", "--log-format", "console")
    assert result.returncode == 2
    assert cause in one_line(result.stderr)
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("url", ["sqlitebogus://", "mysql://db/x", "./callroom.db"])
def test_an_unknown_store_url_is_one_line_naming_database_url(tmp_path: Path, url: str) -> None:
    result = callroom(tmp_path, "serve", "--port", "0", env=cli_env(tmp_path, DATABASE_URL=url))
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert line.startswith("callroom: configuration error: DATABASE_URL: ")


def test_an_unreadable_dev_key_is_one_line_and_exit_2(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text("not a key")
    key.chmod(0o600)
    result = callroom(tmp_path, "serve", "--dev", "--port", "0", "--dev-key-file", str(key))
    assert result.returncode == 2
    line = json.loads(one_line(result.stderr))
    assert line["cause"] == f"{key}: not an unencrypted PEM private key"


def test_config_prints_every_setting_with_secrets_masked(tmp_path: Path) -> None:
    env = cli_env(
        tmp_path,
        DATABASE_URL="postgresql://callroom:pg-pass@db.internal:5432/chat?sslmode=require",
        REDIS_URL="redis://:redis-pass@cache.internal:6379/0?password=again",
        TURN_SECRET="turn-secret",
        TURN_URLS="turn:turn.example.org:3478",
        MAX_ROOM_SIZE="12",
    )
    env.pop("AUTH_ISSUER")
    env.pop("AUTH_JWKS_URL")
    env["AUTH0_DOMAIN"] = "tenant.example.auth0.com"
    result = callroom(tmp_path, "config", env=env)
    assert result.returncode == 0, result.stderr
    for secret in ("pg-pass", "redis-pass", "again", "turn-secret"):
        assert secret not in result.stdout
    settings = dict(line.split("=", 1) for line in result.stdout.splitlines())
    assert settings["DATABASE_URL"] == (
        "postgresql://callroom:***@db.internal:5432/chat?sslmode=require"
    )
    assert settings["REDIS_URL"] == "redis://:***@cache.internal:6379/0?password=***"
    assert settings["TURN_SECRET"] == "***"
    assert settings["TURN_URLS"] == "turn:turn.example.org:3478"
    assert settings["MAX_ROOM_SIZE"] == "12"
    assert settings["PORT"] == "8080"
    assert settings["LOBBY_ENABLED"] == "true"
    # Derived from AUTH0_DOMAIN, as the server uses them (SPEC §5).
    assert settings["AUTH_ISSUER"] == "https://tenant.example.auth0.com/"
    assert settings["AUTH_JWKS_URL"] == "https://tenant.example.auth0.com/.well-known/jwks.json"
    assert "DEV_MODE" not in settings


def test_config_refuses_a_bad_setting_like_serve(tmp_path: Path) -> None:
    result = callroom(tmp_path, "config", env=cli_env(tmp_path, AUTH_ALGORITHMS="HS256"))
    assert result.returncode == 2
    assert "AUTH_ALGORITHMS" in one_line(result.stderr)


def dev_env(tmp_path: Path) -> dict[str, str]:
    env = cli_env(tmp_path)
    for key in ("AUTH_ISSUER", "AUTH0_AUDIENCE", "AUTH_JWKS_URL"):
        env.pop(key)
    return env


def test_token_refuses_to_invent_a_key_the_server_does_not_have(tmp_path: Path) -> None:
    result = callroom(tmp_path, "token", "--sub", "alice", env=dev_env(tmp_path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert "no dev key at .callroom-dev-key.pem" in one_line(result.stderr)
    assert not (tmp_path / ".callroom-dev-key.pem").exists()


def test_token_writes_only_the_token_to_stdout(tmp_path: Path) -> None:
    env = dev_env(tmp_path)
    result = callroom(tmp_path, "token", "--sub", "alice", "--role", "host", "--new-key", env=env)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert result.stdout == token + "\n"
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["sub"], claims["roles"], claims["iss"]) == ("alice", ["host"], "callroom-dev")
    assert json.loads(one_line(result.stderr))["event"] == "dev signing key created"
    key = tmp_path / ".callroom-dev-key.pem"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    # The same key signs the next token: nothing new is created, nothing is logged.
    again = callroom(tmp_path, "token", "--sub", "bob", env=env)
    assert again.returncode == 0
    assert again.stderr == ""
    assert (
        jwt.get_unverified_header(again.stdout.strip())["kid"]
        == jwt.get_unverified_header(token)["kid"]
    )


def test_token_refuses_when_the_server_checks_another_jwks(tmp_path: Path) -> None:
    result = callroom(tmp_path, "token", "--sub", "alice", "--new-key")  # AUTH_JWKS_URL set
    assert result.returncode == 2
    assert result.stdout == ""
    assert "AUTH_JWKS_URL" in one_line(result.stderr)
    assert not (tmp_path / ".callroom-dev-key.pem").exists()


def test_token_says_so_when_the_key_file_is_not_a_key(tmp_path: Path) -> None:
    (tmp_path / "bad.pem").write_text("nope")
    (tmp_path / "bad.pem").chmod(0o600)
    result = callroom(
        tmp_path, "token", "--sub", "a", "--key-file", "bad.pem", env=dev_env(tmp_path)
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert one_line(result.stderr).endswith("dev key: bad.pem: not an unencrypted PEM private key")


@pytest.mark.parametrize(
    ("exc", "cause"),
    [
        (
            StartupError("PORT: 127.0.0.1:1 is already in use"),
            "PORT: 127.0.0.1:1 is already in use",
        ),
        (ValueError("key.pem: not a key\nmore"), "key.pem: not a key"),
        (
            OSError("no route to postgresql://u:p:w@db/x"),
            "OSError: no route to postgresql://u:***@db/x",
        ),
        (RuntimeError(), "RuntimeError"),
    ],
)
def test_a_start_up_cause_is_one_line_without_passwords(exc: Exception, cause: str) -> None:
    assert startup_cause(exc) == cause


# -- serve and the benchmark ---------------------------------------------------------------

# The benchmark's dependencies made unimportable, as in an install without callroom-bench;
# the modules that were loaded are printed when the interpreter exits.
WITHOUT_BENCH = textwrap.dedent(
    """
    import atexit, sys
    for name in ("picows", "rich"):
        sys.modules[name] = None  # `import picows` now raises ModuleNotFoundError
    loaded = lambda: sorted(n for n, m in sys.modules.items() if m is not None)
    atexit.register(lambda: print("LOADED " + " ".join(loaded()), file=sys.stderr))
    sys.argv = ["callroom", *sys.argv[1:]]
    from callroom.cli import main
    main()
    """
)
SRC = Path(__file__).resolve().parents[2] / "src" / "callroom"


def test_serve_runs_without_the_bench_dependencies_and_never_imports_the_benchmark(
    tmp_path: Path,
) -> None:
    env = cli_env(tmp_path)
    command = [PYTHON, "-c", WITHOUT_BENCH, "serve", "--host", "127.0.0.1", "--port", "0"]
    with subprocess.Popen(
        command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stderr is not None
        url = ""
        for line in proc.stderr:
            if '"listening"' in line:
                url = json.loads(line)["url"]
                break
        assert url.startswith("http://127.0.0.1:")
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 200")
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        assert proc.wait(timeout=15) == 0
    loaded = rest.rsplit("LOADED ", 1)[1].split()
    assert "callroom.server.node" in loaded  # the control: the serve path ran
    assert find_spec("callroom_bench") is not None  # installed here, so it could be loaded
    assert not [name for name in loaded if name.startswith(("callroom_bench", "picows"))]


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of its code (lazy imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_no_module_of_the_product_imports_the_benchmark() -> None:
    """The import graph: the callroom package never names callroom_bench nor its picows."""
    modules = sorted(SRC.rglob("*.py"))
    assert SRC / "server" / "node.py" in modules  # the control: the package was read
    for path in modules:
        bench = {name for name in imported_modules(path) if name.split(".")[0] in BENCH_ROOTS}
        assert not bench, f"{path.relative_to(SRC)} imports {sorted(bench)}"


def test_the_import_graph_check_sees_a_lazy_import(tmp_path: Path) -> None:
    """Control: an import inside a function, as the old ``callroom bench`` had, is seen."""
    module = tmp_path / "lazy.py"
    module.write_text("def bench() -> None:\n    from callroom_bench.cli import main\n")
    assert "callroom_bench.cli" in imported_modules(module)


def test_bench_is_not_a_command_of_the_product(tmp_path: Path) -> None:
    """The benchmark is `callroom-bench` now (docs/performance.md); `callroom bench` is
    an unknown command like any other."""
    result = callroom(tmp_path, "bench", "join")
    assert result.returncode == 2
    assert "No such command 'bench'" in result.stderr
    assert "bench" not in callroom(tmp_path, "--help").stdout

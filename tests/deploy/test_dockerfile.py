"""deploy/Dockerfile: hadolint at warning level, and the image's properties (issue 15).

No Docker engine runs here, so the image is never built in the tests: the Dockerfile is
linted and read, instruction by instruction, for what the deployment relies on.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from pathlib import Path

from deploy_support import (
    DOCKERFILE,
    ROOT,
    env_of,
    instructions,
    run,
    settings_fields,
    stages,
    the,
    tool,
)


def test_hadolint_finds_nothing_at_warning_level() -> None:
    result = run(tool("hadolint"), "--failure-threshold", "warning", str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_a_careless_dockerfile(tmp_path: Path) -> None:
    """Control: the lint really runs at that threshold (an unpinned apt-get install is a
    warning, DL3008)."""
    careless = tmp_path / "Dockerfile"
    careless.write_text(
        "FROM python:3.11-slim\nRUN apt-get update && apt-get install -y curl\nCMD python\n"
    )
    result = run(tool("hadolint"), "--failure-threshold", "warning", str(careless))
    assert result.returncode != 0
    assert "DL3008" in result.stdout, result.stdout


def test_multi_stage_and_only_runtime_dependencies() -> None:
    build, *_, runtime = stages()
    assert len(stages()) >= 2
    syncs = [args for name, args in build if name == "RUN" and "uv sync" in args]
    assert syncs, "the build stage installs with uv sync"
    for args in syncs:
        words = shlex.split(args)
        assert "--frozen" in words, args  # exactly uv.lock's versions
        assert "--no-dev" in words, args  # runtime dependencies only
    # The runtime stage installs nothing itself: it copies the environment built.
    assert not [args for name, args in runtime if name == "RUN" and re.search(r"pip|uv ", args)]
    copied = [args for name, args in runtime if name == "COPY"]
    assert any("--from=build" in args and "/app/.venv" in args for args in copied), copied
    base = the("FROM", runtime)
    assert "slim" in base or "${PYTHON_IMAGE}" in base
    arg_default = next(args for name, args in instructions() if name == "ARG")
    assert "slim" in arg_default


def test_runs_as_an_unprivileged_user() -> None:
    runtime = stages()[-1]
    user = the("USER", runtime)
    uid = user.split(":")[0]
    assert uid not in ("root", "0"), user
    assert uid.isdigit(), user
    assert int(uid) >= 1000, user  # Kubernetes' runAsUser names it
    assert f"--uid {uid}" in the("RUN", runtime)


def test_healthcheck_stop_signal_port_and_one_process() -> None:
    runtime = stages()[-1]
    healthcheck = the("HEALTHCHECK", runtime)
    assert "/healthz" in healthcheck
    assert the("STOPSIGNAL", runtime) == "SIGTERM"
    env = env_of(runtime)
    assert the("EXPOSE", runtime) == env["PORT"] == "8080"
    assert "PORT" in healthcheck  # the probe follows PORT when it is changed
    # Exec form (no shell in between: SIGTERM reaches the server), one process.
    assert json.loads(the("ENTRYPOINT", runtime)) == ["callroom"]
    assert json.loads(the("CMD", runtime)) == ["serve"]


def test_state_only_under_the_declared_volume() -> None:
    """Read-only root filesystem friendly: the only state (a SQLite chat store, when
    DATABASE_URL is not PostgreSQL) goes under the VOLUME, and no bytecode is written."""
    runtime = stages()[-1]
    volumes = json.loads(the("VOLUME", runtime))
    env = env_of(runtime)
    database = env["DATABASE_URL"].removeprefix("sqlite:///")
    assert any(database.startswith(volume + "/") for volume in volumes), (database, volumes)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    build_env = env_of(stages()[0])
    assert build_env["UV_COMPILE_BYTECODE"] == "1"


def test_no_secret_is_baked_in() -> None:
    callroom_env = set(env_of(stages()[-1])) & settings_fields()
    assert callroom_env == {"HOST", "PORT", "LOG_FORMAT", "DATABASE_URL"}
    for name, args in instructions():
        if name in ("ENV", "ARG"):
            assert not re.search(r"SECRET|PASSWORD|TOKEN|AUDIENCE|DOMAIN|KEY", args), args
        if name == "COPY":
            assert not re.search(r"\.env|\.pem|\.key", args), args


def test_dockerignore_keeps_secrets_out_and_the_sources_in() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        verdict = False
        for pattern in patterns:
            negated = pattern.startswith("!")
            if fnmatch.fnmatch(path, pattern.removeprefix("!")):
                verdict = not negated
        return verdict

    for secret in (".env", ".callroom-dev-key.pem", "callroom.db", ".git", ".venv"):
        assert ignored(secret), secret
    copied = []
    for name, args in instructions():
        if name == "COPY" and "--from" not in args:
            copied += shlex.split(args)[:-1]
    assert copied
    for source in copied:
        assert (ROOT / source).exists(), source
        assert not ignored(source), source

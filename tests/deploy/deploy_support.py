"""Shared by the deployment tests (tests/deploy): paths, tools, the settings model, and
the metric names a PromQL expression uses.

The external tools (hadolint, kubernetes-validate, check-jsonschema from the dev group;
nginx and promtool from Debian, installed by .ci/run) are required: a missing tool
FAILS the test that needs it, naming how to install it; nothing is skipped.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = ROOT / "devops" / "kubernetes"
MONITORING = ROOT / "devops" / "monitoring"


_VENV_BIN = Path(sys.executable).parent
_DEBIAN = {"nginx": "nginx", "promtool": "prometheus"}


def tool(name: str) -> str:
    """The path of a required tool; FAILS (never skips) when it is not installed."""
    for candidate in (_VENV_BIN / name, Path("/usr/sbin") / name, Path("/usr/bin") / name):
        if candidate.is_file():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        how = (
            f"apt-get install -y {_DEBIAN[name]} (.ci/run does)"
            if name in _DEBIAN
            else "make sync (it is in the dev dependency group)"
        )
        pytest.fail(f"{name} is not installed: {how}")
    return found


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run a tool; its exit code, stdout and stderr (text)."""
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_yaml_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def settings_fields() -> set[str]:
    """The environment variables the server reads: the fields of ``Settings``
    (``DEV_MODE`` is set by ``--dev``, not by the environment)."""
    from callroom.config import Settings

    return set(Settings.model_fields) - {"DEV_MODE"}


def env_example_names() -> set[str]:
    """Every variable .env.example lists (SPEC §6: it lists every one)."""
    names = set()
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.match(r"^([A-Z][A-Z0-9_]*)=", line)
        if match:
            names.add(match.group(1))
    return names


# -- metric names in PromQL ------------------------------------------------------------

_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan"}
)


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (not functions, labels or keywords).

    Strings, label matchers ``{...}``, ranges ``[...]``, grouping label lists and Grafana
    variables are removed first; what remains of the identifiers not followed by ``(``
    are metric names. ``label_values(metric, label)`` (a Grafana variable query) names
    its first argument.
    """
    text = re.sub(r"label_values\(\s*([^,{)]+(?:\{[^}]*\})?)\s*,\s*\w+\s*\)", r"\1", expr)
    text = re.sub(r'"(?:[^"\\]|\\.)*"', " ", text)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\w+", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)\b(?!\s*\()", text):
        name = match.group(1)
        if name.lower() not in _KEYWORDS:
            names.add(name)
    return names


def exported_metric_names(exposition: str) -> set[str]:
    """The sample names a Prometheus text exposition can carry, from its ``# TYPE``
    lines (a labelled metric without samples yet still has its TYPE line)."""
    suffixes = {
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "info": ("_info",),
    }
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.update(name + suffix for suffix in suffixes.get(kind, ("",)))
    return names


# -- deploy/nginx.conf -------------------------------------------------------------------

NGINX_CONF = DEPLOY / "nginx.conf"


def nginx_block(text: str, header: str) -> str:
    """The body of the first block opened by ``header`` (e.g. ``upstream callroom``)."""
    start = text.index(header + " {") + len(header) + 2
    depth = 1
    for index in range(start, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return text[start:index]
    raise AssertionError(f"unclosed block {header}")


def nginx_directives(block: str, name: str) -> list[str]:
    """The arguments of every active (not commented) ``name`` directive of a block."""
    return [
        match.group(1).strip()
        for match in re.finditer(rf"^\s*{name}\s+([^;]*);", block, re.MULTILINE)
    ]


def nginx_upstream_servers(text: str) -> list[str]:
    """``host:port`` of each server of the ``callroom`` upstream, in order."""
    return [
        args.split()[0]
        for args in nginx_directives(nginx_block(text, "upstream callroom"), "server")
    ]


# -- deploy/Dockerfile -------------------------------------------------------------------

DOCKERFILE = DEPLOY / "Dockerfile"


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical]


def stages() -> list[list[tuple[str, str]]]:
    """The instructions of each build stage (from one FROM to the next)."""
    result: list[list[tuple[str, str]]] = []
    for instruction in instructions():
        if instruction[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for name, args in stage:
        if name == "ENV":
            for word in shlex.split(args):
                key, _, value = word.partition("=")
                env[key] = value
    return env


def the(name: str, stage: list[tuple[str, str]]) -> str:
    """The arguments of the one ``name`` instruction of a stage."""
    found = [args for instruction, args in stage if instruction == name]
    assert len(found) == 1, f"{name}: {found}"
    return found[0]

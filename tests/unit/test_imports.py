"""No import cycles in ``src/callroom``, counting every import: at the top of a module,
under ``TYPE_CHECKING`` and inside functions (a cycle hidden in a function still ties
the modules together; the node once sat in one, app ↔ http_api ↔ node ↔ ws)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """The modules of ``known`` that the module ``name`` at ``path`` imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                parents = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parents, base] if base else parents)
            for alias in node.names:  # ``from pkg import module`` imports the module
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {module for module in found if module in known and module != name}


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(path): path for path in (SRC / "callroom").rglob("*.py")}
    known = set(paths)
    return {name: imports_of(path, name, known) for name, path in paths.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for target in edges:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component: list[str] = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "callroom.server.ws" in graph  # the walk found the package
    assert cycles(graph) == []


def test_a_cycle_is_found() -> None:
    """The check itself: a cycle of three, a self-import, and a module outside it."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_imports_count_under_type_checking_and_in_functions(tmp_path: Path) -> None:
    known = {"callroom.server.node", "callroom.server.app", "callroom.server"}
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from callroom.server.node import Node\n"
        "def build():\n    from . import app\n"
    )
    module = tmp_path / "probe.py"
    module.write_text(source)
    assert imports_of(module, "callroom.server.probe", known) == {
        "callroom.server.node",
        "callroom.server.app",
    }


# SPEC-independent house rules (issue 18): one module per idea, none much over 400 lines,
# and no module reaching into another's private names.
MAX_MODULE_LINES = 420
BENCH = SRC.parent / "bench" / "callroom_bench"


def private_imports(path: Path) -> list[str]:
    """``from x import _name`` of a callroom module (the module's own privates are its
    business; another module importing them ties the two together unseen)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.level or "callroom" in (node.module or "")):
            found += [
                f"{node.module}.{alias.name}"
                for alias in node.names
                if alias.name.startswith("_") and not alias.name.startswith("__")
            ]
    return found


def test_no_module_imports_another_modules_private_names() -> None:
    offenders = {
        str(path.relative_to(SRC.parent)): names
        for path in [*(SRC / "callroom").rglob("*.py"), *BENCH.rglob("*.py")]
        if (names := private_imports(path))
    }
    assert offenders == {}


def test_a_private_import_is_found(tmp_path: Path) -> None:
    module = tmp_path / "probe.py"
    module.write_text("from callroom.runtime.hub import Hub, _deliver\nfrom . import _x\n")
    assert private_imports(module) == ["callroom.runtime.hub._deliver", "None._x"]


def test_no_module_is_much_over_400_lines() -> None:
    sizes = {
        str(path.relative_to(SRC.parent)): lines
        for path in [*(SRC / "callroom").rglob("*.py"), *BENCH.rglob("*.py")]
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert sizes == {}

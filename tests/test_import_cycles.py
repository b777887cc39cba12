"""The package's import structure, read from the source with `ast` (nothing is imported):

- no import cycle among macsql's modules, counting the imports inside functions too (a function-level import
  hides a cycle from Python's start-up, not from the design);
- the core (macsql's top-level modules, macsql.backends, macsql.agents) never imports the outer ring
  (macsql.evaluate, macsql.cli, macsql.serve, macsql.mcp), which is built on it;
- no click in the library folders (macsql.finetune, macsql.agents): commands live in macsql/cli.

Folders map to module names as pyproject.toml installs them (agents/ is macsql.agents, finetune/ is
macsql.finetune).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"macsql": ROOT / "macsql", "macsql.agents": ROOT / "agents", "macsql.finetune": ROOT / "finetune"}
OUTER_RING = ("macsql.evaluate", "macsql.cli", "macsql.serve", "macsql.mcp")
# top-level modules that belong to the outer ring themselves: `python -m macsql` runs the CLI, and the
# integrations serve other agents' tool APIs (they may share the server's database list)
NOT_CORE = {"macsql.__main__", "macsql.integrations"}
LIBRARY_FOLDERS = ("macsql.finetune", "macsql.agents")


def _module_files() -> dict[str, tuple[Path, bool]]:
    """module name -> (file, is a package's __init__), for every .py file under the mapped folders."""
    out: dict[str, tuple[Path, bool]] = {}
    for package, folder in FOLDERS.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("")
            if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
                continue
            if package == "macsql" and rel.parts[0] in ("agents", "finetune"):
                continue  # not on disk there, but never let a stray folder shadow the mapped ones
            parts = [*package.split("."), *rel.parts]
            is_init = parts[-1] == "__init__"
            if is_init:
                parts = parts[:-1]
            out[".".join(parts)] = (path, is_init)
    return out


MODULES = _module_files()


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of import nodes under `if TYPE_CHECKING:`, which never run."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                skip.update(id(n) for n in ast.walk(inner))
    return skip


def _resolve(name: str) -> str | None:
    """The module of ours that importing `name` runs (the longest known prefix), or None for others'."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


def imports_of(module: str) -> dict[str, set[str]]:
    """Every import in the module, at module level and inside functions and classes: the names of what it
    imports (ours resolved to module names, others' as written: `click`, `torch.nn`) -> the lines."""
    path, is_init = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    skip = _type_checking_only(tree)
    package = module if is_init else module.rpartition(".")[0]
    found: dict[str, set[str]] = {}

    def add(name: str, line: int) -> None:
        found.setdefault(_resolve(name) or name, set()).add(f"{path.relative_to(ROOT)}:{line}")

    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                # `from macsql.finetune import data` imports the module macsql.finetune.data
                submodule = f"{source}.{alias.name}"
                add(submodule if submodule in MODULES else source, node.lineno)
    return found


GRAPH = {m: {t: lines for t, lines in imports_of(m).items() if t in MODULES and t != m} for m in MODULES}


def _cycles(graph: dict[str, dict[str, set[str]]]) -> list[list[str]]:
    """One cycle (as a path that returns to its start) per strongly connected component (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [_path_within(graph, set(c)) for c in components]


def _path_within(graph: dict[str, dict[str, set[str]]], members: set[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first, inside the component)."""
    start = min(members)
    previous: dict[str, str] = {}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v]):
            if w not in members:
                continue
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if w not in previous:
                previous[w] = v
                queue.append(w)
    return sorted(members)


def _describe(cycle: list[str]) -> str:
    steps = [f"{a} -> {b} ({', '.join(sorted(GRAPH[a][b]))})" for a, b in zip(cycle, cycle[1:], strict=False)]
    return "\n  ".join(steps)


def _is_core(module: str) -> bool:
    if module in NOT_CORE or any(module == p or module.startswith(p + ".") for p in OUTER_RING):
        return False
    if module.startswith(("macsql.backends", "macsql.agents")):
        return True
    return module.count(".") <= 1 and not module.startswith(("macsql.finetune", "macsql.databases"))


def test_the_folders_map_to_the_installed_names():
    assert {"macsql.pipeline", "macsql.agents.selector", "macsql.finetune.rewards", "macsql.cli.finetune",
            "macsql.compare"} <= set(MODULES)
    assert "macsql.evaluate.compare" not in MODULES and "macsql.finetune.commands" not in MODULES


def test_the_graph_sees_imports_inside_functions():
    # pipeline.py builds its graph lazily, and the imports found must include that one
    assert "macsql.graph" in GRAPH["macsql.pipeline"]
    assert _cycles({"a": {"b": set()}, "b": {"c": set()}, "c": {"a": set()}, "d": {"a": set()}}) == [
        ["a", "b", "c", "a"]]


def test_no_import_cycle():
    cycles = _cycles(GRAPH)
    assert not cycles, "import cycles (module -> module it imports (where)):\n  " + "\n\n  ".join(
        _describe(c) for c in cycles)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _is_core(m)))
def test_the_core_never_imports_the_outer_ring(module):
    wrong = {t: lines for t, lines in imports_of(module).items()
             if any(t == p or t.startswith(p + ".") for p in OUTER_RING)}
    assert not wrong, f"{module} (core) imports the outer ring: {wrong}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith(LIBRARY_FOLDERS)))
def test_no_click_in_library_folders(module):
    wrong = {t: lines for t, lines in imports_of(module).items() if t == "click" or t.startswith("click.")}
    assert not wrong, f"{module} imports click (commands belong in macsql/cli): {wrong}"

"""bench's modules import one way: no cycle, counting imports inside functions too.

The graph is read from the source with ``ast`` (nothing is imported): an edge
A -> B for every ``import``/``from ... import`` of a bench module anywhere in A,
at module level or inside a function, except under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The one import root: folder -> package (pyproject.toml's package-dir).
ROOTS = {"bench": "bench", "methods": "bench.methods", "datasets": "bench.datasets"}
ROOTS["reports"] = "bench.reports"


def module_files() -> dict[str, Path]:
    modules = {}
    for folder, package in ROOTS.items():
        for path in (REPO / folder).rglob("*.py"):
            parts = path.relative_to(REPO / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((package, *parts))] = path
    return modules


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The bench modules ``name`` imports (a package's ``from P import m`` counts P.m)."""
    tree = ast.parse(path.read_text())
    skip = {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and _type_checking_only(node)
        for stmt in node.body
        for child in ast.walk(stmt)
    }
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    return {name: imported_modules(name, path, known) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def _is_package(name: str) -> bool:
    return module_files()[name].name == "__init__.py"


def test_the_graph_sees_imports_inside_functions():
    # bench profile imports each study inside the function that runs it.
    assert "bench.profile.studies.unet" in import_graph()["bench.profile.cli"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_among_bench_modules():
    graph = import_graph()
    # A package's __init__ importing its own modules is not a cycle of layers.
    for name in graph:
        if _is_package(name):
            graph[name] = {m for m in graph[name] if not m.startswith(name + ".")}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_engine_never_imports_the_runner_or_the_tasks():
    graph = import_graph()
    upper = {"bench.runner", "bench.cli", "bench.pretrain", "bench.finetune", "bench.task_factory"}
    upper.add("bench.synthetic_tasks")
    for name, imports in graph.items():
        if name.startswith("bench.federated"):
            assert not imports & upper, f"{name} imports {sorted(imports & upper)}"

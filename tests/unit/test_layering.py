"""The layering rule, checked on the source: `neuronforge/` is the library and never imports Dagster or the layers above
it; `resources/` are thin; no import cycles among project modules; no module grows past the size a reader can hold."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAYERS = ("neuronforge", "resources", "assets", "pipelines")  # bottom to top
PROJECT = (*LAYERS, "bench", "deploy")
MAX_LINES = 600
MAX_RESOURCE_LINES = 250


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    modules = {}
    for top in PROJECT:
        for path in sorted((REPO / top).rglob("*.py")):
            modules[module_name(path)] = path
    return modules


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module `path` imports, anywhere in the file (lazy imports inside functions count too)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    own = module_name(path)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in modules else base)
    return found


def test_library_never_imports_dagster_or_upper_layers():
    modules = project_modules()
    offenders = []
    for name, path in modules.items():
        if not name.startswith("neuronforge"):
            continue
        for imported in imports_of(path, modules):
            top = imported.split(".")[0]
            if top in ("dagster", "dagster_webserver", "dagster_k8s", "dagster_postgres") or top in LAYERS[1:]:
                offenders.append(f"{path.relative_to(REPO)} imports {imported}")
    assert not offenders, "neuronforge/ must stay Dagster-free and below resources/assets/pipelines:\n" + "\n".join(
        offenders
    )


def test_layers_only_import_downwards():
    modules = project_modules()
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    offenders = []
    for name, path in modules.items():
        layer = name.split(".")[0]
        if layer not in rank:
            continue
        for imported in imports_of(path, modules):
            top = imported.split(".")[0]
            if top in rank and rank[top] > rank[layer]:
                offenders.append(f"{path.relative_to(REPO)} ({layer}) imports {imported} ({top})")
    assert not offenders, "imports must run down the layers:\n" + "\n".join(offenders)


def test_no_import_cycles_among_project_modules():
    modules = project_modules()
    graph = {
        name: {m for m in imports_of(path, modules) if m in modules and m != name} for name, path in modules.items()
    }
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_modules_stay_small():
    too_long = []
    for path in project_modules().values():
        lines = len(path.read_text().splitlines())
        limit = MAX_RESOURCE_LINES if path.parent.name == "resources" else MAX_LINES
        if lines > limit:
            too_long.append(f"{path.relative_to(REPO)}: {lines} lines (limit {limit})")
    assert not too_long, "split these modules:\n" + "\n".join(too_long)


def test_the_checker_sees_imports(tmp_path):
    # The rule above is only as good as the import scan: prove it finds lazy, relative and dotted imports.
    modules = project_modules()
    sample = REPO / "neuronforge" / "records.py"
    assert "neuronforge.artifacts" in imports_of(sample, modules)
    assert any(name.startswith("neuronforge.") for name in modules) and "assets.export" in modules
    probe = REPO / "assets" / "export.py"
    assert {m for m in imports_of(probe, modules) if m.startswith("dagster")}, "assets/export.py imports dagster"

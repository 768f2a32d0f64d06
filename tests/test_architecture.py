"""The package's layers (docs/architecture.md): imports point down, never up, never in a cycle,
and no module imports another module's private names. Every import counts, including those
inside functions (an in-function import does not hide a cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

import adaptrl

PACKAGE = Path(adaptrl.__file__).parent

#: module prefix → layer; a module may import only from its own layer or lower ones.
LAYERS: list[tuple[str, int]] = [
    ("adaptrl.errors", 0), ("adaptrl.registry", 0), ("adaptrl.runfiles", 0), ("adaptrl.estimators", 0),
    ("adaptrl.processing", 0), ("adaptrl.optim", 0), ("adaptrl.analysis.statistics", 0),
    ("adaptrl.memory", 0),
    ("adaptrl.envs", 1), ("adaptrl.policies", 1), ("adaptrl.models", 1), ("adaptrl.planners", 1),
    ("adaptrl.sampling", 2), ("adaptrl.plots", 2),
    ("adaptrl.meta", 3),
    ("adaptrl.algorithms", 4),
    ("adaptrl.experiment", 5), ("adaptrl.analysis", 5), ("adaptrl.bench", 5), ("adaptrl.sampler_demo", 5),
    ("adaptrl.video", 5),
    ("adaptrl.cli", 6),
]
LAYER_NAMES = ["core math", "envs, policies", "sampling, plots", "meta", "algorithms",
               "experiment, analysis", "cli"]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer(module: str) -> int:
    if module == "adaptrl":  # the package itself registers the Gymnasium envs
        return 1
    matches = [(len(prefix), rank) for prefix, rank in LAYERS
               if module == prefix or module.startswith(prefix + ".")]
    assert matches, f"{module} has no layer; add it to LAYERS and docs/architecture.md"
    return max(matches)[1]


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, list[str], int]]:
    """``(imported adaptrl module, imported names, line)`` for every import in ``path``."""
    out = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "adaptrl"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            if base.split(".")[0] != "adaptrl":
                continue
            names = [a.name for a in node.names]
            submodules = [f"{base}.{n}" for n in names if f"{base}.{n}" in modules]
            if submodules:
                out += [(s, [], node.lineno) for s in submodules]
                names = [n for n in names if f"{base}.{n}" not in modules]
            if names:
                out.append((base, names, node.lineno))
    return out


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {m: {target for target, _, _ in imports_of(m, p, modules) if target != m}
            for m, p in modules.items()}


def test_every_import_points_down_the_layers():
    modules = all_modules()
    upward = []
    for module, path in sorted(modules.items()):
        for target, _, line in imports_of(module, path, modules):
            if layer(target) > layer(module):
                upward.append(f"{module}:{line} ({LAYER_NAMES[layer(module)]}) imports {target} "
                              f"({LAYER_NAMES[layer(target)]})")
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_no_import_cycles():
    graph = import_graph()
    # Tarjan's strongly connected components; a component of more than one module is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
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
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_no_private_names_imported_across_modules():
    modules = all_modules()
    private = [f"{module}:{line} imports {', '.join(n for n in names if n.startswith('_'))} from {target}"
               for module, path in sorted(modules.items())
               for target, names, line in imports_of(module, path, modules)
               if target != module and any(n.startswith("_") for n in names)]
    assert not private, "\n".join(private)


def test_the_checker_sees_upward_private_and_in_function_imports(tmp_path):
    """The checks above can fail: imports written into a synthetic meta module — one at the top,
    one hidden in a function, one relative — are all found and resolved."""
    modules = all_modules()
    path = tmp_path / "learner.py"
    path.write_text("from adaptrl.experiment.trainer import _progress_bar\n"
                    "def f():\n    from adaptrl import plots\n"
                    "from .batch import StepBatch\n")
    found = sorted(imports_of("adaptrl.meta.learner", path, modules))
    assert found == [("adaptrl.experiment.trainer", ["_progress_bar"], 1),
                     ("adaptrl.meta.batch", ["StepBatch"], 4), ("adaptrl.plots", [], 3)]
    assert layer("adaptrl.experiment.trainer") > layer("adaptrl.meta.learner")

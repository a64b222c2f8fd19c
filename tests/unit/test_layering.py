"""The package layering of docs/architecture.md: every ``import metacpo.X`` (module level or
lazy) stays within what the importing package may use."""

from __future__ import annotations

import ast
from pathlib import Path

import metacpo

ROOT = Path(metacpo.__file__).resolve().parent

# package -> the metacpo packages it may import (besides itself); docs/architecture.md.
# ``choices`` (the allowed values of enumerated settings) is a leaf every layer may use.
ALLOWED: dict[str, set[str]] = {
    "compat": set(),
    "solvers": set(),
    "functional": set(),
    "data": set(),
    "models": set(),
    "tasks": {"compat"},
    "samplers": {"compat", "data", "models", "tasks"},
    "meta": {"functional", "solvers"},
    "config": {"algorithms.registry", "tasks"},
    "algorithms": {"config", "data", "functional", "meta", "models", "samplers", "solvers", "tasks"},
    "logging": {"fileio"},
    "checkpoint": {"config", "fileio"},
}


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else (
            [a.name for a in node.names] if isinstance(node, ast.Import) else [])
        out |= {n for n in names if n.startswith("metacpo.")}
    return out


def test_packages_import_only_the_layers_below_them():
    bad = []
    for pkg, allowed in ALLOWED.items():
        files = [ROOT / f"{pkg}.py"] if (ROOT / f"{pkg}.py").exists() else sorted((ROOT / pkg).rglob("*.py"))
        for f in files:
            for mod in _imports(f):
                parts = mod.split(".")
                target = parts[1]
                if target in (pkg, "choices"):
                    continue
                if target not in allowed and ".".join(parts[1:3]) not in allowed:
                    bad.append(f"{f.relative_to(ROOT)} imports {mod}")
    assert not bad, bad


def test_the_registry_imports_nothing_of_metacpo():
    assert _imports(ROOT / "algorithms" / "registry.py") == set()


def test_no_module_reaches_into_another_modules_private_names():
    """``from metacpo.x import _name`` across modules (the composition roots share public helpers:
    ``checkpoint.load_run``, ``samplers.env_info``, ``samplers.CurrentTaskSampler``; the commands
    convert flag text through ``config.schema.value_from_text``)."""
    bad = []
    for f in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("metacpo."):
                bad += [f"{f.relative_to(ROOT)} imports {node.module}.{a.name}" for a in node.names
                        if a.name.startswith("_") and not a.asname]
    assert not bad, bad


def test_the_package_imports_nothing_from_tests():
    """Test helpers (solver instances, the reference builder, synthetic batches) live in tests/."""
    bad = [str(f.relative_to(ROOT)) for f in sorted(ROOT.rglob("*.py"))
           if any(m == "tests" or m.startswith("tests.") for m in _all_imports(f))]
    assert not bad, bad


def _all_imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return out


def test_no_import_circles_between_modules():
    """Module-level imports of metacpo form no cycle (lazy imports inside functions excepted)."""
    modules = {".".join(f.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__"): f
               for f in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, f in modules.items():
        deps: set[str] = set()
        for node in ast.parse(f.read_text()).body:  # module level only
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != name:
                    deps.add(t)
        graph[name] = deps
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            raise AssertionError("import circle: " + " -> ".join(path[path.index(node):] + [node]))
        if node in done:
            return
        for dep in sorted(graph[node]):
            visit(dep, path + [node])
        done.add(node)

    for name in sorted(graph):
        visit(name, [])

def test_the_choices_module_imports_nothing_of_metacpo():
    assert _imports(ROOT / "choices.py") == set()


def test_implementations_cover_exactly_the_allowed_values():
    """The one list of each enumerated setting matches what the code can actually do."""
    from metacpo import choices
    from metacpo.models.policy import _ACTIVATIONS
    from metacpo.samplers.base import _NP_ACTIVATIONS

    assert set(_ACTIVATIONS) == set(choices.ACTIVATIONS)
    assert set(_NP_ACTIVATIONS) == set(choices.ACTIVATIONS)

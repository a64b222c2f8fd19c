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


def test_the_choices_module_imports_nothing_of_metacpo():
    assert _imports(ROOT / "choices.py") == set()


def test_implementations_cover_exactly_the_allowed_values():
    """The one list of each enumerated setting matches what the code can actually do."""
    from metacpo import choices
    from metacpo.models.policy import _ACTIVATIONS
    from metacpo.samplers.base import _NP_ACTIVATIONS

    assert set(_ACTIVATIONS) == set(choices.ACTIVATIONS)
    assert set(_NP_ACTIVATIONS) == set(choices.ACTIVATIONS)

"""Algorithms by name, each with its builder and its own config sections.

An algorithm module registers itself at import time::

    register_algorithm("meta_cpo", build=build_meta_cpo, sections={"meta": MetaConfig})

``build(config, *, sampler)`` returns an object following :class:`metacpo.training.Algorithm`.
``sections`` are extra top-level config sections (dataclasses) that
:class:`metacpo.config.TrainConfig` accepts only for this algorithm (kept in ``config.extra``).
Built-in modules are imported lazily on first lookup.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

BUILTIN_MODULES: tuple[str, ...] = (
    "metacpo.algorithms.cpo",
    "metacpo.algorithms.trpo",
    "metacpo.algorithms.meta_cpo",
    "metacpo.algorithms.multitask",
)


@dataclass(frozen=True)
class AlgorithmEntry:
    """A registered algorithm."""

    name: str
    build: Callable[..., Any]
    """build(config: TrainConfig, *, sampler: Sampler) -> Algorithm."""
    sections: Mapping[str, type] = field(default_factory=dict)
    """Extra config sections this algorithm reads (name -> dataclass)."""
    description: str = ""
    default_env_id: str | None = None
    """The env id a config without ``env.env_id`` trains on (None: EnvConfig's default). Meta
    algorithms need a task family (e.g. SafetyPointStcircle1-v0), not a single env."""


_REGISTRY: dict[str, AlgorithmEntry] = {}
_loaded = False


def register_algorithm(
    name: str,
    *,
    build: Callable[..., Any],
    sections: Mapping[str, type] | None = None,
    description: str = "",
    default_env_id: str | None = None,
) -> AlgorithmEntry:
    """Register (or re-register, e.g. on module reload) an algorithm under ``name``."""
    from metacpo.config.schema import SECTIONS

    clash = set(sections or {}) & {"algo", *SECTIONS}
    if clash:
        raise ValueError(f"algorithm {name!r} cannot register config sections {sorted(clash)}: they are common sections")
    entry = AlgorithmEntry(name=name, build=build, sections=dict(sections or {}), description=description,
                           default_env_id=default_env_id)
    _REGISTRY[name] = entry
    return entry


def _load_builtin() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in BUILTIN_MODULES:
        importlib.import_module(mod)


def algorithm_names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get_algorithm(name: str) -> AlgorithmEntry:
    """The entry for ``name``; ValueError naming the allowed algorithms otherwise."""
    _load_builtin()
    if name not in _REGISTRY:
        raise ValueError(f"unknown algo {name!r}; allowed: {sorted(_REGISTRY)}")
    return _REGISTRY[name]

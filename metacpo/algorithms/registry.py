"""Algorithms by name, each with its builder and its own config sections.

The built-in algorithms are declared at the bottom of this module, one line each, by *module
path* (``"package.module:attribute"``): looking an algorithm up, or building a config for it,
imports only what that algorithm names -- its config sections' module when a
:class:`~metacpo.config.TrainConfig` is built, its builder's module when the algorithm is built.
This module imports nothing of metacpo at module level, so ``metacpo.config`` may use it without
an import circle (config -> registry; never registry -> config or algorithms at import time).

Adding an algorithm: one new module with ``build(config, *, sampler, obs_dim, act_dim)``
(returning an object that follows :class:`metacpo.training.Algorithm`) and its config section
dataclasses, plus one :func:`register_algorithm` line here (or in a plugin, where ``build`` and
the sections may also be the objects themselves)::

    register_algorithm("ppo", build="metacpo.algorithms.ppo:build_ppo",
                       sections={"ppo": "metacpo.algorithms.ppo:PPOConfig"})
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Ref = str
"""``"package.module:attribute"``: an object named by where it lives, imported on first use."""

COMMON_SECTION_NAMES = frozenset({"algo", "env", "policy", "critic", "advantage", "constraint", "update", "sampler",
                                  "run"})
"""Top-level config keys an algorithm may not claim for its own sections (checked against
``metacpo.config.schema.SECTIONS`` by the config tests)."""


def resolve(ref: Any) -> Any:
    """The object ``ref`` names (``"module:attribute"``); anything that is not a string as it is."""
    if not isinstance(ref, str):
        return ref
    module, sep, attr = ref.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"expected 'package.module:attribute', got {ref!r}")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class AlgorithmEntry:
    """A registered algorithm."""

    name: str
    builder: Callable[..., Any] | Ref
    """build(config: TrainConfig, *, sampler, obs_dim, act_dim) -> Algorithm, or where it lives."""
    section_refs: Mapping[str, type | Ref] = field(default_factory=dict)
    """Extra config sections this algorithm reads (name -> dataclass, or where it lives)."""
    description: str = ""
    default_env_id: str | None = None
    """The env id a config without ``env.env_id`` trains on (None: EnvConfig's default). Meta
    algorithms need a task family (e.g. SafetyPointStcircle1-v0), not a single env."""

    @property
    def sections(self) -> dict[str, type]:
        """Extra config sections (name -> dataclass), importing their modules on first use."""
        return {name: resolve(ref) for name, ref in self.section_refs.items()}

    def build(self, config: Any, *, sampler: Any, obs_dim: int, act_dim: int) -> Any:
        """The algorithm for ``config`` (imports the builder's module)."""
        return resolve(self.builder)(config, sampler=sampler, obs_dim=obs_dim, act_dim=act_dim)


_REGISTRY: dict[str, AlgorithmEntry] = {}


def register_algorithm(
    name: str,
    *,
    build: Callable[..., Any] | Ref,
    sections: Mapping[str, type | Ref] | None = None,
    description: str = "",
    default_env_id: str | None = None,
) -> AlgorithmEntry:
    """Register (or re-register) an algorithm under ``name``."""
    clash = set(sections or {}) & COMMON_SECTION_NAMES
    if clash:
        raise ValueError(f"algorithm {name!r} cannot register config sections {sorted(clash)}: they are common sections")
    entry = AlgorithmEntry(name=name, builder=build, section_refs=dict(sections or {}), description=description,
                           default_env_id=default_env_id)
    _REGISTRY[name] = entry
    return entry


def algorithm_names() -> list[str]:
    return sorted(_REGISTRY)


def get_algorithm(name: str) -> AlgorithmEntry:
    """The entry for ``name``; ValueError naming the allowed algorithms otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown algo {name!r}; allowed: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


# --------------------------------------------------------------------------------------------
# The built-in algorithms
# --------------------------------------------------------------------------------------------
_A = "metacpo.algorithms"
META_TASK_FAMILY = "SafetyPointStcircle1-v0"

register_algorithm("cpo", build=f"{_A}.cpo:build_cpo", sections={"margin": f"{_A}.margin:CostMarginConfig"},
                   description="Constrained Policy Optimization (single task)")
register_algorithm("trpo", build=f"{_A}.trpo:build_trpo",
                   description="Trust Region Policy Optimization (single task, no cost constraint)")
register_algorithm("meta-cpo", build=f"{_A}.meta_cpo:build_meta_cpo", sections={"meta": f"{_A}.meta_config:MetaConfig"},
                   description="Meta-CPO: CPO inside MAML, second-order through the CPO steps",
                   default_env_id=META_TASK_FAMILY)
register_algorithm("meta-trpo", build=f"{_A}.meta_cpo:build_meta_trpo",
                   sections={"meta": f"{_A}.meta_config:MetaConfig"},
                   description="Meta-TRPO (MAML-TRPO): the same loop with TRPO steps, no cost constraint",
                   default_env_id=META_TASK_FAMILY)
register_algorithm("multitask-cpo", build=f"{_A}.multitask:build_multitask_cpo",
                   sections={"multitask": f"{_A}.multitask:MultitaskConfig"},
                   description="CPO trained sequentially on tasks drawn from the level-1 distribution",
                   default_env_id=META_TASK_FAMILY)
register_algorithm("trpo-lag", build=f"{_A}.trpo:build_trpo_lag", sections={"lagrange": f"{_A}.lagrange:LagrangeConfig"},
                   description="TRPO-Lagrangian (Ray et al. 2019): TRPO on the penalised advantage, lambda by dual ascent")
register_algorithm("multitask-trpo-lag", build=f"{_A}.multitask:build_multitask_trpo_lag",
                   sections={"multitask": f"{_A}.multitask:MultitaskConfig",
                             "lagrange": f"{_A}.lagrange:LagrangeConfig"},
                   description="TRPO-Lagrangian trained sequentially on tasks drawn from the level-1 distribution",
                   default_env_id=META_TASK_FAMILY)

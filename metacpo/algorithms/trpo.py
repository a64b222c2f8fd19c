"""TRPO on a single task: the CPO machinery without the cost constraint (``a = b = None``), and
TRPO-Lagrangian (:mod:`metacpo.algorithms.lagrange`): TRPO on the penalised advantage."""

from __future__ import annotations

from metacpo.algorithms.cpo import TrustRegionAlgorithm
from metacpo.config.schema import TrainConfig
from metacpo.samplers.base import Sampler


def build_trpo(config: TrainConfig, *, sampler: Sampler, obs_dim: int, act_dim: int) -> TrustRegionAlgorithm:
    return TrustRegionAlgorithm(config, sampler=sampler, constrained=False, obs_dim=obs_dim, act_dim=act_dim)


def build_trpo_lag(config: TrainConfig, *, sampler: Sampler, obs_dim: int, act_dim: int) -> TrustRegionAlgorithm:
    if config.extra.get("lagrange") is None:
        raise ValueError("trpo-lag needs its 'lagrange' config section")
    return TrustRegionAlgorithm(config, sampler=sampler, constrained=False, obs_dim=obs_dim, act_dim=act_dim)

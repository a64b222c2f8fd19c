"""TRPO on a single task: the CPO machinery without the cost constraint (``a = b = None``)."""

from __future__ import annotations

from metacpo.algorithms.cpo import TrustRegionAlgorithm
from metacpo.config.schema import TrainConfig
from metacpo.samplers.base import Sampler


def build_trpo(config: TrainConfig, *, sampler: Sampler, obs_dim: int, act_dim: int) -> TrustRegionAlgorithm:
    return TrustRegionAlgorithm(config, sampler=sampler, constrained=False, obs_dim=obs_dim, act_dim=act_dim)


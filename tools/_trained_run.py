"""Shared by the diagnostics in tools/: a trained run's policy, critics and normaliser, loaded."""

from __future__ import annotations

from dataclasses import dataclass

import metacpo  # noqa: F401  (registers the task suite)
from metacpo.adaptation import load_initialisation
from metacpo.algorithms.agent import Agent
from metacpo.config.schema import TrainConfig
from metacpo.data.normalizer import NormalizerState
from metacpo.models.policy import GaussianMLPPolicy, ValueCritic
from metacpo.samplers import env_info


@dataclass
class TrainedRun:
    """What a diagnostic needs from ``run_dir/checkpoint.pt`` (modules loaded, normaliser frozen)."""

    config: TrainConfig
    env_id: str
    policy: GaussianMLPPolicy
    critic_r: ValueCritic
    critic_c: ValueCritic
    obs_norm: NormalizerState  # identity when the run did not normalise observations


def load_trained_run(run_dir: str, *, env_id: str | None = None) -> TrainedRun:
    """Load ``run_dir``'s final state; ``env_id`` (default: the run's) must have the same spaces."""
    init = load_initialisation(run_dir)
    cfg, state = init.config, init.state
    env_id = env_id or cfg.env.env_id
    info = env_info(env_id)
    agent = Agent.build(cfg, obs_dim=info.obs_dim, act_dim=info.act_dim)
    agent.load_trained(state, what=f"run {run_dir}")
    return TrainedRun(config=cfg, env_id=env_id, policy=agent.policy, critic_r=agent.critic_r,
                      critic_c=agent.critic_c, obs_norm=agent.obs_norm_state())

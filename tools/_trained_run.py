"""Shared by the diagnostics in tools/: a trained run's policy, critics and normaliser, loaded."""

from __future__ import annotations

from dataclasses import dataclass

import metacpo  # noqa: F401  (registers the task suite)
from metacpo.adaptation import load_initialisation
from metacpo.algorithms.common import load_module_states
from metacpo.algorithms.common import build_modules
from metacpo.config.schema import TrainConfig
from metacpo.data.normalizer import NormalizerState, RunningNormalizer
from metacpo.models.policy import GaussianMLPPolicy, ValueCritic
from metacpo.samplers import env_dims, make_env_for


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
    env = make_env_for(env_id)
    try:
        obs_dim, act_dim = env_dims(env)
    finally:
        env.close()
    policy, critic_r, critic_c = build_modules(cfg, obs_dim=obs_dim, act_dim=act_dim)
    load_module_states(state, {"policy": policy, "critic_r": critic_r, "critic_c": critic_c}, what=f"run {run_dir}")
    norm = RunningNormalizer(obs_dim, clip=cfg.advantage.obs_clip)
    norm.load_state_dict(state["obs_norm"])
    obs_norm = norm.state() if cfg.advantage.obs_normalize else NormalizerState.identity(obs_dim)
    return TrainedRun(config=cfg, env_id=env_id, policy=policy, critic_r=critic_r, critic_c=critic_c,
                      obs_norm=obs_norm)

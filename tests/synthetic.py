"""A synthetic CPO batch shared by the update and line-search tests (independent of any env)."""

import numpy as np
import torch

from metacpo.algorithms.common import process_batch
from metacpo.data.batch import Batch
from metacpo.data.normalizer import NormalizerState
from metacpo.models.policy import GaussianMLPPolicy, PolicySpec, ValueCritic

OBS, ACT, EP, N = 4, 2, 25, 200


def synthetic_batch(*, seed=0, cost_per_step=1.0, reward_nan=False):
    """8 episodes of 25 steps from a random policy; reward favours a_0 > 0, cost favours a_1 > 0."""
    torch.manual_seed(seed)
    policy = GaussianMLPPolicy(PolicySpec(obs_dim=OBS, act_dim=ACT, hidden=(16,)))
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(N, OBS))
    with torch.no_grad():
        dist = policy.distribution(torch.as_tensor(obs, dtype=torch.float32))
        actions = dist.sample()
        log_probs = dist.log_prob(actions).sum(-1).double().numpy()
    actions = actions.double().numpy()
    rewards = actions[:, 0] + 0.1 * rng.normal(size=N)
    costs = cost_per_step * (actions[:, 1] > 0)
    if reward_nan:
        rewards[5] = np.nan
    terminated = np.zeros(N, bool)
    truncated = np.zeros(N, bool)
    truncated[EP - 1 :: EP] = True
    ep_costs = costs.reshape(-1, EP).sum(1)
    batch = Batch(
        obs=obs, actions=actions, rewards=rewards, costs=costs, terminated=terminated, truncated=truncated,
        cut=np.zeros(N, bool),
        next_obs=np.roll(obs, -1, axis=0), log_probs=log_probs,
        episode_returns=rewards.reshape(-1, EP).sum(1), episode_costs=ep_costs,
        episode_lengths=np.full(N // EP, EP),
    )
    return policy, batch


def synthetic_processed(**kw):
    policy, batch = synthetic_batch(**kw)
    params = {k: v.detach().clone() for k, v in policy.named_parameters()}
    torch.manual_seed(1)
    processed = process_batch(
        batch, policy=policy, params=params, critic_r=ValueCritic(obs_dim=OBS, hidden=(8,)),
        critic_c=ValueCritic(obs_dim=OBS, hidden=(8,)), obs_norm=NormalizerState.identity(OBS),
        gamma=0.99, lam=0.95,
    )
    return policy, params, processed

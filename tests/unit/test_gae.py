import numpy as np
import pytest

from metacpo.data.gae import NoCompleteEpisodeError, cost_estimate, discounted_episode_costs, gae


def _batch():
    # Three episodes in one batch: steps 0-1 end by a time limit (truncated), steps 2-3 end by
    # termination, steps 4-5 are cut at the end of the batch (truncated).
    rewards = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    values = np.array([0.5, 0.4, 0.3, 0.2, 0.1, 0.6])
    next_values = np.array([0.4, 0.9, 0.2, 7.0, 0.6, 0.8])  # 7.0 must be ignored (termination)
    terminated = np.array([False, False, False, True, False, False])
    truncated = np.array([False, True, False, False, False, True])
    return rewards, values, next_values, terminated, truncated


def test_gae_matches_hand_computed_reference():
    r, v, nv, term, trunc = _batch()
    g, lam = 0.9, 0.8
    gl = g * lam
    # Hand-computed TD errors.
    d0 = 1.0 + 0.9 * 0.4 - 0.5  # 0.86
    d1 = 2.0 + 0.9 * 0.9 - 0.4  # 2.41  (time limit: bootstrap V(next)=0.9)
    d2 = 3.0 + 0.9 * 0.2 - 0.3  # 2.88
    d3 = 4.0 + 0.0 - 0.2  # 3.8   (termination: no bootstrap)
    d4 = 5.0 + 0.9 * 0.6 - 0.1  # 5.44
    d5 = 6.0 + 0.9 * 0.8 - 0.6  # 6.12  (batch cut: bootstrap V(next)=0.8)
    expected = np.array([d0 + gl * d1, d1, d2 + gl * d3, d3, d4 + gl * d5, d5])
    np.testing.assert_allclose(expected, [0.86 + 0.72 * 2.41, 2.41, 2.88 + 0.72 * 3.8, 3.8, 5.44 + 0.72 * 6.12, 6.12])
    adv, targets = gae(rewards=r, values=v, next_values=nv, terminated=term, truncated=trunc, gamma=g, lam=lam)
    np.testing.assert_allclose(adv, expected, rtol=1e-12)
    np.testing.assert_allclose(targets, expected + v, rtol=1e-12)


def test_gae_lambda_one_is_discounted_return_minus_value_within_episode():
    r, v, nv, term, trunc = _batch()
    adv, _ = gae(rewards=r, values=v, next_values=nv, terminated=term, truncated=trunc, gamma=0.5, lam=1.0)
    # Episode 2 (terminated): A_2 = r2 + 0.5 r3 - V2.
    assert adv[2] == pytest.approx(3.0 + 0.5 * 4.0 - 0.3)
    # Episode 1 (time limit): A_0 = r0 + 0.5 r1 + 0.25 V(next_1) - V0.
    assert adv[0] == pytest.approx(1.0 + 0.5 * 2.0 + 0.25 * 0.9 - 0.5)


def test_gae_rejects_open_batch_and_bad_rates():
    r, v, nv, term, trunc = _batch()
    trunc = trunc.copy()
    trunc[-1] = False
    with pytest.raises(ValueError, match="last step"):
        gae(rewards=r, values=v, next_values=nv, terminated=term, truncated=trunc, gamma=0.9, lam=0.9)
    with pytest.raises(ValueError, match="gamma"):
        gae(rewards=r, values=v, next_values=nv, terminated=term, truncated=_batch()[4], gamma=1.5, lam=0.9)


def test_cost_estimate_averages_complete_episodes_only():
    costs = np.array([1.0, 1.0, 0.0, 2.0, 5.0, 5.0])
    _, _, _, term, trunc = _batch()
    np.testing.assert_allclose(
        discounted_episode_costs(costs=costs, terminated=term, truncated=trunc, cost_gamma=1.0), [2.0, 2.0, 10.0]
    )
    np.testing.assert_allclose(
        discounted_episode_costs(costs=costs, terminated=term, truncated=trunc, cost_gamma=0.5), [1.5, 1.0, 7.5]
    )
    cut = np.zeros(6, bool)
    cut[-1] = True  # the last segment is a fragment cut off by the batch end
    assert cost_estimate(costs=costs, terminated=term, truncated=trunc, cut=cut, cost_gamma=1.0) == 2.0
    # No complete episode: an error, never a silent estimate from the fragment.
    with pytest.raises(NoCompleteEpisodeError, match="no complete episode"):
        cost_estimate(costs=costs[4:], terminated=term[4:], truncated=trunc[4:], cut=cut[4:], cost_gamma=1.0)

"""Fused critic fitting: each critic gets the updates it would get alone on the same minibatch order."""

from __future__ import annotations

import copy

import pytest
import torch

from metacpo.algorithms.common import fit_critic, fit_critics
from metacpo.models.policy import TimeAwareValueCritic, ValueCritic


def _data(n=700, seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, 6, generator=g)
    obs_c = torch.cat([obs, torch.rand(n, 1, generator=g)], 1)
    return obs, obs_c, obs[:, 0] * 2 + obs[:, 1] ** 2, 5 * obs_c[:, -1] + obs[:, 2]


def _critics(seed=0, hidden=(16, 8), activation="tanh"):
    torch.manual_seed(seed)
    return ValueCritic(obs_dim=6, hidden=hidden, activation=activation), TimeAwareValueCritic(
        obs_dim=6, hidden=hidden, activation=activation)


def _reference(critic, obs, targets, perms, *, lr, mb, l2):
    """Plain Adam minibatch regression of one critic, minibatches ``perm[i:i+mb]``."""
    opt = torch.optim.Adam(critic.parameters(), lr=lr)
    for perm in perms:
        for i in range(0, len(obs), mb):
            idx = perm[i:i + mb]
            opt.zero_grad()
            loss = ((critic(obs[idx]) - targets[idx]) ** 2).mean()
            if l2:
                loss = loss + l2 * sum((p ** 2).sum() for p in critic.parameters())
            loss.backward()
            opt.step()


@pytest.mark.parametrize("activation,l2", [("tanh", 0.0), ("relu", 1e-3), ("elu", 0.0)])
def test_fused_equals_each_critic_alone_on_the_same_order(activation, l2):
    obs, obs_c, tr, tc = _data()
    cr, cc = _critics(activation=activation)
    ref_r, ref_c = copy.deepcopy(cr), copy.deepcopy(cc)
    stats = fit_critics([(cr, obs, tr), (cc, obs_c, tc)], optimizer="adam", lr=3e-3, iters=3, minibatch_size=64,
                        generator=torch.Generator().manual_seed(5), l2=l2, fused=True)
    g = torch.Generator().manual_seed(5)
    perms = [torch.randperm(len(obs), generator=g) for _ in range(3)]  # one order shared by both critics
    _reference(ref_r, obs, tr, perms, lr=3e-3, mb=64, l2=l2)
    _reference(ref_c, obs_c, tc, perms, lr=3e-3, mb=64, l2=l2)
    for fitted, ref in ((cr, ref_r), (cc, ref_c)):
        for p, q in zip(fitted.parameters(), ref.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert stats[0].loss_after < stats[0].loss_before and stats[1].loss_after < stats[1].loss_before
    with torch.no_grad():
        assert stats[1].loss_after == pytest.approx(float(((cc(obs_c) - tc) ** 2).mean()), rel=1e-5)


def test_not_fused_is_the_old_separate_fit_bit_for_bit():
    obs, obs_c, tr, tc = _data()
    a_r, a_c = _critics()
    b_r, b_c = copy.deepcopy(a_r), copy.deepcopy(a_c)
    kw = dict(optimizer="adam", lr=1e-3, iters=2, minibatch_size=50)
    fit_critics([(a_r, obs, tr), (a_c, obs_c, tc)], generator=torch.Generator().manual_seed(1), fused=False, **kw)
    g = torch.Generator().manual_seed(1)
    fit_critic(b_r, obs, tr, generator=g, **kw)
    fit_critic(b_c, obs_c, tc, generator=g, **kw)
    for a, b in ((a_r, b_r), (a_c, b_c)):
        for p, q in zip(a.parameters(), b.parameters(), strict=True):
            assert torch.equal(p, q)


def test_fit_critic_minibatches_are_the_shuffled_rows():
    """The one-gather-per-epoch views give exactly the per-minibatch gathers' updates."""
    obs, _, tr, _ = _data()
    a, _ = _critics()
    b = copy.deepcopy(a)
    fit_critic(a, obs, tr, optimizer="adam", lr=1e-3, iters=2, minibatch_size=64,
               generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    _reference(b, obs, tr, [torch.randperm(len(obs), generator=g) for _ in range(2)], lr=1e-3, mb=64, l2=0.0)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_fused_falls_back_when_critics_do_not_stack_or_targets_are_not_finite():
    obs, obs_c, tr, tc = _data()
    cr, _ = _critics(hidden=(16, 8))
    _, cc = _critics(hidden=(8, 8))
    ref_r, ref_c = copy.deepcopy(cr), copy.deepcopy(cc)
    kw = dict(optimizer="adam", lr=1e-3, iters=1, minibatch_size=64)
    fit_critics([(cr, obs, tr), (cc, obs_c, tc)], generator=torch.Generator().manual_seed(3), **kw)
    g = torch.Generator().manual_seed(3)
    fit_critic(ref_r, obs, tr, generator=g, **kw)
    fit_critic(ref_c, obs_c, tc, generator=g, **kw)
    assert all(torch.equal(p, q) for p, q in zip(cc.parameters(), ref_c.parameters()))
    cr, cc = _critics()
    before = [p.clone() for p in cc.parameters()]
    bad = tc.clone()
    bad[3] = float("nan")
    stats = fit_critics([(cr, obs, tr), (cc, obs_c, bad)], generator=torch.Generator().manual_seed(3), **kw)
    assert stats[1].skipped_nonfinite and not stats[0].skipped_nonfinite
    assert all(torch.equal(p, q) for p, q in zip(cc.parameters(), before))


def test_configs_written_before_fused_fitting_load_with_it_off(tmp_path):
    from metacpo.config.schema import TrainConfig
    from metacpo.checkpoint import config_from_saved

    assert TrainConfig().critic.fused is True
    old = config_from_saved({"algo": "cpo", "critic": {"hidden": [64, 64]}}, source=tmp_path / "config.yaml")
    assert old.critic.fused is False


@pytest.mark.parametrize("fused", [True, False])
def test_fit_without_losses_fits_the_same_weights(fused):
    """losses=False only skips evaluating the losses: the same weights bit for bit, NaN stats."""
    obs, obs_c, tr, tc = _data()
    with_l, without = _critics(), _critics()
    kw = dict(optimizer="adam", lr=3e-3, iters=2, minibatch_size=64, fused=fused)
    s1 = fit_critics([(with_l[0], obs, tr), (with_l[1], obs_c, tc)], generator=torch.Generator().manual_seed(5), **kw)
    s2 = fit_critics([(without[0], obs, tr), (without[1], obs_c, tc)], generator=torch.Generator().manual_seed(5),
                     losses=False, **kw)
    for a, b in zip(with_l, without, strict=True):
        for p, q in zip(a.parameters(), b.parameters(), strict=True):
            assert torch.equal(p, q)
    assert all(s.loss_after < s.loss_before for s in s1)
    assert all(s.loss_before != s.loss_before and s.loss_after != s.loss_after for s in s2)  # NaN

"""TRPO-Lagrangian: the dual step, the penalised advantage, the step it takes, and its config checks."""

import math
from dataclasses import replace

import pytest
import torch

from metacpo.algorithms.common import fisher_vector_product, surrogate_losses
from metacpo.algorithms.cpo import trust_region_update
from metacpo.algorithms.lagrange import LagrangeConfig, LagrangeMultiplier, next_multiplier, penalised
from metacpo.config.schema import UpdateConfig
from metacpo.functional.params import flat_grad, flatten
from metacpo.solvers import FisherMetric, solve_cpo

from tests.synthetic import synthetic_processed


def test_dual_step_is_projected_gradient_ascent_on_the_violation():
    # lambda + lr * (J_C - d), clipped to [0, max]
    assert next_multiplier(1.0, j_c=35.0, cost_limit=25.0, lr=0.05, max_value=10.0) == pytest.approx(1.5)
    assert next_multiplier(1.0, j_c=5.0, cost_limit=25.0, lr=0.05, max_value=10.0) == 0.0  # not negative
    assert next_multiplier(9.9, j_c=125.0, cost_limit=25.0, lr=0.05, max_value=10.0) == 10.0  # clipped above
    assert next_multiplier(2.0, j_c=math.nan, cost_limit=25.0, lr=0.05, max_value=10.0) == 2.0  # no data, no move
    m = LagrangeMultiplier(LagrangeConfig(init=0.5, lr=0.1))
    # a hand-computed sequence: 0.5 -> 0.5 + 0.1*10 = 1.5 -> 1.5 - 0.1*20 < 0 -> 0 -> 0 + 0.1*3 = 0.3
    assert [m.observe(j, cost_limit=25.0) for j in (35.0, 5.0, 28.0)] == pytest.approx([1.5, 0.0, 0.3])
    restored = LagrangeMultiplier(LagrangeConfig(init=0.5, lr=0.1))
    restored.load_state_dict(m.state_dict())
    assert restored.value == m.value


def test_penalised_batch_is_the_normalised_lagrangian_surrogate():
    policy, params, processed = synthetic_processed()
    lam = 2.5
    pen = penalised(processed, lam)
    sd = float(processed.adv_c.double().std())  # cost advantages enter at unit std
    assert sd > 0.1
    assert torch.allclose(pen.adv_r, (processed.adv_r - lam * processed.adv_c / sd) / (1 + lam), atol=1e-6)
    assert pen.adv_c is processed.adv_c and pen.target_r is processed.target_r and pen.j_c == processed.j_c
    assert penalised(processed, 0.0).adv_r.equal(processed.adv_r)
    # at any parameters: L_pen = (L_R + lam * L_C / (cost_scale * sd)) / (1 + lam), L_C carrying the episode scale
    moved = {k: v + 0.05 * torch.randn_like(v, generator=torch.Generator().manual_seed(1)) for k, v in params.items()}
    lr, lc = surrogate_losses(policy, moved, processed)
    lpen, lc_pen = surrogate_losses(policy, moved, pen)
    assert float(lpen) == pytest.approx(float((lr + lam * lc / (processed.cost_scale * sd)) / (1 + lam)), rel=1e-5)
    assert float(lc_pen) == float(lc)
    # no cost variation in the batch: nothing to scale, A_C (all zero here) enters as it is
    flat = replace(processed, adv_c=torch.zeros_like(processed.adv_c))
    assert penalised(flat, lam).adv_r.equal(processed.adv_r / (1 + lam))
    with pytest.raises(ValueError, match=r"finite number >= 0, got -1"):
        penalised(processed, -1.0)


def test_the_step_is_the_trpo_step_of_the_lagrangian_gradient():
    policy, params, processed = synthetic_processed()
    lam = 1.5
    leaf = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    lr, lc = surrogate_losses(policy, leaf, processed)
    sd = float(processed.adv_c.double().std())
    g_ref = (flat_grad(lr, leaf, retain_graph=True) + lam * flat_grad(lc, leaf) / (processed.cost_scale * sd)) / (1 + lam)
    metric = FisherMetric(hvp=fisher_vector_product(policy, params, processed), cg_iters=10, damping=0.1)
    ref = solve_cpo(g=g_ref, a=None, b=None, delta=0.01, metric=metric, normalize=False).step
    new, stats = trust_region_update(policy=policy, params=params, processed=penalised(processed, lam),
                                     settings=UpdateConfig(delta=0.01, line_search=False), constrained=False)
    assert stats.case == "unconstrained" and not stats.skipped
    moved = flatten(new) - flatten(params)
    cos = float(moved @ ref / (moved.norm() * ref.norm()))
    assert cos == pytest.approx(1.0, abs=1e-5)
    assert float(moved.norm()) == pytest.approx(float(ref.norm()), rel=1e-3)


@pytest.mark.parametrize("kwargs, message", [
    ({"lr": 0.0}, "lagrange.lr must be a finite number > 0, got 0.0"),
    ({"lr": math.inf}, "lagrange.lr must be a finite number > 0, got inf"),
    ({"max_value": -1.0}, "lagrange.max_value must be a finite number > 0, got -1.0"),
    ({"init": -0.1}, r"lagrange.init must lie in \[0, max_value=100.0\], got -0.1"),
    ({"init": 200.0}, r"lagrange.init must lie in \[0, max_value=100.0\], got 200.0"),
])
def test_bad_lagrange_settings_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LagrangeConfig(**kwargs)


def test_a_corrupt_multiplier_state_is_refused():
    m = LagrangeMultiplier(LagrangeConfig())
    for bad in (math.nan, -1.0, 1e9):
        with pytest.raises(ValueError, match="Lagrange multiplier state"):
            m.load_state_dict({"value": bad})
    assert m.value == 0.0

"""Exactness of the Meta-CPO functional core on a closed-form quadratic toy (float64).

Each task ``i`` has quadratic surrogates ``L_R(theta) = 1/2 theta^T P theta + q^T theta`` and
``L_C(theta) = J_C(theta) = c + r^T theta + 1/2 theta^T S theta``; "fresh samples" per inner step
and after adaptation are emulated by slightly different coefficients. The post-adaptation
objective ``F(theta) = mean_i L(theta'_i(theta))`` is then an exact differentiable function of
``theta`` and the meta-gradient must equal its central finite differences, in every solver case
and with both backends.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from metacpo.functional.params import flatten, unflatten
from metacpo.meta.core import (
    StepRule,
    Surrogates,
    inner_loop,
    meta_gradient,
    meta_parameters,
    post_adaptation_values,
    project_onto_halfspace,
)
from metacpo.solvers import SolverCase

DT = torch.float64
SHAPES = {"w": (2, 2), "b": (2,)}  # 6 meta-parameters in two tensors
N = 6


@dataclass(frozen=True)
class Quad:
    P: torch.Tensor
    q: torch.Tensor
    S: torch.Tensor
    r: torch.Tensor
    c: float


def quad_objective(params, data: Quad) -> Surrogates:
    x = flatten(params)
    loss_r = 0.5 * x @ data.P @ x + data.q @ x
    j_c = data.c + data.r @ x + 0.5 * x @ data.S @ x
    return Surrogates(loss_r=loss_r, loss_c=j_c, j_c=j_c)


def spd(rng: np.random.Generator, scale: float) -> torch.Tensor:
    m = rng.normal(size=(N, N))
    return torch.tensor(scale * (m @ m.T / N + np.eye(N)), dtype=DT)


def make_task(rng: np.random.Generator, c: float, cos_target: float | None = None) -> Quad:
    P, S = spd(rng, 0.5), spd(rng, 0.3)
    q = torch.tensor(rng.normal(size=N), dtype=DT)
    r = torch.tensor(rng.normal(size=N), dtype=DT)
    if cos_target is not None:  # make the cost gradient point partly along the reward *ascent*
        qn = q / q.norm()
        perp = r - (r @ qn) * qn
        r = -cos_target * qn + (1 - cos_target**2) ** 0.5 * perp / perp.norm()
    return Quad(P=P, q=q, S=S, r=r, c=c)


def jitter(rng: np.random.Generator, t: Quad, eps: float = 0.05) -> Quad:
    def j(x):
        return x + eps * torch.tensor(rng.normal(size=tuple(x.shape)), dtype=DT)

    Pj = j(t.P)
    Sj = j(t.S)
    return Quad(P=0.5 * (Pj + Pj.T), q=j(t.q), S=0.5 * (Sj + Sj.T), r=j(t.r), c=t.c + 0.1 * eps * float(rng.normal()))


def theta0(rng: np.random.Generator) -> dict[str, torch.Tensor]:
    flat = torch.tensor(0.02 * rng.normal(size=N), dtype=DT)
    return meta_parameters(unflatten(flat, {k: torch.empty(s, dtype=DT) for k, s in SHAPES.items()}))


# Per case: the constant c of J_C (with d = 0 it is b at theta ~ 0) and how aligned -a is with g.
CASES = {
    SolverCase.UNCONSTRAINED: dict(c=-5.0, cos=None),
    SolverCase.ACTIVE: dict(c=0.03, cos=0.5),
    SolverCase.RECOVERY: dict(c=3.0, cos=0.5),
}
DELTA = 0.01


def problem(case: SolverCase, seed: int = 0, tasks: int = 2, inner_steps: int = 2):
    rng = np.random.default_rng(seed)
    base = [make_task(rng, CASES[case]["c"], CASES[case]["cos"]) for _ in range(tasks)]
    inner = [[jitter(rng, t) for _ in range(inner_steps)] for t in base]
    post = [jitter(rng, t) for t in base]
    return theta0(rng), inner, post


def outer_values(theta, inner, post, rule):
    return post_adaptation_values(theta, inner, post, objective=quad_objective, rule=rule, cost_limit=0.0)


def finite_diff(theta, inner, post, rule, eps=1e-6):
    x0 = flatten({k: v.detach() for k, v in theta.items()})
    gr, gc = torch.zeros(N, dtype=DT), torch.zeros(N, dtype=DT)
    for j in range(N):
        e = torch.zeros(N, dtype=DT)
        e[j] = eps
        rp, cp, _ = outer_values(unflatten(x0 + e, theta), inner, post, rule)
        rm, cm, _ = outer_values(unflatten(x0 - e, theta), inner, post, rule)
        gr[j] = (rp - rm) / (2 * eps)
        gc[j] = (cp - cm) / (2 * eps)
    return gr, gc


def second_order(theta, inner, post, rule):
    adapted, stats = [], []
    for data_i in inner:
        p, st = inner_loop(theta, data_i, objective=quad_objective, rule=rule, cost_limit=0.0)
        adapted.append(p)
        stats.append(st)
    mg = meta_gradient(theta, adapted, post, objective=quad_objective, cost_limit=0.0)
    return mg, stats


def rel_err(x, y):
    return float((x - y).norm() / max(float(y.norm()), 1e-12))


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("backend", ["analytic", "dco"])
@pytest.mark.parametrize("case", list(CASES))
def test_second_order_meta_gradient_matches_finite_differences(case, backend, normalize):
    theta, inner, post = problem(case)
    rule = StepRule(delta=DELTA, backend=backend, normalize=normalize)
    mg, stats = second_order(theta, inner, post, rule)
    # every inner step of every task is in the targeted solver case
    assert {s.case for st in stats for s in st} == {int(case)}
    # finite differences of the exact function (analytic forward: the dco forward is an iterative
    # solve whose tolerance would swamp the differences; its equality with the analytic forward is
    # checked separately below and by the solver tests)
    fd_r, fd_c = finite_diff(theta, inner, post, StepRule(delta=DELTA, backend="analytic", normalize=normalize))
    assert rel_err(mg.G, fd_r) <= 1e-4, (mg.G, fd_r)
    assert rel_err(mg.A, fd_c) <= 1e-4, (mg.A, fd_c)
    # the Jacobian term matters here (otherwise the test would not distinguish orders)
    fo, _ = first_order_reference(theta, inner, post, rule)
    assert rel_err(fo, fd_r) > 1e-3


def test_dco_forward_equals_analytic_forward_through_adaptation():
    for case in CASES:
        theta, inner, post = problem(case, seed=3)
        va = outer_values(theta, inner, post, StepRule(delta=DELTA, backend="analytic"))
        vd = outer_values(theta, inner, post, StepRule(delta=DELTA, backend="dco"))
        np.testing.assert_allclose(va, vd, rtol=1e-5, atol=1e-7)


def first_order_reference(theta, inner, post, rule):
    """Closed form ``mean_i (P'_i theta'_i + q'_i)``, ``theta'_i`` from a value-only adaptation."""
    gs, as_ = [], []
    for data_i, post_i in zip(inner, post):
        p, _ = inner_loop(meta_parameters(theta), data_i, objective=quad_objective, rule=rule, cost_limit=0.0,
                     second_order=False)
        x = flatten({k: v.detach() for k, v in p.items()}).numpy()
        gs.append(post_i.P.numpy() @ x + post_i.q.numpy())
        as_.append(post_i.S.numpy() @ x + post_i.r.numpy())
    return torch.tensor(np.mean(gs, 0)), torch.tensor(np.mean(as_, 0))


@pytest.mark.parametrize("case", list(CASES))
def test_first_order_equals_gradient_without_jacobian_term(case):
    theta, inner, post = problem(case, seed=1)
    rule = StepRule(delta=DELTA)
    adapted = [inner_loop(theta, d, objective=quad_objective, rule=rule, cost_limit=0.0, second_order=False)[0]
               for d in inner]
    mg = meta_gradient(theta, adapted, post, objective=quad_objective, cost_limit=0.0)
    ref_g, ref_a = first_order_reference(theta, inner, post, rule)
    torch.testing.assert_close(mg.G, ref_g, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(mg.A, ref_a, rtol=1e-10, atol=1e-12)


def test_theta_bit_identical_and_adapted_params_are_new_tensors():
    theta, inner, post = problem(SolverCase.ACTIVE, seed=2)
    before = {k: v.detach().clone() for k, v in theta.items()}
    ptrs = {k: v.data_ptr() for k, v in theta.items()}
    mg, _ = second_order(theta, inner, post, StepRule(delta=DELTA))
    assert torch.isfinite(mg.G).all()
    for k, v in theta.items():
        assert v.data_ptr() == ptrs[k]
        assert torch.equal(v.detach(), before[k])
        assert v.grad is None  # autograd.grad, never .backward() into the meta-parameters


def test_trpo_rule_ignores_cost():
    theta, inner, post = problem(SolverCase.RECOVERY, seed=4)  # cost would force recovery under CPO
    rule = StepRule(delta=DELTA, constrained=False)
    adapted = []
    for d in inner:
        p, st = inner_loop(theta, d, objective=quad_objective, rule=rule, cost_limit=0.0)
        assert all(s.case == int(SolverCase.UNCONSTRAINED) and s.nu == 0.0 for s in st)
        adapted.append(p)
    mg = meta_gradient(theta, adapted, post, objective=quad_objective, cost_limit=0.0, with_cost=False)
    fd_r, _ = finite_diff(theta, inner, post, rule)
    assert rel_err(mg.G, fd_r) <= 1e-4
    assert float(mg.A.abs().max()) == 0.0


def test_projection_onto_safety_halfspace():
    A = torch.tensor([1.0, 2.0, -1.0], dtype=DT)
    s = torch.tensor([0.5, 0.5, 0.0], dtype=DT)
    p = project_onto_halfspace(s, A=A, B=0.1)  # A.s + B = 1.6 > 0: projected onto the boundary
    assert abs(float(A @ p) + 0.1) < 1e-12
    torch.testing.assert_close(p - s, -(1.6 / 6.0) * A)
    assert project_onto_halfspace(s, A=A, B=-5.0) is s  # already safe: unchanged

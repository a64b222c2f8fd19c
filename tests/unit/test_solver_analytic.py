"""The closed-form CPO step: KKT conditions, finite differences, cases, degenerate points, input checks."""

from __future__ import annotations

import math

import pytest
import torch

from metacpo.solvers import (
    CPOSolution,
    MatrixMetric,
    SolverCase,
    solve_cpo,
)
from tests.solver_instances import random_instance, random_spd

F64 = torch.float64
CASES = [SolverCase.UNCONSTRAINED, SolverCase.ACTIVE, SolverCase.RECOVERY]


def _check_kkt(sol: CPOSolution, g, a, b, delta, H=None, tol=1e-9) -> None:
    """Stationarity, complementary slackness, primal and dual feasibility."""
    x = sol.step
    Hx = x if H is None else H @ x
    quad = 0.5 * float(x @ Hx)
    lin = float(b + a @ x)
    lam, nu = float(sol.lam), float(sol.nu)
    d = float(delta)
    assert lam >= 0.0 and nu >= 0.0  # dual feasibility
    assert quad <= d * (1 + tol)  # primal feasibility (trust region)
    if sol.case == SolverCase.RECOVERY:
        # stationarity of the recovery problem min a^T x s.t. trust region: a + lam H x = 0
        assert float((a + lam * Hx).norm()) <= tol * float(a.norm())
        assert quad == pytest.approx(d, rel=tol)
        return
    scale = float(g.norm()) + nu * float(a.norm())
    assert float((g + lam * Hx + nu * a).norm()) <= tol * scale  # stationarity
    assert lin <= tol * (abs(float(b)) + float(a.norm()) * float(x.norm()))  # primal (cost)
    assert abs(lam * (quad - d)) <= tol * max(lam, 1.0) * d  # complementary slackness
    assert abs(nu * lin) <= tol * max(nu, 1.0) * (abs(float(b)) + float(a.norm()) * float(x.norm()))


@pytest.mark.parametrize("case", CASES)
def test_kkt_identity_metric_hundreds_of_instances(case: SolverCase) -> None:
    gen = torch.Generator().manual_seed(100 + int(case))
    for i in range(300):
        n = 2 + i % 40
        inst = random_instance(n=n, case=case, generator=gen)
        sol = solve_cpo(g=inst.g, a=inst.a, b=inst.b, delta=inst.delta, normalize=False)
        assert sol.case == case
        assert sol.step.dtype == F64 and sol.step.shape == (n,)
        _check_kkt(sol, inst.g, inst.a, inst.b, inst.delta)
        if case == SolverCase.ACTIVE:
            assert float(sol.nu) > 0.0
        if case == SolverCase.UNCONSTRAINED:
            assert float(sol.nu) == 0.0


@pytest.mark.parametrize("case", CASES)
def test_kkt_matrix_metric(case: SolverCase) -> None:
    gen = torch.Generator().manual_seed(200 + int(case))
    for i in range(100):
        n = 3 + i % 12
        H = random_spd(n, generator=gen)
        inst = random_instance(n=n, case=case, generator=gen, matrix=H)
        sol = solve_cpo(
            g=inst.g, a=inst.a, b=inst.b, delta=inst.delta, metric=MatrixMetric(H), normalize=False
        )
        assert sol.case == case
        _check_kkt(sol, inst.g, inst.a, inst.b, inst.delta, H=H, tol=1e-8)


def test_recovery_step_is_the_pure_cost_reduction_step() -> None:
    gen = torch.Generator().manual_seed(3)
    for i in range(200):
        n = 2 + i % 20
        inst = random_instance(n=n, case=SolverCase.RECOVERY, generator=gen)
        g, a, b, d = inst.g, inst.a, inst.b, inst.delta
        # the instance really is infeasible: the best reachable constraint value is still > 0
        assert float(b - torch.sqrt(2 * d) * a.norm()) > 0
        sol = solve_cpo(g=g, a=a, b=b, delta=d, normalize=False)
        assert sol.case == SolverCase.RECOVERY
        expected = -torch.sqrt(2 * d / (a @ a)) * a
        torch.testing.assert_close(sol.step, expected, rtol=1e-12, atol=0)
        # it does not depend on g at all
        other = solve_cpo(g=torch.randn(n, generator=gen, dtype=F64), a=a, b=b, delta=d, normalize=False)
        torch.testing.assert_close(other.step, expected, rtol=1e-12, atol=0)
        assert float(sol.lam) == pytest.approx(math.sqrt(float(a @ a) / (2 * float(d))))
        assert float(sol.nu) == 1.0


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("normalize", [False, True])
def test_central_finite_differences(case: SolverCase, normalize: bool) -> None:
    """gradcheck compares autograd's Jacobian of (x, lam, nu) w.r.t. (g, a, b, delta) with
    central finite differences."""
    gen = torch.Generator().manual_seed(300 + 2 * int(case) + int(normalize))
    for i in range(25):
        n = 3 + i % 6
        inst = random_instance(n=n, case=case, generator=gen, unit=normalize, margin=0.1)
        scale_g, scale_a = (2.5, 0.4) if normalize else (1.0, 1.0)
        inputs = tuple(
            t.clone().requires_grad_(True)
            for t in (inst.g * scale_g, inst.a * scale_a, inst.b, inst.delta)
        )

        def f(g, a, b, delta):
            sol = solve_cpo(g=g, a=a, b=b, delta=delta, normalize=normalize)
            assert sol.case == case
            return sol.step, sol.lam, sol.nu

        assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_central_finite_differences_matrix_metric() -> None:
    gen = torch.Generator().manual_seed(7)
    for case in CASES:
        for i in range(8):
            n = 4 + i % 4
            H = random_spd(n, generator=gen)
            inst = random_instance(n=n, case=case, generator=gen, matrix=H, margin=0.1)
            inputs = tuple(t.clone().requires_grad_(True) for t in (inst.g, inst.a, inst.b, inst.delta))

            def f(g, a, b, delta):
                sol = solve_cpo(g=g, a=a, b=b, delta=delta, metric=MatrixMetric(H), normalize=False)
                assert sol.case == case
                return sol.step, sol.lam, sol.nu

            assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_trpo_mode_without_constraint() -> None:
    gen = torch.Generator().manual_seed(11)
    for i in range(100):
        n = 2 + i % 30
        g = torch.randn(n, generator=gen, dtype=F64)
        d = 0.01 + 0.05 * float(torch.rand((), generator=gen, dtype=F64))
        sol = solve_cpo(g=g, a=None, b=None, delta=d, normalize=False)
        assert sol.case == SolverCase.UNCONSTRAINED
        torch.testing.assert_close(sol.step, -math.sqrt(2 * d) * g / g.norm(), rtol=1e-12, atol=0)
        assert float(sol.lam) == pytest.approx(float(g.norm()) / math.sqrt(2 * d))
        assert float(sol.nu) == 0.0
        # the same as CPO with a constraint that is far from binding
        far = solve_cpo(g=g, a=torch.ones(n, dtype=F64), b=-1e3, delta=d, normalize=False)
        torch.testing.assert_close(far.step, sol.step, rtol=1e-12, atol=0)
    H = random_spd(5, generator=gen)
    g = torch.randn(5, generator=gen, dtype=F64)
    sol = solve_cpo(g=g, a=None, b=None, delta=0.02, metric=MatrixMetric(H), normalize=False)
    w = torch.linalg.solve(H, g)
    torch.testing.assert_close(sol.step, -math.sqrt(0.04 / float(g @ w)) * w, rtol=1e-10, atol=0)


def test_normalize_scales_g_and_a_to_unit_norm_and_keeps_b() -> None:
    gen = torch.Generator().manual_seed(12)
    for case in CASES:
        for i in range(50):
            n = 2 + i % 15
            inst = random_instance(n=n, case=case, generator=gen, unit=True)
            kg, ka = 0.01 + 10 * float(torch.rand(1, generator=gen)), 0.01 + 10 * float(torch.rand(1, generator=gen))
            on = solve_cpo(g=kg * inst.g, a=ka * inst.a, b=inst.b, delta=inst.delta, normalize=True)
            ref = solve_cpo(g=inst.g, a=inst.a, b=inst.b, delta=inst.delta, normalize=False)
            assert on.case == ref.case == case
            torch.testing.assert_close(on.step, ref.step, rtol=1e-10, atol=1e-14)
            torch.testing.assert_close(on.lam, ref.lam, rtol=1e-10, atol=1e-14)
            torch.testing.assert_close(on.nu, ref.nu, rtol=1e-10, atol=1e-14)
            # without normalisation, scaling a (with b fixed) changes the problem: different step
            if case != SolverCase.UNCONSTRAINED:
                off = solve_cpo(g=inst.g, a=3.0 * inst.a, b=inst.b, delta=inst.delta, normalize=False)
                assert float((off.step - ref.step).norm()) > 1e-6
            # scaling g alone never changes the step (only lam and nu)
            sc = solve_cpo(g=kg * inst.g, a=inst.a, b=inst.b, delta=inst.delta, normalize=False)
            torch.testing.assert_close(sc.step, ref.step, rtol=1e-9, atol=1e-14)
            if case != SolverCase.RECOVERY:  # the recovery multipliers do not involve g
                torch.testing.assert_close(sc.lam, kg * ref.lam, rtol=1e-9, atol=1e-14)
                torch.testing.assert_close(sc.nu, kg * ref.nu, rtol=1e-9, atol=1e-14)


def _grads_finite(fn, *tensors) -> None:
    ts = [t.clone().requires_grad_(True) for t in tensors]
    sol = fn(*ts)
    out = sol.step.sum() + sol.lam + sol.nu
    grads = torch.autograd.grad(out, ts, allow_unused=True)
    for gr in grads:
        assert gr is None or bool(torch.isfinite(gr).all())
    assert bool(torch.isfinite(sol.step).all())


def test_degenerate_a_zero() -> None:
    g = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    a = torch.zeros(3, dtype=F64)
    trpo = solve_cpo(g=g, a=None, b=None, delta=0.02, normalize=False)
    for b in (-1.0, 0.0):
        sol = solve_cpo(g=g, a=a, b=b, delta=0.02, normalize=True)
        assert sol.case == SolverCase.UNCONSTRAINED
        torch.testing.assert_close(sol.step, trpo.step)
        assert float(sol.nu) == 0.0
    sol = solve_cpo(g=g, a=a, b=0.5, delta=0.02, normalize=True)
    assert sol.case == SolverCase.RECOVERY
    assert float(sol.step.abs().max()) == 0.0 and float(sol.lam) == 0.0 and float(sol.nu) == 0.0
    _grads_finite(lambda g, a, b: solve_cpo(g=g, a=a, b=b, delta=0.02), g, a, torch.tensor(0.5, dtype=F64))
    _grads_finite(lambda g, a, b: solve_cpo(g=g, a=a, b=b, delta=0.02), g, a, torch.tensor(-0.5, dtype=F64))


def test_degenerate_a_parallel_to_g() -> None:
    """a = c g, c > 0 (the reward step also lowers the cost): UNCONSTRAINED while feasible,
    RECOVERY (which is then the same direction) beyond; never a NaN."""
    g = torch.tensor([0.3, -1.0, 2.0, 0.1], dtype=F64)
    d = 0.02
    for c in (0.5, 1.0, 4.0):
        a = c * g
        b_max = math.sqrt(2 * d) * float(a.norm())
        for b in (-1.0, 0.0, 0.5 * b_max, 0.999 * b_max):
            sol = solve_cpo(g=g, a=a, b=b, delta=d, normalize=False)
            assert sol.case == SolverCase.UNCONSTRAINED
            torch.testing.assert_close(sol.step, -math.sqrt(2 * d) * g / g.norm())
        sol = solve_cpo(g=g, a=a, b=1.5 * b_max, delta=d, normalize=False)
        assert sol.case == SolverCase.RECOVERY
        torch.testing.assert_close(sol.step, -math.sqrt(2 * d) * g / g.norm())
        _grads_finite(lambda g, a: solve_cpo(g=g, a=a, b=0.5 * b_max, delta=d), g, a)


def test_degenerate_a_antiparallel_to_g() -> None:
    """a = -c g (every reward improvement costs): if feasible with the constraint active the
    optimal set is a whole slice; the minimum-norm point -(b/s) a is returned with lam = 0,
    nu = 1/c, and it is continuous in b towards the recovery step."""
    g = torch.tensor([0.3, -1.0, 2.0, 0.1], dtype=F64)
    d = 0.02
    for c in (0.5, 2.0):
        a = -c * g
        s = float(a @ a)
        b_max = math.sqrt(2 * d * s)
        for b in (0.0, 0.3 * b_max, 0.9 * b_max, -0.2 * b_max):
            sol = solve_cpo(g=g, a=a, b=b, delta=d, normalize=False)
            assert sol.case == SolverCase.ACTIVE
            torch.testing.assert_close(sol.step, -(b / s) * a, rtol=1e-12, atol=1e-15)
            assert float(sol.lam) == 0.0
            assert float(sol.nu) == pytest.approx(1.0 / c)
            # optimal: the objective equals the best value reachable on the constraint, g^T x = b / c
            assert float(g @ sol.step) == pytest.approx(b / c, abs=1e-12)
            _grads_finite(lambda g, a: solve_cpo(g=g, a=a, b=b, delta=d, normalize=False), g, a)
        near = solve_cpo(g=g, a=a, b=b_max * (1 - 1e-12), delta=d, normalize=False)
        rec = solve_cpo(g=g, a=a, b=b_max * (1 + 1e-12), delta=d, normalize=False)
        assert near.case == SolverCase.ACTIVE and rec.case == SolverCase.RECOVERY
        torch.testing.assert_close(near.step, rec.step, rtol=1e-6, atol=0)
    # nearly anti-parallel (tiny perpendicular part): finite, feasible, optimal up to rounding
    gen = torch.Generator().manual_seed(5)
    for scale in (1e-6, 1e-9, 1e-13):
        a = -g + scale * torch.randn(4, generator=gen, dtype=F64)
        sol = solve_cpo(g=g, a=a, b=0.05, delta=d, normalize=False)
        assert bool(torch.isfinite(sol.step).all()) and bool(torch.isfinite(sol.lam))
        assert 0.5 * float(sol.step @ sol.step) <= d * (1 + 1e-9)
        assert float(0.05 + a @ sol.step) <= 1e-9


def test_degenerate_g_zero() -> None:
    a = torch.tensor([1.0, 2.0, -1.0], dtype=F64)
    g = torch.zeros(3, dtype=F64)
    d = 0.02
    sol = solve_cpo(g=g, a=None, b=None, delta=d)
    assert float(sol.step.abs().max()) == 0.0 and float(sol.lam) == 0.0
    sol = solve_cpo(g=g, a=a, b=-0.1, delta=d)
    assert sol.case == SolverCase.UNCONSTRAINED and float(sol.step.abs().max()) == 0.0
    # feasible but violated at x = 0: the minimum-norm point of the constraint boundary
    b = 0.1
    sol = solve_cpo(g=g, a=a, b=b, delta=d, normalize=False)
    assert sol.case == SolverCase.ACTIVE
    torch.testing.assert_close(sol.step, -(b / float(a @ a)) * a)
    _grads_finite(lambda g, a: solve_cpo(g=g, a=a, b=b, delta=d), g, a)


def test_b_exactly_zero_and_case_boundaries_are_continuous() -> None:
    gen = torch.Generator().manual_seed(9)
    for i in range(100):
        n = 3 + i % 10
        g = torch.randn(n, generator=gen, dtype=F64)
        a = torch.randn(n, generator=gen, dtype=F64)
        d = 0.03
        q, r, s = float(g @ g), float(g @ a), float(a @ a)
        at0 = solve_cpo(g=g, a=a, b=0.0, delta=d, normalize=False)
        expected_case = SolverCase.UNCONSTRAINED if r >= 0 else SolverCase.ACTIVE
        assert at0.case == expected_case
        for b0 in (0.0, math.sqrt(2 * d / q) * r, math.sqrt(2 * d * s)):  # b = 0, TRPO edge, feasibility edge
            lo = solve_cpo(g=g, a=a, b=b0 - 1e-10, delta=d, normalize=False)
            hi = solve_cpo(g=g, a=a, b=b0 + 1e-10, delta=d, normalize=False)
            assert float((lo.step - hi.step).norm()) <= 1e-3 * float(lo.step.norm())
            assert bool(torch.isfinite(lo.lam)) and bool(torch.isfinite(hi.lam))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"delta": 0.0}, "delta must be > 0"),
        ({"delta": -0.1}, "delta must be > 0"),
        ({"delta": float("nan")}, "delta must be finite"),
        ({"delta": torch.tensor([0.1, 0.2])}, "delta must be a scalar"),
        ({"g": torch.tensor([1.0, float("nan"), 0.0], dtype=F64)}, "g has 1 non-finite"),
        ({"g": torch.tensor([1.0, float("inf"), 0.0], dtype=F64)}, "g has 1 non-finite"),
        ({"a": torch.tensor([1.0, float("nan"), 0.0], dtype=F64)}, "a has 1 non-finite"),
        ({"b": float("inf")}, "b must be finite"),
        ({"a": torch.ones(4, dtype=F64)}, r"a has shape \(4,\) but g has shape \(3,\)"),
        ({"a": torch.ones(3, dtype=torch.float32)}, "a has dtype/device"),
        ({"g": torch.ones(3, 1, dtype=F64)}, "g must be a non-empty flat"),
        ({"g": torch.ones(0, dtype=F64)}, "g must be a non-empty flat"),
        ({"b": None}, "a and b must both be given"),
        ({"backend": "scs"}, "unknown backend 'scs'"),
    ],
)
def test_bad_input_raises_value_error_naming_the_value(kwargs: dict, match: str) -> None:
    args = {
        "g": torch.tensor([1.0, 0.0, -1.0], dtype=F64),
        "a": torch.tensor([0.5, 1.0, 0.0], dtype=F64),
        "b": 0.1,
        "delta": 0.01,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        solve_cpo(**args)


def test_float32_inputs_stay_float32() -> None:
    gen = torch.Generator().manual_seed(1)
    for case in CASES:
        inst = random_instance(n=10, case=case, generator=gen, dtype=torch.float32, margin=0.2)
        sol = solve_cpo(g=inst.g, a=inst.a, b=inst.b, delta=inst.delta, normalize=False)
        assert sol.case == case and sol.step.dtype == torch.float32 and sol.lam.dtype == torch.float32

"""Solve and solve+VJP time of the analytic CPO step vs the cvxpylayers (dco) step.

Usage:  .venv/bin/python bench/solver.py [--sizes 1000 10000 100000] [--case active]

For each parameter size n it draws one instance in the requested case (identity metric,
float64, normalize=True as in training) and times, as the median over repetitions,
  solve      : forward only
  solve+vjp  : forward + backward of a random cotangent on the step
for three implementations side by side, with the ratios to the analytic backend:
  ana    solve_cpo(backend="analytic")
  dco    solve_cpo(backend="dco"): the seed's cvxpylayers layer. Its one-off problem build
         (cached per size) is reported separately with the process's peak memory. Sizes above
         DCO_MAX_PARAMS are refused (the DPP compilation needs O(n^2) memory), shown as n/a.
  diffcp the very same conic program and solver (SCS through diffcp, same tolerances), with
         the cone data canonicalised by cvxpy without DPP on every call: what dco costs per
         call minus the cvxpylayers parameter mapping; it also runs at n = 1e5.
The last column is the largest relative step difference to the analytic step. Timings are
medians of interleaved calls (analytic repeated several times per round).
Figures taken on a shared machine are noisy; compare ratios within one run.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from metacpo.solvers import DCO_MAX_PARAMS, DCO_SOLVER_ARGS, SolverCase, solve_cpo  # noqa: E402
from metacpo.solvers.dco import cpo_layer  # noqa: E402
from tests.solver_instances import random_instance  # noqa: E402  (the tests' instances in a chosen case)


def _interleaved_medians(fns: dict[str, Callable[[], object]], rounds: int, repeat: dict[str, int]) -> dict[str, float]:
    """Median seconds per function; calls are interleaved round by round (after two warm-up
    calls each) so that load changes on a shared machine hit every implementation alike."""
    for fn in fns.values():
        fn()
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            for _ in range(repeat.get(k, 1)):
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _diffcp_direct(g: np.ndarray, a: np.ndarray, b: float, delta: float, cot: np.ndarray, vjp: bool) -> np.ndarray:
    """The dco conic program solved by diffcp directly (non-DPP canonicalisation per call)."""
    import cvxpy as cp
    import diffcp
    from cvxpy.reductions.solvers.conic_solvers.conic_solver import dims_to_solver_dict

    n = g.size
    x = cp.Variable(n)
    problem = cp.Problem(cp.Minimize(g @ x), [0.5 * cp.sum_squares(x) <= delta, b + a @ x <= 0])
    data, _, _ = problem.get_problem_data(cp.SCS)
    xs, y, s, _, adjoint = diffcp.solve_and_derivative(
        data["A"], data["b"], data["c"], dims_to_solver_dict(data["dims"]), **DCO_SOLVER_ARGS
    )
    step = xs[:n]  # x is the only cvxpy variable, first in the solver's variable vector
    if vjp:
        dx = np.zeros_like(xs)
        dx[:n] = cot
        adjoint(dx, np.zeros_like(y), np.zeros_like(s))
    return step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--case", choices=["unconstrained", "active"], default="active")
    parser.add_argument("--analytic-reps", type=int, default=40)
    parser.add_argument("--dco-reps", type=int, nargs="+", default=[10, 5, 2],
                        help="repetitions per size for dco and diffcp (the last value repeats)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: like SCS, and steadier on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    case = SolverCase[args.case.upper()]
    gen = torch.Generator().manual_seed(args.seed)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, case {case.name}, "
          f"float64, normalize=True, SCS {DCO_SOLVER_ARGS}")
    header = (
        f"{'n':>7} | {'dco build':>17} | {'solve: ana':>10} {'dco':>9} {'diffcp':>9} {'dco/ana':>8} {'dfc/ana':>8} | "
        f"{'s+vjp: ana':>10} {'dco':>9} {'diffcp':>9} {'dco/ana':>8} {'dfc/ana':>8} | {'max rel diff':>12}"
    )
    print(header)
    print("-" * len(header))
    for k, n in enumerate(args.sizes):
        reps = args.dco_reps[min(k, len(args.dco_reps) - 1)]
        inst = random_instance(n=n, case=case, generator=gen, unit=True)
        cot = torch.randn(n, generator=gen, dtype=torch.float64)
        b, delta = float(inst.b), float(inst.delta)
        g_np, a_np, cot_np = inst.g.numpy(), inst.a.numpy(), cot.numpy()

        def run(backend: str, vjp: bool) -> torch.Tensor:
            ts = [t.clone().requires_grad_(vjp) for t in (inst.g, inst.a, inst.b, inst.delta)]
            sol = solve_cpo(g=ts[0], a=ts[1], b=ts[2], delta=ts[3], backend=backend)
            if vjp:
                torch.autograd.grad(cot @ sol.step, ts, allow_unused=True)
            return sol.step.detach()

        fns: dict[str, Callable[[], object]] = {
            "ana_s": lambda: run("analytic", False),
            "ana_v": lambda: run("analytic", True),
            "dfc_s": lambda: _diffcp_direct(g_np, a_np, b, delta, cot_np, False),
            "dfc_v": lambda: _diffcp_direct(g_np, a_np, b, delta, cot_np, True),
        }
        x_ana = run("analytic", False)
        diffs = [float(np.linalg.norm(_diffcp_direct(g_np, a_np, b, delta, cot_np, False) - x_ana.numpy())
                       / x_ana.norm())]
        build = "n/a (> max n)"
        if n <= DCO_MAX_PARAMS:
            t0 = time.perf_counter()
            cpo_layer(n)
            build = f"{time.perf_counter() - t0:6.1f}s {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:5.1f}GB"
            fns["dco_s"] = lambda: run("dco", False)
            fns["dco_v"] = lambda: run("dco", True)
            diffs.append(float((run("dco", False) - x_ana).norm() / x_ana.norm()))
        per_round = max(1, args.analytic_reps // reps)
        med = _interleaved_medians(fns, reps, {"ana_s": per_round, "ana_v": per_round})
        ana_s, ana_v, dfc_s, dfc_v = med["ana_s"], med["ana_v"], med["dfc_s"], med["dfc_v"]
        if "dco_s" in med:
            dco_s, dco_v = med["dco_s"], med["dco_v"]
            dco_cols = (f"{dco_s * 1e3:>7.1f}ms", f"{dco_s / ana_s:>7.0f}x", f"{dco_v * 1e3:>7.1f}ms", f"{dco_v / ana_v:>7.0f}x")
        else:
            dco_cols = (f"{'n/a':>9}", f"{'n/a':>8}", f"{'n/a':>9}", f"{'n/a':>8}")
        print(
            f"{n:>7} | {build:>17} | {ana_s * 1e3:>8.3f}ms {dco_cols[0]} {dfc_s * 1e3:>7.1f}ms {dco_cols[1]} "
            f"{dfc_s / ana_s:>7.0f}x | {ana_v * 1e3:>8.3f}ms {dco_cols[2]} {dfc_v * 1e3:>7.1f}ms {dco_cols[3]} "
            f"{dfc_v / ana_v:>7.0f}x | {max(diffs):>12.1e}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

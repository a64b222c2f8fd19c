"""Cost of the exact-Fisher meta-gradient (``meta.fisher_exact=true``) against the constant-H one.

Synthetic batches (no environment; obs 28, act 2 as PointStcircle, 3000 transitions per batch,
the batches of ``bench/meta_update.py``), meta_batch_size 3, CPO inner steps with the Fisher
metric (CG 10 iterations, damping 0.1 -- the ``update`` defaults), inner_steps 1 and 3, policies
(24, 12) and (64, 64). Per row, side by side in one process, best of ``--repeats``:

* ``const s``: inner adaptation with the graph kept + G and A, H constant on the backward path;
* ``exact s``: the same with :class:`metacpo.solvers.ExactFisherMetric` (dH/dtheta kept);
* ``ratio``: exact / const;
* ``|dG|/|G|``: relative difference of the two reward meta-gradients (what the constant-H
  treatment drops, on these synthetic batches; each batch is drawn at the parameters it adapts,
  so both paths take the same inner steps).

Usage: python bench/fisher_exact.py [--repeats 2] [--n 3000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import meta_update  # noqa: E402  (the synthetic batches of bench/meta_update.py)

from metacpo.algorithms.meta_cpo import inner_fisher_metric_fn, surrogate_objective  # noqa: E402
from metacpo.functional.params import num_params, params_of  # noqa: E402
from metacpo.meta.core import StepRule, inner_step, meta_gradient, meta_parameters  # noqa: E402
from metacpo.models.policy import GaussianMLPPolicy, PolicySpec  # noqa: E402

SIZES = ((24, 12), (64, 64))


def one(policy, theta, *, exact: bool, steps: int):
    """Seconds of the adaptation + G, A (batch generation excluded), and the meta-gradient.

    Each batch is drawn at the parameters it adapts (as in the sampling loop), so the behaviour
    policy's KL Hessian of the constant path and the exact path's Fisher coincide in value."""
    obj = surrogate_objective(policy)
    rule = StepRule(delta=0.01, normalize=False)
    metric_fn = inner_fisher_metric_fn(policy, cg_iters=10, damping=0.1, exact=exact)
    spent = 0.0
    adapted, post = [], []
    for i in range(meta_update.TASKS):
        p = dict(theta)
        for k in range(steps):
            data = meta_update.batch(policy, {n: v.detach() for n, v in p.items()}, 100 * i + k)
            t = time.perf_counter()
            p, _ = inner_step(p, data, objective=obj, rule=rule, cost_limit=25.0, metric_fn=metric_fn)
            spent += time.perf_counter() - t
        adapted.append(p)
        post.append(meta_update.batch(policy, {n: v.detach() for n, v in p.items()}, 100 * i + 99))
    t = time.perf_counter()
    mg = meta_gradient(theta, adapted, post, objective=obj, cost_limit=25.0)
    return spent + time.perf_counter() - t, mg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2, help="timings per row (the best is printed)")
    ap.add_argument("--n", type=int, default=3000, help="transitions per batch")
    args = ap.parse_args()
    meta_update.N = args.n
    torch.set_num_threads(1)
    print(f"torch threads 1, load average {os.getloadavg()[0]:.1f}, {args.n} transitions per batch, 3 tasks")
    print(f"{'params':>7} {'inner':>5} {'const s':>8} {'exact s':>8} {'ratio':>6} {'|dG|/|G|':>9}")
    for hidden in SIZES:
        torch.manual_seed(0)
        policy = GaussianMLPPolicy(PolicySpec(obs_dim=meta_update.OBS, act_dim=meta_update.ACT, hidden=hidden))
        theta = meta_parameters(params_of(policy))
        for steps in (1, 3):
            tc = te = float("inf")
            for _ in range(args.repeats):
                t, mg_c = one(policy, theta, exact=False, steps=steps)
                tc = min(tc, t)
                t, mg_e = one(policy, theta, exact=True, steps=steps)
                te = min(te, t)
            rel = float((mg_e.G - mg_c.G).norm() / mg_e.G.norm())
            print(f"{num_params(theta):>7} {steps:>5} {tc:>8.3f} {te:>8.3f} {te / tc:>6.2f} {rel:>9.3f}")


if __name__ == "__main__":
    main()

"""Diagnostic: how noisy are CPO's gradient estimates g and a at a trained policy?

Samples several independent batches with a run's policy and prints |g|, |a|, the pairwise cosines
cos(a_i, a_j) and cos(g_i, g_j) across batches, and cos(g, a) within each batch. For independent
estimates a_i = a + n_i, E[cos(a_i, a_j)] ~ |a|^2 / (|a|^2 + E|n|^2). That fraction only bounds
the error of the cost-reduction part of a CPO step. It understates the harm when cos(g, a) is
near -1: the reward part of the step lies in the plane orthogonal to the *estimated* a, which
then contains the estimation error n, and the step exploits it; tools/cost_prediction_check.py
measures that effect directly (docs/results.md, CPO section; metacpo/algorithms/margin.py).

    python tools/cost_gradient_snr.py RUN_DIR [--env-id ID] [--batches 4] [--steps 4000]
"""

from __future__ import annotations

import argparse
import itertools

from _trained_run import load_trained_run

from metacpo.algorithms.common import process_batch, surrogate_losses
from metacpo.functional import flat_grad, params_of
from metacpo.samplers import LocalSampler, PolicySnapshot


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--env-id", default=None, help="env to sample (default: the run's)")
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=123)
    args = ap.parse_args()
    run = load_trained_run(args.run_dir, env_id=args.env_id)
    cfg, pol = run.config, run.policy
    snap = PolicySnapshot.from_policy(pol, run.obs_norm)
    grads = []
    with LocalSampler(run.env_id, seed=args.seed) as sampler:
        for k in range(args.batches):
            (b,) = sampler.sample(snapshot=snap, num_steps=args.steps)
            params = params_of(pol)
            pb = process_batch(b, policy=pol, params=params, critic_r=run.critic_r, critic_c=run.critic_c,
                               obs_norm=run.obs_norm, gamma=cfg.advantage.gamma, lam=cfg.advantage.lam,
                               cost_gamma=cfg.advantage.cost_gamma, cost_lam=cfg.advantage.cost_lam, cost_adv_gamma=cfg.advantage.cost_adv_gamma)
            loss_r, loss_c = surrogate_losses(pol, params, pb)
            a = flat_grad(loss_c, params, retain_graph=True)
            g = flat_grad(loss_r, params)
            grads.append((g, a))
            print(f"batch {k}: episode cost {b.episode_costs.mean():.1f}  |g| {float(g.norm()):.4g}  |a| {float(a.norm()):.4g}")

    def cos(x, y):  # noqa: ANN001, ANN202
        return float(x @ y / (x.norm() * y.norm()))

    ca = [cos(grads[i][1], grads[j][1]) for i, j in itertools.combinations(range(len(grads)), 2)]
    cg = [cos(grads[i][0], grads[j][0]) for i, j in itertools.combinations(range(len(grads)), 2)]
    print(f"cos(a_i, a_j) across batches: mean {sum(ca) / len(ca):.3f} (min {min(ca):.3f}, max {max(ca):.3f})")
    print(f"cos(g_i, g_j) across batches: mean {sum(cg) / len(cg):.3f} (min {min(cg):.3f}, max {max(cg):.3f})")
    print("cos(g, a) within batches:", ", ".join(f"{cos(g, a):.3f}" for g, a in grads))


if __name__ == "__main__":
    main()

"""Diagnostic: does the CPO step change the real episode cost as the cost surrogate predicts?

Loads a CPO run's final state, then ``--trials`` times: samples one training batch, computes the
CPO step exactly as training does (:func:`metacpo.algorithms.cpo.trust_region_update`), and
measures the stochastic policy's mean episode cost with ``--eval-steps`` environment steps at
``theta``, ``theta + x`` and ``theta - x`` (``x`` = the accepted step), with common random numbers
(the sampler's generators are reset before each evaluation, so the three evaluations see the same
episode seeds and noise streams). Prints per trial:

* ``pred``: the accepted step's cost-surrogate change ``loss_c(theta + x) - loss_c(theta)`` (what
  the line search tested against ``-b``) and its linear part ``a^T x``;
* ``actual+`` / ``actual-``: measured ``J(theta +- x) - J(theta)``;
* ``lin = (actual+ - actual-) / 2`` (the real first-order change along ``x``) and
  ``quad = (actual+ + actual-) / 2`` (the real second-order change, ``~ 1/2 x^T H_J x``).

``lin`` far from ``a^T x`` means the surrogate's gradient is biased; ``quad`` of the order of the
gap means curvature the linearisation drops.

    python tools/cost_prediction_check.py RUN_DIR [--trials 4] [--eval-steps 100000] [--workers 2]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _trained_run import load_trained_run

from metacpo.algorithms.common import process_batch, surrogate_losses
from metacpo.algorithms.cpo import trust_region_update
from metacpo.functional import flat_grad, flatten, params_of
from metacpo.functional.params import add_flat
from metacpo.samplers import PolicySnapshot, ProcessSampler


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--env-id", default=None, help="env to sample (default: the run's)")
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--batch-steps", type=int, default=None, help="training batch (default: the run's)")
    ap.add_argument("--eval-steps", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=321)
    args = ap.parse_args()
    run = load_trained_run(args.run_dir, env_id=args.env_id)
    cfg, pol, obs_norm, env_id = run.config, run.policy, run.obs_norm, run.env_id
    critics = (run.critic_r, run.critic_c)
    batch_steps = args.batch_steps or cfg.sampler.steps_per_iter
    theta = params_of(pol, detach=True)
    rows = []
    with ProcessSampler(env_id, seed=args.seed, num_workers=args.workers) as train_s, \
            ProcessSampler(env_id, seed=args.seed + 1, num_workers=args.workers) as eval_s:

        def sample_at(params: dict[str, torch.Tensor], state: dict):  # noqa: ANN202
            eval_s.load_state_dict(state)
            (b,) = eval_s.sample(snapshot=PolicySnapshot.from_policy(pol, obs_norm, params=params),
                                 num_steps=args.eval_steps)
            return b

        def cost_of(params: dict[str, torch.Tensor], state: dict) -> tuple[float, float]:
            b = sample_at(params, state)
            return float(b.episode_costs.mean()), float(b.episode_returns.mean())

        def cost_grad(batch) -> torch.Tensor:  # noqa: ANN001
            pb = process(batch)
            leaf = {k: v.detach().requires_grad_(True) for k, v in theta.items()}
            _, loss_c = surrogate_losses(pol, leaf, pb)
            return flat_grad(loss_c, leaf).detach()

        def process(batch):  # noqa: ANN001, ANN202
            return process_batch(batch, policy=pol, params=theta, critic_r=critics[0], critic_c=critics[1],
                                 obs_norm=obs_norm, gamma=cfg.advantage.gamma, lam=cfg.advantage.lam,
                                 cost_gamma=cfg.advantage.cost_gamma, cost_lam=cfg.advantage.cost_lam, cost_adv_gamma=cfg.advantage.cost_adv_gamma,
                                 normalize_adv_r=cfg.advantage.normalize_adv_r,
                                 center_adv_c=cfg.advantage.center_adv_c)

        # The cost gradient from one large batch (eval-steps) at theta: the reference for a^T x.
        a_big = cost_grad(sample_at(theta, eval_s.state_dict()))

        for t in range(args.trials):
            (batch,) = train_s.sample(snapshot=PolicySnapshot.from_policy(pol, obs_norm, params=theta),
                                      num_steps=batch_steps)
            pb = process(batch)
            a_small = cost_grad(batch)
            # Plain CPO's step (target d): the margin is what this tool motivates, so it is left out.
            new, us = trust_region_update(policy=pol, params=theta, processed=pb, settings=cfg.update,
                                          constrained=True, cost_target=cfg.constraint.cost_limit)
            x = flatten(new) - flatten(theta)
            back = add_flat(theta, -x)
            state = eval_s.state_dict()
            j0, r0 = cost_of(theta, state)
            jp, rp = cost_of(new, state)
            jm, rm = cost_of(back, state)
            pred = us.loss_c_after - us.loss_c_before
            xd = x.to(a_big.dtype)
            row = dict(jc_batch=pb.j_c, b=us.b, case=us.case, frac=us.ls_fraction, pred=pred, j0=j0,
                       dp=jp - j0, dm=jm - j0, lin=(jp - jm) / 2, quad=(jp + jm) / 2 - j0, dr=rp - r0,
                       ax_small=float(a_small @ xd), ax_big=float(a_big @ xd))
            rows.append(row)
            print(f"trial {t}: batch J_C {pb.j_c:.1f} b {us.b:+.1f} {us.case} frac {us.ls_fraction:.2f} | "
                  f"pred {pred:+.2f} | J(theta) {j0:.2f} actual+ {jp - j0:+.2f} actual- {jm - j0:+.2f} "
                  f"lin {row['lin']:+.2f} quad {row['quad']:+.2f} | a^T x {row['ax_small']:+.2f} a_big^T x "
                  f"{row['ax_big']:+.2f} | return change {rp - r0:+.2f}", flush=True)
    keys = ("pred", "ax_small", "ax_big", "dp", "dm", "lin", "quad", "dr")
    print("mean over trials: " + "  ".join(f"{k} {np.mean([r[k] for r in rows]):+.2f}" for k in keys))


if __name__ == "__main__":
    main()

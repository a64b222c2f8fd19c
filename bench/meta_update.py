"""Cost of one Meta-CPO meta-gradient, against the per-parameter-backward approach, and the
split of a default meta-iteration on SafetyPointStcircle1-v0.

Part 1 (synthetic, no environment): policies of ~1e3, 1e4 and 1e5 parameters (obs 28, act 2
as PointStcircle), meta_batch_size 3, 3000 transitions per batch, inner_steps 1 and 3, second
order through analytic CPO steps. Printed per row:

* ``meta-grad s``: inner adaptation with the graph kept + G and A (one backward each);
* ``backward s``: one plain backward pass of the surrogate on one 3000-transition batch;
* ``ratio``: meta-gradient time in units of that backward pass, and ``/batch``: the same per
  batch the meta-gradient touches (tasks x (inner_steps + 1) batches of 3000);
* ``per-param s (extrap.)``: the per-parameter-backward approach (one backward pass through the
  adaptation per meta-parameter per task, as the reference implementation does): a few hundred
  such passes are TIMED and the total is EXTRAPOLATED linearly to all parameters x tasks;
* ``speed-up``: per-parameter time / meta-gradient time.

Part 2: two meta-iterations of Meta-CPO with the defaults (3 tasks, 3 inner steps, 3000-step
batches per task, a (24, 12) policy = 1,024 parameters, process sampler with one worker per
core); the second one's split is printed (sampling vs inner updates vs meta-gradient vs outer
step vs critic fitting).

``--envs-per-worker 1 2`` runs part 2 with the default sampler and with ``sampler.envs_per_worker=2``
(3 tasks balanced over 2 workers, envs stepped in lockstep; other batches from the same
distribution), one after the other in the same run.

Measured on an idle machine (part 2, 8d661f3, ``--skip-synthetic --iters 3 --planned
--envs-per-worker 1 3``): 1.42-1.43 s per default meta-iteration (sampling 1.03 s, critic fit +
normaliser 0.18 s, update 0.21 s); 1.67-1.89 s with ``spread_episodes=false``; 1.36-1.42 s with
envs_per_worker=3 (docs/results.md "Speed figures").

``--planned`` runs part 2 also with ``sampler.spread_episodes=false`` (the jobs as planned, one
worker with two thirds of the steps; the same batches), right after the default.

Usage: python bench/meta_update.py [--skip-env] [--skip-synthetic] [--probe 200] [--iters 3]
       [--envs-per-worker 1 2] [--planned]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from metacpo.algorithms.common import ProcessedBatch, RolloutStats, surrogate_losses
from metacpo.algorithms.meta_cpo import surrogate_objective
from metacpo.functional.params import flat_grad, flatten, num_params, params_of
from metacpo.meta.core import StepRule, inner_step, meta_gradient, meta_parameters
from metacpo.models.policy import GaussianMLPPolicy, PolicySpec

OBS, ACT, N, TASKS = 28, 2, 3000, 3
SIZES = {"1e3": (24, 12), "1e4": (100, 64), "1e5": (320, 280)}


def batch(policy: GaussianMLPPolicy, params, seed: int) -> ProcessedBatch:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(N, OBS, generator=g)
    with torch.no_grad():
        dist = policy.distribution(obs, params)
        act = dist.mean + dist.stddev * torch.randn(dist.mean.shape, generator=g)
        lp = dist.log_prob(act).sum(-1)
    adv_r = torch.randn(N, generator=g) + act[:, 0]
    adv_c = torch.randn(N, generator=g) + act[:, 1]
    adv_c = adv_c - adv_c.mean()
    st = RolloutStats(num_steps=N, num_episodes=6, ep_return_mean=0.0, ep_return_std=0.0, ep_cost_mean=20.0,
                      ep_cost_std=0.0, ep_len_mean=500.0, j_c=20.0)
    return ProcessedBatch(obs=obs, actions=act, old_log_probs=lp, old_mean=dist.mean, old_log_std=dist.stddev.log(),
                          adv_r=adv_r, adv_c=adv_c, target_r=adv_r, target_c=adv_c, obs_c=obs, j_c=20.0, cost_scale=500.0,
                          behaviour_logp_gap=0.0, rollout=st)


def adapted_params(policy, theta, data, inner_steps, rule):
    out = []
    for i in range(TASKS):
        p = dict(theta)
        for k in range(inner_steps):
            p, _ = inner_step(p, data[i][k], objective=surrogate_objective(policy), rule=rule, cost_limit=25.0)
        out.append(p)
    return out


def synthetic(probe: int) -> None:
    print("Part 1: one meta-gradient (second order, analytic CPO steps, meta_batch_size 3, batch 3000)")
    print(f"{'params':>8} {'inner':>5} {'meta-grad s':>12} {'backward s':>11} {'ratio':>7} {'/batch':>7} "
          f"{'per-param s (extrap.)':>22} {'speed-up':>9}")
    rule = StepRule(delta=0.02)
    for _name, hidden in SIZES.items():
        torch.manual_seed(0)
        policy = GaussianMLPPolicy(PolicySpec(obs_dim=OBS, act_dim=ACT, hidden=hidden))
        theta = meta_parameters(params_of(policy))
        P = num_params(theta)
        det = {k: v.detach() for k, v in theta.items()}
        for inner_steps in (1, 3):
            data = [[batch(policy, det, 100 * i + k) for k in range(inner_steps)] for i in range(TASKS)]
            post = [batch(policy, det, 100 * i + 99) for i in range(TASKS)]
            # one plain backward pass (the unit)
            tb = []
            for _ in range(3):
                leaf = meta_parameters(det)
                t = time.perf_counter()
                lr, _ = surrogate_losses(policy, leaf, post[0])
                flat_grad(lr, leaf)
                tb.append(time.perf_counter() - t)
            t_back = min(tb)
            # the meta-gradient (adaptation with graph + G and A)
            tm = []
            for _ in range(2):
                t = time.perf_counter()
                ad = adapted_params(policy, theta, data, inner_steps, rule)
                mg = meta_gradient(theta, ad, post, objective=surrogate_objective(policy), cost_limit=25.0)
                tm.append(time.perf_counter() - t)
                assert torch.isfinite(mg.G).all()
            t_meta = min(tm)
            # per-parameter approach: one backward through the adaptation per parameter per task
            ad = adapted_params(policy, theta, data, inner_steps, rule)
            flat0 = flatten(ad[0])
            n = min(probe, P)
            t = time.perf_counter()
            for j in range(n):
                torch.autograd.grad(flat0[j], list(theta.values()), retain_graph=True, allow_unused=True)
            per_call = (time.perf_counter() - t) / n
            t_pp = per_call * P * TASKS
            per_batch = t_meta / t_back / (TASKS * (inner_steps + 1))
            print(f"{P:>8} {inner_steps:>5} {t_meta:>12.3f} {t_back:>11.4f} {t_meta / t_back:>7.1f} {per_batch:>7.1f} "
                  f"{t_pp:>15.1f} ({n} timed) {t_pp / t_meta:>8.0f}x")
    print("(per-param column: measured per-pass time x parameters x tasks -- an extrapolation)")


def env_split(iters: int, envs_per_worker: int = 1, spread: bool = True) -> None:
    from metacpo.algorithms.meta_cpo import build_meta_cpo
    from metacpo.config.schema import TrainConfig
    from metacpo.samplers import env_info
    from metacpo.training import build_sampler

    cfg = TrainConfig.from_dict({
        "algo": "meta-cpo", "env": {"env_id": "SafetyPointStcircle1-v0"},
        "policy": {"hidden": [24, 12]}, "sampler": {"kind": "process", "steps_per_iter": 3000,
                                                              "envs_per_worker": envs_per_worker,
                                                              "spread_episodes": spread},
        "meta": {"meta_batch_size": 3, "inner_steps": 3},
    })
    info = env_info(cfg.env.env_id)
    obs_dim, act_dim = info.obs_dim, info.act_dim
    sampler = build_sampler(cfg)
    try:
        algo = build_meta_cpo(cfg, sampler=sampler, obs_dim=obs_dim, act_dim=act_dim)
        P = num_params(params_of(algo.agent.policy))
        print(f"\nPart 2: default meta-iteration on {cfg.env.env_id}: 3 tasks x (3 inner + 1 post) x 3000 steps, "
              f"{P}-parameter policy, {sampler.num_workers} sampler workers, sampler.envs_per_worker={envs_per_worker}, "
              f"sampler.spread_episodes={spread}")
        for it in range(iters):
            t = time.perf_counter()
            st = algo.iterate(it)
            total = time.perf_counter() - t
            update = st.inner_seconds + st.meta_grad_seconds + st.outer_seconds
            print(f"iteration {it}: total {total:.2f} s | sampling {st.sample_seconds:.2f} s | "
                  f"inner updates {st.inner_seconds:.2f} s | meta-gradient {st.meta_grad_seconds:.3f} s | "
                  f"outer step + line search {st.outer_seconds:.2f} s | critic fit + normaliser "
                  f"{st.critic_seconds:.2f} s | update (inner+meta-grad+outer) {update:.2f} s | "
                  f"env steps {st.iter_env_steps}")
    finally:
        sampler.close()
    print("(the first iteration includes worker start-up; read the last one)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-env", action="store_true", help="skip part 2 (environment meta-iterations)")
    ap.add_argument("--skip-synthetic", action="store_true", help="skip part 1")
    ap.add_argument("--probe", type=int, default=200, help="per-parameter backward passes actually timed")
    ap.add_argument("--iters", type=int, default=2, help="meta-iterations in part 2")
    ap.add_argument("--envs-per-worker", type=int, nargs="+", default=[1],
                    help="part 2 once per value of sampler.envs_per_worker (e.g. 1 2: default and balanced)")
    ap.add_argument("--planned", action="store_true",
                    help="also run part 2 with sampler.spread_episodes=false (the same batches, unbalanced)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (timings scale with it)")
    if not args.skip_synthetic:
        synthetic(args.probe)
    if not args.skip_env:
        for k in args.envs_per_worker:
            for spread in (True, False) if args.planned else (True,):
                env_split(args.iters, k, spread)
                print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

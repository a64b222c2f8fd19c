"""Critic fitting of a default Meta-CPO iteration: time and value quality, old vs new settings,
side by side on the same batches in one run.

A short default Meta-CPO run on SafetyPointStcircle1-v0 (3 tasks x (3 inner + 1 post) x 3000
steps = 36,000 samples per meta-iteration, (24, 12) policy, (64, 64) critics, critic_epochs 1)
is trained with the old setting (each critic fitted on its own, minibatch 128, lr 1e-3) and, at
every meta-iteration, the critics' weights before the fit and the fit's inputs and targets are
recorded. Then, for every recorded iteration k and every setting, the critics are reset to their
weights before fit k, fitted on iteration k's data (timed), and judged on the HELD-OUT samples of
iteration k+1 (the next iteration's batches, which the fitted critics serve): mean squared error
against its TD(lambda) targets and explained variance ``1 - Var(target - V) / Var(target)``, for
the reward and the cost critic. Each setting is fitted with ``--repeats`` minibatch orders.

Printed per setting: fit seconds (sum over iterations and repeats), time ratio old/setting,
held-out MSE and explained variance (mean over iterations and repeats) for each critic, and the
MSE ratio setting/old (< 1: better). The next iteration's targets were computed with the old
setting's critic (as the run used it); every setting is judged against the same targets.

Usage: python bench/critic_fit.py [--iters 5] [--repeats 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from dataclasses import dataclass

import torch

from metacpo.algorithms.common import fit_critics


@dataclass(frozen=True)
class Setting:
    name: str
    fused: bool
    minibatch_size: int
    lr: float
    epochs: int = 1


SETTINGS = (
    Setting("old: separate, mb 128, lr 1e-3", False, 128, 1e-3),
    Setting("fused, mb 128, lr 1e-3", True, 128, 1e-3),
    Setting("fused, mb 256, lr 1.4e-3", True, 256, 1.4e-3),
    Setting("fused, mb 256, lr 2e-3", True, 256, 2e-3),
    Setting("fused, mb 512, lr 2.8e-3", True, 512, 2.8e-3),
    Setting("separate, mb 256, lr 1.4e-3", False, 256, 1.4e-3),
)


def record(iters: int) -> list[dict]:
    """Run ``iters`` default meta-iterations (old setting); return what each critic fit saw."""
    from metacpo.algorithms.meta_cpo import build_meta_cpo
    from metacpo.config.schema import TrainConfig
    from metacpo.samplers import env_info
    from metacpo.training import build_sampler

    cfg = TrainConfig.from_dict({
        "algo": "meta-cpo", "env": {"env_id": "SafetyPointStcircle1-v0"},
        "policy": {"hidden": [24, 12]}, "sampler": {"kind": "process", "steps_per_iter": 3000},
        "meta": {"meta_batch_size": 3, "inner_steps": 3}, "critic": {"fused": False},
    })
    info = env_info(cfg.env.env_id)
    obs_dim, act_dim = info.obs_dim, info.act_dim
    sampler = build_sampler(cfg)
    recs: list[dict] = []
    try:
        algo = build_meta_cpo(cfg, sampler=sampler, obs_dim=obs_dim, act_dim=act_dim)
        original = algo._fit_critics

        def recording(processed):  # the run's own fit, with its inputs and starting weights kept
            recs.append({
                "critic_r": copy.deepcopy(algo.agent.critic_r), "critic_c": copy.deepcopy(algo.agent.critic_c),
                "obs": torch.cat([p.obs for p in processed]), "obs_c": torch.cat([p.obs_c for p in processed]),
                "target_r": torch.cat([p.target_r for p in processed]),
                "target_c": torch.cat([p.target_c for p in processed]),
            })
            original(processed)

        algo._fit_critics = recording  # type: ignore[method-assign]
        for it in range(iters):
            t = time.perf_counter()
            algo.iterate(it)
            print(f"  recorded meta-iteration {it} ({time.perf_counter() - t:.1f} s, {len(recs[-1]['obs'])} samples)")
    finally:
        sampler.close()
    return recs


def quality(critic: torch.nn.Module, obs: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    with torch.no_grad():
        v = critic(obs)
    mse = float(((v - target) ** 2).mean())
    ev = 1.0 - float((target - v).var() / target.var())
    return mse, ev


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=5, help="meta-iterations recorded (iters-1 are judged)")
    ap.add_argument("--repeats", type=int, default=2, help="minibatch orders per setting and iteration")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (the learner's default is 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; torch threads {args.threads}")
    recs = record(args.iters)
    rows = []
    for s in SETTINGS:
        secs, q = 0.0, {"r": [], "c": []}
        for k in range(len(recs) - 1):
            cur, nxt = recs[k], recs[k + 1]
            for rep in range(args.repeats):
                cr, cc = copy.deepcopy(cur["critic_r"]), copy.deepcopy(cur["critic_c"])
                gen = torch.Generator().manual_seed(1000 * k + rep)
                t = time.perf_counter()
                fit_critics([(cr, cur["obs"], cur["target_r"]), (cc, cur["obs_c"], cur["target_c"])],
                            optimizer="adam", lr=s.lr, iters=s.epochs, minibatch_size=s.minibatch_size,
                            generator=gen, fused=s.fused)
                secs += time.perf_counter() - t
                q["r"].append(quality(cr, nxt["obs"], nxt["target_r"]))
                q["c"].append(quality(cc, nxt["obs_c"], nxt["target_c"]))
        mean = {key: tuple(sum(x[i] for x in v) / len(v) for i in range(2)) for key, v in q.items()}
        rows.append((s, secs, mean))
    base_s, base_q = rows[0][1], rows[0][2]
    print(f"\nheld-out = the next meta-iteration's samples; {len(recs) - 1} fits x {args.repeats} orders per setting")
    print(f"{'setting':32s} {'fit s':>7s} {'speed-up':>8s} {'MSE_r':>9s} {'EV_r':>6s} {'MSE_c':>9s} {'EV_c':>6s} "
          f"{'MSE_r/old':>9s} {'MSE_c/old':>9s}")
    for s, secs, m in rows:
        print(f"{s.name:32s} {secs:7.2f} {base_s / secs:7.2f}x {m['r'][0]:9.4f} {m['r'][1]:6.3f} {m['c'][0]:9.3f} "
              f"{m['c'][1]:6.3f} {m['r'][0] / base_q['r'][0]:9.3f} {m['c'][0] / base_q['c'][0]:9.3f}")
    print("(fit s: critic fitting only, both critics; ratios from this one run)")


if __name__ == "__main__":
    main()

"""Peak memory of a default Meta-CPO run: the driver and its sampler worker processes.

Runs ``--iters`` default meta-iterations on SafetyPointStcircle1-v0 (3 tasks, 3 inner steps,
3000 steps per task and round, (24, 12) policy, process sampler with one worker per core), closes
the sampler (so its workers are reaped) and prints ``resource.getrusage`` peak resident set
sizes: the driver's own (RUSAGE_SELF) and the largest worker's (RUSAGE_CHILDREN: the biggest of
the reaped children), with their sum as an upper bound of the run's peak. Goal (issue 15): < 2 GB.

Usage: python bench/memory.py [--iters 3]
"""

from __future__ import annotations

import argparse
import resource
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=3)
    args = ap.parse_args()
    import torch

    from metacpo.algorithms.meta_cpo import build_meta_cpo
    from metacpo.config.schema import TrainConfig
    from metacpo.samplers import env_info
    from metacpo.training import build_sampler

    torch.set_num_threads(1)
    cfg = TrainConfig.from_dict({
        "algo": "meta-cpo", "env": {"env_id": "SafetyPointStcircle1-v0"},
        "policy": {"hidden": [24, 12]}, "sampler": {"kind": "process", "steps_per_iter": 3000},
        "meta": {"meta_batch_size": 3, "inner_steps": 3},
    })
    info = env_info(cfg.env.env_id)
    obs_dim, act_dim = info.obs_dim, info.act_dim
    sampler = build_sampler(cfg)
    workers = sampler.num_workers
    try:
        algo = build_meta_cpo(cfg, sampler=sampler, obs_dim=obs_dim, act_dim=act_dim)
        for it in range(args.iters):
            t = time.perf_counter()
            st = algo.iterate(it)
            print(f"meta-iteration {it}: {time.perf_counter() - t:.1f} s, {st.iter_env_steps} env steps")
    finally:
        sampler.close()
    mib = 1024.0  # ru_maxrss is in KiB on Linux
    driver = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / mib
    worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / mib
    print(f"peak RSS: driver {driver:.0f} MiB, largest of {workers} workers {worker:.0f} MiB; "
          f"driver + {workers} x worker <= {driver + workers * worker:.0f} MiB (goal < 2048 MiB)")


if __name__ == "__main__":
    main()

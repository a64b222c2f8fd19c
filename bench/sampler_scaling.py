"""Sampler scaling: steps/s of the local, process and Ray backends with 1 and 2 workers.

All samplers are built first and then timed in interleaved rounds (one sample() call per sampler
per round, after one warm-up call each), so a load change on a shared machine hits every backend
alike. One call samples ``--tasks`` tasks x ``--steps`` steps each with a (64, 64) policy, like a
meta-iteration's pre-adaptation round. Reference: the plain env step rate (random actions, no
policy, one process, resets included).

Besides wall-clock steps/s, the CPU cost per step is shown (steps per CPU-second of the driver
plus the workers, from /proc; Ray's own daemons not counted): on a machine shared with other
work, wall-clock scaling is capped by the cores left free, while the CPU cost shows whether a
backend adds per-step overhead.

Printed ratios and the targets of issue 5 (on a 2-core machine):

- process 2w / process 1w        target >= 1.8
- ray 2w / process 2w            target >= 0.91 (Ray costs at most 10% over process)
- ray 1w / process 1w
- local 1w / plain env           (policy + bookkeeping cost of rollout)

Usage: python bench/sampler_scaling.py [--env SafetyPointStcircle1-v0] [--tasks 2] [--steps 2000]
       [--rounds 3] [--backends local process ray]
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import numpy as np
import torch

import metacpo  # noqa: F401  (registers our env ids)
from metacpo.data.normalizer import NormalizerState
from metacpo.models.policy import GaussianMLPPolicy, PolicySpec
from metacpo.samplers import LocalSampler, PolicySnapshot, env_dims, make_env_for
from metacpo.samplers.base import Sampler


def default_env() -> str:
    from metacpo.tasks import registered_ids

    return "SafetyPointStcircle1-v0" if "SafetyPointStcircle1-v0" in registered_ids() else "SafetyPointCircle1-v0"


def tasks_for(env_id: str, n: int) -> list | None:
    try:
        from metacpo.tasks import get_distribution

        return get_distribution(env_id).sample_n(np.random.default_rng(0), n)
    except ValueError:  # a built-in Safety-Gymnasium id: no tasks
        return None


def plain_env_rate(env_id: str, steps: int) -> float:
    """Steps/s of the bare env with random actions (resets included)."""
    env = make_env_for(env_id, seed=0)
    rng = np.random.default_rng(0)
    low, high = env.action_space.low, env.action_space.high
    env.reset(seed=0)
    t0 = time.perf_counter()
    for i in range(steps):
        _, _, _, term, trunc, _ = env.step(rng.uniform(low, high))
        if term or trunc:
            env.reset(seed=i)
    rate = steps / (time.perf_counter() - t0)
    env.close()
    return rate


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of this process and of ``pids`` (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = time.process_time()
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default=None, help="env id (default: SafetyPointStcircle1-v0 if registered)")
    ap.add_argument("--tasks", type=int, default=2, help="tasks per sample() call")
    ap.add_argument("--steps", type=int, default=2000, help="steps per task per call")
    ap.add_argument("--rounds", type=int, default=3, help="timed calls per sampler")
    ap.add_argument("--backends", nargs="+", default=["local", "process", "ray"], choices=["local", "process", "ray"])
    args = ap.parse_args()
    env_id = args.env or default_env()
    torch.set_num_threads(1)

    env = make_env_for(env_id, seed=0)
    obs_dim, act_dim = env_dims(env)
    env.close()
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(PolicySpec(obs_dim=obs_dim, act_dim=act_dim, hidden=(64, 64)))
    snap = PolicySnapshot.from_policy(policy, NormalizerState.identity(obs_dim))
    tasks = tasks_for(env_id, args.tasks)
    if tasks is None and args.tasks != 1:
        raise ValueError(f"{env_id} has no tasks; use --tasks 1")

    print(f"env {env_id}, {args.tasks} task(s) x {args.steps} steps per call, {args.rounds} timed rounds, "
          f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}")
    plain = plain_env_rate(env_id, 2000)

    samplers: dict[str, Sampler] = {}
    try:
        if "local" in args.backends:
            samplers["local 1w"] = LocalSampler(env_id, seed=0)
            samplers["local 2w"] = LocalSampler(env_id, seed=0, num_virtual_workers=2)
        if "process" in args.backends:
            from metacpo.samplers.process import ProcessSampler

            samplers["process 1w"] = ProcessSampler(env_id, seed=0, num_workers=1)
            samplers["process 2w"] = ProcessSampler(env_id, seed=0, num_workers=2)
        if "ray" in args.backends:
            import ray

            from metacpo.samplers.ray import RaySampler

            # 3 logical CPUs so the idle 1-actor and the 2-actor samplers can coexist (only one runs at a time).
            ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
            samplers["ray 1w"] = RaySampler(env_id, seed=0, num_workers=1)
            samplers["ray 2w"] = RaySampler(env_id, seed=0, num_workers=2)

        steps: dict[str, int] = {k: 0 for k in samplers}
        secs: dict[str, float] = {k: 0.0 for k in samplers}
        cpu: dict[str, float] = {k: 0.0 for k in samplers}
        for name, s in samplers.items():  # warm-up: lazy imports, first policy build
            s.sample(snapshot=snap, num_steps=args.steps, tasks=tasks)
        for _ in range(args.rounds):
            for name, s in samplers.items():
                pids = s.worker_pids() if hasattr(s, "worker_pids") else []
                c0, t0 = cpu_seconds(pids), time.perf_counter()
                batches = s.sample(snapshot=snap, num_steps=args.steps, tasks=tasks)
                secs[name] += time.perf_counter() - t0
                cpu[name] += cpu_seconds(pids) - c0
                steps[name] += sum(len(b) for b in batches)
        rate = {k: steps[k] / secs[k] for k in samplers}
        cpu_rate = {k: steps[k] / cpu[k] for k in samplers}
    finally:
        for s in samplers.values():
            s.close()
        if "ray" in args.backends:
            import ray

            ray.shutdown()

    print(f"{'sampler':<12} {'steps/s':>9} {'x plain env':>12} {'steps/CPU-s':>12}")
    print(f"{'plain env':<12} {plain:>9.0f} {1.0:>12.2f}")
    for k, r in rate.items():
        print(f"{k:<12} {r:>9.0f} {r / plain:>12.2f} {cpu_rate[k]:>12.0f}")

    def ratio(a: str, b: str, target: str = "") -> None:
        if a in rate and b in rate:
            print(f"  {a} / {b}: {rate[a] / rate[b]:.2f}{'  (target ' + target + ')' if target else ''}")

    print("ratios:")
    ratio("process 2w", "process 1w", ">= 1.8")
    ratio("ray 2w", "process 2w", ">= 0.91, i.e. ray costs <= 10% over process")
    ratio("ray 1w", "process 1w")
    ratio("process 1w", "local 1w")
    for a, b in (("process 2w", "process 1w"), ("ray 2w", "process 2w"), ("ray 1w", "process 1w")):
        if a in cpu_rate and b in cpu_rate:
            print(f"  CPU cost per step {a} / {b}: {cpu_rate[b] / cpu_rate[a]:.2f}")
    if "local 1w" in rate:
        print(f"  local 1w / plain env: {rate['local 1w'] / plain:.2f}")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

"""Sampling of a default Meta-CPO iteration vs raw physics, this tree vs an older commit, in one run.

A default meta-iteration on SafetyPointStcircle1-v0 samples 3 tasks x 3000 steps four times
(pre-adaptation, after each of 3 inner steps but the last, post-adaptation: 36,000 steps) with
the process sampler, one worker per core ((24, 12) policy, a non-trivial normaliser). Measured
for each code path in a fresh child process (``python bench/sampling.py --child`` with
``PYTHONPATH`` at that tree), alternating old/new ``--rounds`` times:

* sampling seconds of one meta-iteration's 36,000 steps (wall clock, all workers);
* raw physics in the same child: 10 ``mj_step`` per env step on the same model, one core;
* per core: ``wall x workers / steps`` (us per step per core) and its ratio to raw physics;
* the workers' CPU seconds (from /proc) per step and their ratio to raw physics in CPU time: on a
  shared machine the wall figure mostly measures the other load, the CPU figure the code;
* the busiest worker's CPU seconds (x workers, per step, in units of raw physics): what the wall
  time would be on an otherwise idle machine, i.e. the code's cost plus the work imbalance
  (3 tasks on 2 workers: one worker does two thirds of the steps unless envs_per_worker > 1).

The old path is a ``git worktree`` of ``--old`` (default: the commit before the sampling speed
work) made under /tmp and removed afterwards. Timings are noisy on a shared machine; compare
the ratios printed for the two paths in the same run.

``new`` is this tree's default: ``sampler.spread_episodes`` deals each call's episodes out evenly
to the workers (the batches of the plan, bit for bit). ``--planned`` also runs this tree with it
off (``planned``: every share's jobs on its own worker, one worker with two thirds of the steps).
``--envs-per-worker 2`` (default) also runs this tree with ``sampler.envs_per_worker = 2`` (more
shares, envs stepped in lockstep; different batches from the same distribution, see docs/scaling.md).

Measured on an idle machine (8d661f3, ``--rounds 2 --planned --envs-per-worker 3``): sampling old
2.04-2.16 s, new 1.00-1.01 s (2.04x faster; 1.96x raw physics per step per core), planned
1.30-1.31 s (1.59x), k=3 0.99-1.09 s. Earlier (da69330, before spreading): new 1.29 s, k=3 1.01 s.
Measured (2 cores, load 3.3-3.9, ``--rounds 2 --envs-per-worker 2 3``, one run; x raw physics per
step per core): wall old 5.46x / new 3.45x / k=2 3.69x / k=3 3.74x; workers' CPU 2.87x / 1.89x /
1.98x / 1.94x; busiest worker 3.82x / 2.51x / 2.00x / 1.95x, i.e. 1.52x / 1.91x / 1.95x faster
than old. On a loaded machine the wall ratio follows the other load; on an idle one it is close to
the busiest worker's. docs/results.md "Speed figures".

Usage: python bench/sampling.py [--old COMMIT] [--rounds 2] [--workers 2] [--envs-per-worker 2 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OLD_DEFAULT = "4562d65"  # main before issue 15's sampling work (rollout loop, critic fit)


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by processes ``pids`` (Linux /proc)."""
    total = 0.0
    for pid in pids:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def child(workers: int, reps: int, envs_per_worker: int, spread: bool = True) -> None:
    import mujoco
    import numpy as np
    import torch

    from metacpo.data.normalizer import NormalizerState
    from metacpo.models.policy import GaussianMLPPolicy, PolicySpec
    from metacpo.samplers.base import PolicySnapshot, make_env_for
    from metacpo.samplers.process import ProcessSampler
    from metacpo.tasks import get_distribution

    torch.set_num_threads(1)
    env_id = "SafetyPointStcircle1-v0"
    env = make_env_for(env_id, seed=0)
    od, ad = env.observation_space.shape[0], env.action_space.shape[0]
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(PolicySpec(obs_dim=od, act_dim=ad, hidden=(24, 12)))
    rng = np.random.default_rng(0)
    norm = NormalizerState(mean=rng.normal(size=od) * 0.1, var=rng.uniform(0.5, 2.0, size=od), clip=10.0)
    snap = PolicySnapshot.from_policy(policy, norm)
    tasks = get_distribution(env_id).sample_n(np.random.default_rng(1), 3)
    kwargs: dict = {"envs_per_worker": envs_per_worker} if envs_per_worker > 1 else {}  # old trees lack it
    if not spread:
        kwargs["spread_episodes"] = False
    sampler = ProcessSampler(env_id, seed=0, num_workers=workers, **kwargs)
    try:
        sampler.sample(snapshot=snap, num_steps=3000, tasks=tasks)  # warm-up (worker start, first builds)
        walls, cpus, busiest = [], [], []
        for _ in range(reps):
            c = [_cpu_seconds([pid]) for pid in sampler.worker_pids()]
            t = time.perf_counter()
            steps = 0
            for _ in range(4):
                steps += sum(len(b) for b in sampler.sample(snapshot=snap, num_steps=3000, tasks=tasks))
            walls.append(time.perf_counter() - t)
            used = [_cpu_seconds([pid]) - c0 for pid, c0 in zip(sampler.worker_pids(), c)]
            cpus.append(sum(used))
            busiest.append(max(used))
    finally:
        sampler.close()
    env.reset(seed=0)
    task = env.unwrapped.task
    model, data = task._f_model, task._f_data  # the env's own compiled model and state
    t, c = time.perf_counter(), time.process_time()
    for _ in range(steps * 10):
        mujoco.mj_step(model, data)
    physics, physics_cpu = time.perf_counter() - t, time.process_time() - c
    print(json.dumps({"wall": min(walls), "cpu": min(cpus), "busiest": min(busiest), "steps": steps, "physics": physics,
                      "physics_cpu": physics_cpu, "workers": workers}))


def measure(tree: Path, workers: int, reps: int, envs_per_worker: int = 1, spread: bool = True) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", "--workers", str(workers),
                          "--reps", str(reps), "--envs-per-worker", str(envs_per_worker)]
                         + ([] if spread else ["--no-spread"]),
                         cwd=tree, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", default=OLD_DEFAULT, help="commit of the old code path")
    ap.add_argument("--rounds", type=int, default=2, help="old/new alternations")
    ap.add_argument("--reps", type=int, default=2, help="meta-iterations' sampling per child (min taken)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--envs-per-worker", type=int, nargs="*", default=[2],
                    help="also measure this tree with sampler.envs_per_worker = each of these (batches change)")
    ap.add_argument("--planned", action="store_true",
                    help="also measure this tree with sampler.spread_episodes = false (the same batches)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-spread", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.workers, args.reps, args.envs_per_worker[0] if args.envs_per_worker else 1, not args.no_spread)
        return
    here = Path(__file__).resolve().parent.parent
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; {args.workers} workers; old = {args.old}")
    paths = {"old": (None, 1, True), "new": (here, 1, True),
             **({"planned": (here, 1, False)} if args.planned else {}),
             **{f"new k={k}": (here, k, True) for k in args.envs_per_worker if k > 1}}
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(here), "worktree", "add", "--detach", str(old), args.old], check=True,
                       capture_output=True)
        try:
            rows: dict[str, list[dict]] = {name: [] for name in paths}
            for _ in range(args.rounds):
                for name, (tree, k, spread) in paths.items():
                    rows[name].append(measure(tree or old, args.workers, args.reps, k, spread))
        finally:
            subprocess.run(["git", "-C", str(here), "worktree", "remove", "--force", str(old)], check=False)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    print(f"{'path':9s} {'round':>5s} {'sampling s':>10s} {'us/step/core':>12s} {'10 mj_step us':>13s} "
          f"{'x physics':>9s} {'cpu us/step':>11s} {'x physics cpu':>13s} {'busiest worker s':>16s} {'x physics':>9s}")
    best: dict[str, list[tuple[float, float, float]]] = {}
    for name, rs in rows.items():
        for i, r in enumerate(rs):
            per = r["wall"] * r["workers"] / r["steps"] * 1e6
            phys = r["physics"] / r["steps"] * 1e6
            cpu = r["cpu"] / r["steps"] * 1e6
            phys_cpu = r["physics_cpu"] / r["steps"] * 1e6
            crit = r["busiest"] * r["workers"] / r["steps"] * 1e6 / phys_cpu
            print(f"{name:9s} {i:>5d} {r['wall']:10.2f} {per:12.1f} {phys:13.1f} {per / phys:9.2f} {cpu:11.1f} "
                  f"{cpu / phys_cpu:13.2f} {r['busiest']:16.2f} {crit:9.2f}")
            best.setdefault(name, []).append((per / phys, cpu / phys_cpu, crit))
    o = min(x for x, _, _ in best["old"])
    oc = min(c for _, c, _ in best["old"])
    ob = min(b for _, _, b in best["old"])
    print("best round, per step per core in units of raw physics: wall x workers (what a user waits for here, "
          "load-sensitive) | all workers' CPU (what the code costs) | busiest worker's CPU x workers (the wall "
          "time on an otherwise idle machine: CPU plus imbalance)")
    for name, vals in best.items():
        n, nc, nb = (min(v[i] for v in vals) for i in range(3))
        print(f"  {name:9s} wall {n:5.2f}x ({o / n:4.2f}x faster than old) | cpu {nc:5.2f}x ({oc / nc:4.2f}x) | "
              f"busiest {nb:5.2f}x ({ob / nb:4.2f}x)")


if __name__ == "__main__":
    main()

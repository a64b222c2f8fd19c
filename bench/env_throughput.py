"""Env throughput: our Stcircle/Stbutton envs vs the plain Safety-Gymnasium Circle1/Button1 envs.

For every agent and family, in one run and side by side (random actions, one process):

- steps/s with resets: full episodes (500 steps Circle, 1000 Button), reset time included;
- stepping only: the same steps, reset time excluded;
- raw physics: ``frameskip`` x ``mj_step`` on the env's own model (the floor for any env);
- ratios: ours / plain (with resets, stepping only) and ours-with-resets / raw physics.

Targets (issue 2): >= 10x plain on Circle, >= 3x on Button, and ours-with-resets within 3x of raw
physics (ratio >= 0.33). Numbers on a shared machine are noisy; compare the ratios.

Usage: python bench/env_throughput.py [--agents Point Car] [--families circle button]
       [--episodes 3] [--plain-episodes 1]
"""

from __future__ import annotations

import argparse
import time

import mujoco
import numpy as np

import metacpo  # noqa: F401  (registers our ids)
from metacpo import tasks
from metacpo.compat import import_safety_gymnasium

sg = import_safety_gymnasium()


def run_episodes(env, episodes: int, seed: int) -> tuple[int, float, float]:
    """Steps, total seconds, reset seconds over ``episodes`` full episodes of random actions."""
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high
    steps = 0
    t_reset = 0.0
    t0 = time.perf_counter()
    for ep in range(episodes):
        t = time.perf_counter()
        env.reset(seed=seed + ep)
        t_reset += time.perf_counter() - t
        done = False
        while not done:
            _, _, _, terminated, truncated, _ = env.step(rng.uniform(low, high))
            steps += 1
            done = terminated or truncated
    return steps, time.perf_counter() - t0, t_reset


def raw_physics_rate(env, n_steps: int = 2000) -> float:
    """Env steps/s of bare ``mj_step`` calls (frameskip per env step) on the env's model."""
    task = env.unwrapped.task
    model, data = task.model, task.data
    frameskip = task.sim_conf.frameskip_binom_n
    rng = np.random.default_rng(0)
    ctrl = rng.uniform(model.actuator_ctrlrange[:, 0], model.actuator_ctrlrange[:, 1], (n_steps, model.nu))
    t0 = time.perf_counter()
    for i in range(n_steps):
        data.ctrl[:] = ctrl[i]
        for _ in range(frameskip):
            mujoco.mj_step(model, data)
    return n_steps / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", nargs="+", default=list(tasks.AGENTS))
    parser.add_argument("--families", nargs="+", default=["circle", "button"])
    parser.add_argument("--episodes", type=int, default=3, help="episodes of our env per row")
    parser.add_argument("--plain-episodes", type=int, default=1, help="episodes of the plain env per row")
    parser.add_argument("--level", type=int, default=1)
    args = parser.parse_args(argv)

    head = (f"{'agent':<8}{'family':<8}{'env':<9}{'steps/s+reset':>14}{'step only':>11}{'reset ms':>10}"
            f"{'raw phys':>10}  ratios")
    print(head)
    print("-" * len(head) + "-" * 40)
    for family in args.families:
        for agent in args.agents:
            ours_id = f"Safety{agent}St{family}{args.level}-v0"
            plain_id = f"Safety{agent}{family.capitalize()}{args.level}-v0"
            ours = tasks.make_env(ours_id, seed=0).unwrapped
            plain = sg.make(plain_id).unwrapped
            res = {}
            for name, env, eps in (("ours", ours, args.episodes), ("plain", plain, args.plain_episodes)):
                steps, total, t_reset = run_episodes(env, eps, seed=1)
                res[name] = (steps / total, steps / (total - t_reset), 1000 * t_reset / eps)
            raw = raw_physics_rate(ours)
            for name in ("ours", "plain"):
                with_r, step_only, reset_ms = res[name]
                print(f"{agent:<8}{family:<8}{name:<9}{with_r:>14,.0f}{step_only:>11,.0f}{reset_ms:>10.1f}"
                      f"{raw if name == 'ours' else float('nan'):>10,.0f}", end="")
                if name == "ours":
                    print(f"  ours/plain {with_r / res['plain'][0]:5.1f}x with resets, "
                          f"{step_only / res['plain'][1]:4.1f}x stepping; "
                          f"ours/raw {with_r / raw:4.2f}")
                else:
                    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

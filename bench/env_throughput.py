"""Env throughput: our envs vs plain Safety-Gymnasium, side by side in one run.

Part 1: our Stcircle/Stbutton envs vs the plain Safety-Gymnasium Circle1/Button1 envs.
Part 2: the standard ids (``Safety{Agent}{Circle,Button,Goal,Push}{Level}-v0``) as
``metacpo.tasks.make_env`` makes them (fast path) vs ``make_env(..., fast=False)`` (the untouched
Safety-Gymnasium env): steps/s with resets over full episodes, stepping only, and the ratios.

For every agent and family, in one run and side by side (random actions, one process):

- steps/s with resets: full episodes (500 steps Circle, 1000 Button), reset time included;
- stepping only: the same steps, reset time excluded;
- raw physics: ``frameskip`` x ``mj_step`` on the env's own model (the floor for any env);
- ratios: ours / plain (with resets, stepping only) and ours-with-resets / raw physics.

Targets (issue 2): >= 10x plain on Circle, >= 3x on Button, and ours-with-resets within 3x of raw
physics (ratio >= 0.33). Issue 15, standard ids with resets: >= 10x on Circle, >= 3x on Button
and Goal, for Point and Car. Numbers on a shared machine are noisy; compare the ratios.

Usage: python bench/env_throughput.py [--agents Point Car] [--families circle button]
       [--episodes 3] [--plain-episodes 1] [--standard-tasks Circle Button Goal Push]
       [--standard-levels 1] [--skip-ours] [--skip-standard]
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


def run_episodes(env, episodes: int, seed: int, new_tasks=None) -> tuple[int, float, float]:
    """Steps, total seconds, reset seconds over ``episodes`` full episodes of random actions.

    ``new_tasks``: a task per episode, switched to (``set_task``) before its reset.
    """
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high
    env.reset(seed=seed - 1)  # warm-up: the env's first build is not counted
    steps = 0
    t_reset = 0.0
    t0 = time.perf_counter()
    for ep in range(episodes):
        t = time.perf_counter()
        if new_tasks is not None:
            env.set_task(new_tasks[ep])
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
    parser.add_argument("--standard-tasks", nargs="+", default=["Circle", "Button", "Goal", "Push"])
    parser.add_argument("--standard-levels", nargs="+", type=int, default=[1])
    parser.add_argument("--skip-ours", action="store_true", help="skip part 1 (our St ids)")
    parser.add_argument("--skip-standard", action="store_true", help="skip part 2 (standard ids)")
    args = parser.parse_args(argv)
    if not args.skip_ours:
        bench_ours(args)
    if not args.skip_standard:
        bench_standard(args)
    return 0


def bench_ours(args: argparse.Namespace) -> None:
    print("Part 1: our St ids vs the plain Circle/Button ids.")
    print("steps/s = env steps per second; +reset: full episodes incl. resets; ours-new: a new task "
          "(set_task) every episode;\nstep: resets excluded; raw: frameskip x mj_step only. "
          "Ratios: ours/plain and ours/raw (>= 0.33 means within 3x of raw physics).")
    head = (f"{'agent':<8}{'family':<7}{'plain+reset':>12}{'plain step':>11}{'ours+reset':>11}"
            f"{'ours-new':>9}{'ours step':>10}{'raw':>8}{'reset ms':>9}{'new ms':>7} |"
            f"{'x+reset':>8}{'x step':>7}{'/raw':>6}{'new/raw':>8}")
    print(head)
    print("-" * len(head))
    for family in args.families:
        for agent in args.agents:
            ours_id = f"Safety{agent}St{family}{args.level}-v0"
            plain_id = f"Safety{agent}{family.capitalize()}{args.level}-v0"
            ours = tasks.make_env(ours_id, seed=0).unwrapped
            plain = tasks.make_env(plain_id, fast=False).unwrapped
            new_tasks = tasks.get_distribution(ours_id).sample_n(np.random.default_rng(1), args.episodes)
            p_steps, p_total, p_reset = run_episodes(plain, args.plain_episodes, seed=1)
            o_steps, o_total, o_reset = run_episodes(ours, args.episodes, seed=1)
            n_steps, n_total, n_reset = run_episodes(ours, args.episodes, seed=1, new_tasks=new_tasks)
            raw = raw_physics_rate(ours)
            plain_r, plain_s = p_steps / p_total, p_steps / (p_total - p_reset)
            ours_r, ours_s = o_steps / o_total, o_steps / (o_total - o_reset)
            new_r = n_steps / n_total
            print(f"{agent:<8}{family:<7}{plain_r:>12,.0f}{plain_s:>11,.0f}{ours_r:>11,.0f}{new_r:>9,.0f}"
                  f"{ours_s:>10,.0f}{raw:>8,.0f}{1000 * o_reset / args.episodes:>9.1f}"
                  f"{1000 * n_reset / args.episodes:>7.1f} |{ours_r / plain_r:>7.1f}x{ours_s / plain_s:>6.1f}x"
                  f"{ours_r / raw:>6.2f}{new_r / raw:>8.2f}", flush=True)


def bench_standard(args: argparse.Namespace) -> None:
    print("\nPart 2: standard ids, make_env (fast path) vs make_env(fast=False) (plain Safety-Gymnasium);"
          "\nfull episodes with resets (+reset) and stepping only (step); raw: frameskip x mj_step.")
    head = (f"{'env id':<26}{'plain+reset':>12}{'plain step':>11}{'fast+reset':>11}{'fast step':>10}"
            f"{'raw':>8}{'reset ms p/f':>14} |{'x+reset':>8}{'x step':>7}{'/raw':>6}")
    print(head)
    print("-" * len(head))
    for task_name in args.standard_tasks:
        for level in args.standard_levels:
            for agent in args.agents:
                env_id = f"Safety{agent}{task_name}{level}-v0"
                fast = tasks.make_env(env_id).unwrapped
                plain = tasks.make_env(env_id, fast=False).unwrapped
                assert type(fast).__name__ == "StandardBuilder" and type(plain).__name__ == "Builder"
                p_steps, p_total, p_reset = run_episodes(plain, args.plain_episodes, seed=1)
                f_steps, f_total, f_reset = run_episodes(fast, args.episodes, seed=1)
                raw = raw_physics_rate(fast)
                plain_r, plain_s = p_steps / p_total, p_steps / (p_total - p_reset)
                fast_r, fast_s = f_steps / f_total, f_steps / (f_total - f_reset)
                resets = f"{1000 * p_reset / args.plain_episodes:.0f}/{1000 * f_reset / args.episodes:.1f}"
                print(f"{env_id:<26}{plain_r:>12,.0f}{plain_s:>11,.0f}{fast_r:>11,.0f}{fast_s:>10,.0f}"
                      f"{raw:>8,.0f}{resets:>14} |{fast_r / plain_r:>7.1f}x{fast_s / plain_s:>6.1f}x"
                      f"{fast_r / raw:>6.2f}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())

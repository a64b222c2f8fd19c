"""``metacpo evaluate``: run a trained run's deterministic policy and report return and cost."""

from __future__ import annotations

import argparse
import json

NAME = "evaluate"
HELP = "Evaluate a run's policy (deterministic mean action) for N episodes; reports return and cost."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `metacpo train`")
    parser.add_argument("--episodes", type=int, default=10, help="number of episodes (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="evaluation seed (episode start states derive from it)")
    parser.add_argument("--stochastic", action="store_true", help="sample actions instead of the mean action")
    parser.add_argument("--json", action="store_true", help="print the per-episode figures as JSON")
    from metacpo.cli import add_task_arguments

    add_task_arguments(parser, overrides=False)  # the run's own imports and overrides are applied anyway


def run(args: argparse.Namespace) -> int:
    from metacpo.tasks.setup import TaskSetup
    from metacpo.training import evaluate

    TaskSetup(imports=tuple(args.imports)).apply()
    res = evaluate(args.run_dir, episodes=args.episodes, seed=args.seed, deterministic=not args.stochastic)
    if args.json:
        print(json.dumps({"returns": res.returns.tolist(), "costs": res.costs.tolist(),
                          "lengths": res.lengths.tolist()}))
    else:
        print(res.summary())
    return 0

"""``metacpo demo``: a short Meta-CPO run on the default task distribution, then meta-testing.

What ``make demo`` runs. Budget (defaults): 3 meta-iterations of 2 tasks × (1 inner step + 1
post-update round) × 1,000 steps on SafetyPointStcircle1-v0, then 3 CPO adaptation updates on 2
held-out level-2 tasks, against CPO from scratch. A few minutes on a laptop; the numbers are a
smoke test of the whole pipeline, not a result (see docs/results.md for those).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

NAME = "demo"
HELP = ("Short Meta-CPO run on SafetyPointStcircle1-v0 plus meta-testing on held-out level-2 tasks; "
        "prints where the results went.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env-id", default="SafetyPointStcircle1-v0", help="task distribution (default %(default)s)")
    parser.add_argument("--iters", type=int, default=3, help="meta-iterations (default %(default)s)")
    parser.add_argument("--steps-per-iter", type=int, default=1000,
                        help="environment steps per task and sampling round (default %(default)s)")
    parser.add_argument("--adapt-iters", type=int, default=3, help="adaptation updates at meta-test (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="run seed (default %(default)s)")
    parser.add_argument("--run-dir", default=None, help="output directory (default runs/demo-<time>)")


def run(args: argparse.Namespace) -> int:
    from metacpo.adaptation import AdaptSettings, meta_test
    from metacpo.config.schema import TrainConfig, apply_override
    from metacpo.training import train

    run_dir = Path(args.run_dir or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}")
    data: dict = {"algo": "meta-cpo"}
    for assignment in (
        f"env.env_id={args.env_id}",
        f"run.seed={args.seed}",
        f"run.iters={args.iters}",
        f"run.run_dir={run_dir}",
        f"sampler.steps_per_iter={args.steps_per_iter}",
        "sampler.kind=local",
        "meta.meta_batch_size=2",
        "meta.inner_steps=1",
    ):
        apply_override(data, assignment)
    data["run"]["run_dir"] = str(run_dir)
    config = TrainConfig.from_dict(data)
    print(f"[demo] meta-training Meta-CPO on {args.env_id} for {args.iters} meta-iterations -> {run_dir}")
    result = train(config, progress=True)
    print(f"[demo] meta-testing on 2 held-out level-2 tasks ({args.adapt_iters} CPO updates each), "
          "against CPO from scratch")
    settings = AdaptSettings(level=2, tasks=2, adapt_iters=args.adapt_iters, seeds=1,
                             steps_per_iter=args.steps_per_iter, from_scratch=True)
    res = meta_test([str(result.run_dir)], settings=settings, out_dir=None, echo=None)
    for label, rows in res.summary.items():
        print(f"[demo] {label}: return {rows[0]['return_mean']:.2f} -> {rows[-1]['return_mean']:.2f}, "
              f"cost {rows[0]['cost_mean']:.2f} -> {rows[-1]['cost_mean']:.2f} (limit {res.cost_limit:g})")
    print("[demo] results:")
    print(f"  training log    {result.run_dir / 'progress.csv'} (TensorBoard: tensorboard --logdir {result.run_dir})")
    print(f"  checkpoint      {result.run_dir / 'checkpoint.pt'}")
    print(f"  adaptation      {res.out_dir / 'adapt.csv'}, {res.out_dir / 'adapt.json'}")
    print(f"  adaptation plot {res.out_dir / 'adapt.png'}")
    return 0

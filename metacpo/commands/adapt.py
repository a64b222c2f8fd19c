"""``metacpo adapt``: meta-test trained runs on held-out tasks (adaptation curves + plot)."""

from __future__ import annotations

import argparse
import sys

from metacpo.choices import SAMPLER_KINDS

NAME = "adapt"
HELP = ("Meta-test runs: adapt each trained initialisation with CPO on held-out level-L tasks; "
        "writes adapt.csv, adapt.json (mean ± 95% CI over tasks × seeds) and adapt.png.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", metavar="RUN_DIR", nargs="+", help="run directories written by `metacpo train`")
    parser.add_argument("--level", type=int, default=2, help="level of the held-out task distribution (default 2)")
    parser.add_argument("--tasks", type=int, default=5, help="number of held-out tasks (default 5)")
    parser.add_argument("--adapt-iters", type=int, default=10, help="CPO updates per task and seed (default 10)")
    parser.add_argument("--seeds", type=int, default=3, help="test seeds per task (default 3)")
    parser.add_argument("--steps-per-iter", type=int, default=None,
                        help="environment steps per adaptation update, >= 1 (default: the first run's)")
    parser.add_argument("--cost-limit", type=float, default=None, help="cost limit d (default: the first run's)")
    parser.add_argument("--from-scratch", action="store_true",
                        help="add CPO from a fresh policy (first run's architecture) as a baseline curve")
    parser.add_argument("--margin", action="store_true",
                        help="adapt every curve with CPO's adaptive cost margin (default: plain CPO steps; "
                             "meta runs use their meta-trained inner step)")
    parser.add_argument("--meta-steps", type=int, default=None, metavar="N",
                        help="meta runs: adapt with the meta-trained inner step for the first N updates only, then "
                             "with the run's own CPO update section (metric, delta, line search, aiming at d); "
                             "default: the inner step for every update. Other runs are unaffected")
    parser.add_argument("--sampler", choices=SAMPLER_KINDS, default="local", help="sampler backend")
    parser.add_argument("--workers", type=int, default=0, help="process/ray sampler workers (0 = CPU count)")
    parser.add_argument("--ray-address", default="", help="Ray cluster to join with --sampler ray (default: start a local Ray)")
    parser.add_argument("--out", metavar="DIR", default=None, help="output directory (default: the first run dir)")
    parser.add_argument("--quiet", action="store_true", help="no per-task progress lines")
    from metacpo.cli import add_task_arguments

    add_task_arguments(parser)  # the runs' own --import/--overrides are applied first, automatically


def run(args: argparse.Namespace) -> int:
    from metacpo.adaptation import AdaptSettings, meta_test

    from metacpo.tasks.setup import import_task_module, normalize_import
    from metacpo.tasks.spec import read_config_file

    if args.steps_per_iter is not None and args.steps_per_iter < 1:
        raise ValueError(f"--steps-per-iter must be >= 1, got {args.steps_per_iter} (omit it to use the first "
                         "run's sampler.steps_per_iter)")
    imports = tuple(normalize_import(spec) for spec in args.imports)
    for spec in imports:  # before the overrides are checked: they may name its families
        import_task_module(spec)
    overrides = read_config_file(args.task_overrides) if args.task_overrides else {}  # checked once families load
    settings = AdaptSettings(
        level=args.level, tasks=args.tasks, adapt_iters=args.adapt_iters, seeds=args.seeds,
        steps_per_iter=args.steps_per_iter or 0, cost_limit=args.cost_limit, sampler=args.sampler,
        workers=args.workers, from_scratch=args.from_scratch, ray_address=args.ray_address,
        imports=imports, overrides=overrides,
        margin=args.margin, meta_steps=args.meta_steps,
    )
    echo = None if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    res = meta_test(list(args.run_dirs), settings=settings, out_dir=args.out, echo=echo)
    d = res.cost_limit
    print(f"cost limit {d:g}; mean ± 95% CI over tasks × seeds (step 0 = before adaptation)")
    for label, rows in res.summary.items():
        first, last = rows[0], rows[-1]
        print(f"{label}: return {first['return_mean']:.2f} -> {last['return_mean']:.2f} ± {last['return_ci95']:.2f}, "
              f"cost {first['cost_mean']:.2f} -> {last['cost_mean']:.2f} ± {last['cost_ci95']:.2f}, "
              f"within limit {last['limit_ok_frac']:.0%}")
    print(f"wrote {res.out_dir / 'adapt.csv'}, {res.out_dir / 'adapt.json'}, {res.out_dir / 'adapt.png'}")
    return 0

"""``metacpo benchmark``: run a grid of (algorithm, env, seed) cells, each trained then meta-tested."""

from __future__ import annotations

import argparse
import sys

NAME = "benchmark"
HELP = ("Run a benchmark grid (benchmarks/*.yaml): every (algorithm, env, seed) cell trained and, with an "
        "adapt stage, meta-tested, --jobs at a time or as Ray tasks; finished cells are skipped, "
        "interrupted ones resume from their checkpoints. Exit 1 if a cell failed. See docs/benchmark.md.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("grid", metavar="GRID.yaml", help="grid file (format: docs/benchmark.md)")
    parser.add_argument("--out", metavar="DIR", required=True,
                        help="output directory; cell (label, env, seed) goes to DIR/label/env/seed<k>/")
    parser.add_argument("--jobs", type=int, default=0, metavar="N",
                        help="cells at once (default: 1 on this machine; with --ray-address every cell is "
                             "submitted and the cluster's CPUs limit them)")
    parser.add_argument("--ray-address", default="", metavar="ADDR",
                        help="run each cell as a Ray task on this cluster ('auto': the cluster started with "
                             "`ray start --head`); DIR must be on storage every node sees")
    parser.add_argument("--heartbeat", type=float, default=60.0, metavar="SECONDS",
                        help="print the iterations of running cells this often (default 60)")
    parser.add_argument("--check", action="store_true",
                        help="validate the grid and print its cells and what would run, then exit")


def run(args: argparse.Namespace) -> int:
    from metacpo.benchmark.grid import load_grid
    from metacpo.benchmark.runner import plan, run_grid

    grid = load_grid(args.grid)
    if args.jobs < 0:
        raise ValueError(f"--jobs must be >= 0, got {args.jobs}")
    if not args.heartbeat > 0:
        raise ValueError(f"--heartbeat must be > 0 seconds, got {args.heartbeat}")
    if args.check:
        from pathlib import Path

        for p in plan(grid, Path(args.out).resolve()):
            trained_on = f"  trains on {p.cell.train_env_id}" if p.cell.train_env_id != p.cell.env_id else ""
            init = f"  starts from {p.cell.config.run.init_from}" if p.cell.config.run.init_from else ""
            print(f"{p.action:6s} {p.cell.key}  ({p.cell.cpus} CPU){trained_on}{init}{'  ' + p.reason if p.reason else ''}")
        return 0
    result = run_grid(grid, out=args.out, jobs=args.jobs, ray_address=args.ray_address, heartbeat_s=args.heartbeat)
    counts = {s: sum(o.status == s for o in result.outcomes) for s in ("done", "skipped", "failed", "interrupted")}
    print(f"grid {grid.name}: {counts['done']} cells done, {counts['skipped']} skipped (finished before), "
          f"{counts['failed'] + counts['interrupted']} failed; output {result.out}")
    if result.failed:
        print("failed cells:", file=sys.stderr)
        for o in result.failed:
            print(f"  {o.key}: {o.error}", file=sys.stderr)
        return 1
    print(f"report: metacpo report {result.out}")
    return 0

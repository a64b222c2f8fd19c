"""``metacpo report``: tables (and plots) of a benchmark output directory, with bootstrap CIs over seeds."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

NAME = "report"
HELP = ("Tables of a `metacpo benchmark` output: per (algorithm, env) final and late-window return/cost and "
        "iterations within the limit over seeds, adaptation curves per step, IQM across envs; 95% "
        "bootstrap CIs; every row names its commit. See docs/benchmark.md.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="DIR", help="output directory of `metacpo benchmark --out DIR`")
    parser.add_argument("--format", choices=("md", "csv", "json"), default="md", help="table format (default md)")
    parser.add_argument("--out", metavar="FILE", default=None, help="write the tables here (default: stdout)")
    parser.add_argument("--plots", metavar="PLOT_DIR", default=None,
                        help="also write training_<env>.png and adapt_<env>.png (cost limit drawn in) here")
    parser.add_argument("--late-fraction", type=float, default=0.25, metavar="F",
                        help="late window: the last F of the iterations (default 0.25)")


def _write_atomic(path: Path, text: str) -> None:
    from metacpo.fileio import write_text_atomic

    write_text_atomic(path, text)


def run(args: argparse.Namespace) -> int:
    from metacpo.benchmark.report import RENDERERS, build_report

    rep = build_report(args.out_dir, late_fraction=args.late_fraction)
    text = RENDERERS[args.format](rep)
    if args.out:
        _write_atomic(Path(args.out), text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if args.plots:
        from metacpo.benchmark.plots import write_plots

        for p in write_plots(rep, args.plots):
            print(f"wrote {p}", file=sys.stderr)
    if len(rep.commits) > 1:
        print(f"warning: rows come from {len(rep.commits)} commits: {', '.join(rep.commits)}", file=sys.stderr)
    return 0

"""``metacpo plot``: training curves of several runs in one figure (return and cost panels)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

NAME = "plot"
HELP = ("Plot training curves (episode return; episode cost with the limit drawn in; trailing means) "
        "of one or more runs or progress CSVs into one PNG, and print first/last-window means.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", metavar="RUN_OR_CSV", nargs="+",
                        help="run directories (their progress.csv) or progress CSV files")
    parser.add_argument("--out", metavar="FILE.png", required=True, help="output image (.png, .pdf or .svg)")
    parser.add_argument("--cost-limit", type=float, default=None,
                        help="cost limit d to draw (default: the first run directory's constraint.cost_limit; none for CSVs)")
    parser.add_argument("--window", type=int, default=10, help="iterations in the trailing mean (default %(default)s)")
    parser.add_argument("--label", action="append", default=[], metavar="NAME",
                        help="legend label of each run, in order (repeatable; default: directory/CSV name)")
    parser.add_argument("--title", default="", help="figure title")


def run(args: argparse.Namespace) -> int:
    from metacpo.logging.curves import progress_file, run_labels, summarize, training_figure
    from metacpo.logging.plots import save_figure

    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise ValueError(f"--out {args.out!r}: unsupported image format {out.suffix or '(none)'!r}; allowed: .png, .pdf, .svg")
    for r in args.runs:
        if not progress_file(r).is_file():
            raise FileNotFoundError(f"{r}: neither a progress CSV nor a run directory with {progress_file(r)}")
    if args.label and len(args.label) != len(args.runs):
        raise ValueError(f"got {len(args.label)} --label values for {len(args.runs)} runs; give one per run or none")
    if args.cost_limit is not None and not (math.isfinite(args.cost_limit) and args.cost_limit >= 0):
        raise ValueError(f"--cost-limit must be a finite number >= 0, got {args.cost_limit}")
    runs = dict(zip(args.label, args.runs)) if args.label else run_labels(list(args.runs))
    if len(runs) != len(args.runs):
        raise ValueError(f"--label values must be distinct, got {args.label}")
    limit = args.cost_limit if args.cost_limit is not None else _run_cost_limit(args.runs[0])
    fig = training_figure(runs, cost_limit=limit, window=args.window, title=args.title)
    save_figure(fig, out, dpi=110)
    for label, r in runs.items():
        s = summarize(r, window=args.window)
        print(f"{label}: {int(s['iterations'])} iterations, {s['env_steps']:.0f} env steps; "
              f"return {s['return_first']:.2f} -> {s['return_last']:.2f}, cost {s['cost_first']:.2f} -> "
              f"{s['cost_last']:.2f} (means of the first/last {min(args.window, int(s['iterations']))} iterations)")
    print(f"wrote {out}" + (f" (cost limit {limit:g})" if limit is not None else " (no cost limit known: pass --cost-limit)"))
    return 0


def _run_cost_limit(run: str) -> float | None:
    from metacpo.training import load_run_config

    p = Path(run)
    if not p.is_dir():
        return None
    try:
        return float(load_run_config(p).constraint.cost_limit)
    except (FileNotFoundError, ValueError):
        return None

"""Per-step mean return / mean cost / share of (task, seed) pairs within d of an adapt.csv, by curve.

Usage: python tools/adapt_table.py ADAPT_CSV... [--group label|cell|all] [--limit D] [--steps 0,1,3,5,10]
``--group cell`` pools grid cells by their entry: a file ``.../LABEL/ENV/seed<k>/adapt/adapt.csv``
counts under ``LABEL`` (e.g. all training seeds of ``meta-cpo``).
(`metacpo report` gives the same figures with bootstrap CIs for grid directories; this reads any
adapt.csv, e.g. one written by `metacpo adapt` outside a grid.)
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("csv", nargs="+", help="adapt.csv files")
    p.add_argument("--group", choices=("label", "cell", "all"), default="all",
                   help="one row per curve label, per grid entry (LABEL of LABEL/ENV/seed<k>/adapt/adapt.csv), "
                        "or all curves pooled (default)")
    p.add_argument("--limit", type=float, default=25.0, help="cost limit d (default 25)")
    p.add_argument("--steps", default="0,1,3,5,10", help="adaptation steps to show (default 0,1,3,5,10)")
    a = p.parse_args()
    steps = [int(s) for s in a.steps.split(",")]
    by: dict[str, dict[int, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for path in a.csv:
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                key = {"label": r["label"], "cell": Path(path).resolve().parts[-5], "all": "all"}[a.group]
                by[key][int(r["step"])].append((float(r["ep_return"]), float(r["ep_cost"])))
    print("| curve | n | " + " | ".join(f"k = {k}" for k in steps) + " |")
    print("|---|---|" + "---|" * len(steps))
    for key, per in by.items():
        cells = []
        for k in steps:
            rows = per.get(k, [])
            if not rows:
                cells.append("-")
                continue
            ret = sum(r for r, _ in rows) / len(rows)
            cost = sum(c for _, c in rows) / len(rows)
            ok = sum(c <= a.limit for _, c in rows) / len(rows)
            cells.append(f"{ret:.1f} / {cost:.1f} ({ok:.0%})")
        print(f"| {key} | {len(per.get(steps[0], []))} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

"""Copy the raw rows of a grid run's finished cells into a directory that can be committed.

    python tools/collect_cells.py runs/grids/meta_inner1 docs/data/grids/meta_inner1_pointstcircle

For every cell ``LABEL/ENV/seed<k>`` of SRC whose cell.json says ``done``: progress.csv,
cell.json, config.yaml, events.log and adapt/adapt.{csv,json} (no checkpoints, no TensorBoard
files, no plots). ``metacpo report DEST`` then rebuilds the report from them. Unfinished cells
are listed and skipped.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

FILES = ("progress.csv", "cell.json", "config.yaml", "events.log", "adapt/adapt.csv", "adapt/adapt.json")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path, help="a metacpo benchmark --out directory")
    ap.add_argument("dst", type=Path, help="where the finished cells' rows go")
    args = ap.parse_args()
    cells = sorted(p.parent for p in args.src.glob("*/*/seed*/cell.json"))
    if not cells:
        raise SystemExit(f"error: no cells (LABEL/ENV/seed<k>/cell.json) under {args.src}")
    for cell in cells:
        key = cell.relative_to(args.src)
        status = json.loads((cell / "cell.json").read_text()).get("status")
        if status != "done":
            print(f"skip {key}: {status}")
            continue
        for name in FILES:
            if (cell / name).exists():
                (args.dst / key / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(cell / name, args.dst / key / name)
        print(f"copied {key}")


if __name__ == "__main__":
    main()

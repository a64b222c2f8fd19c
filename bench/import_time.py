"""Import time of ``import metacpo`` and ``metacpo --help``, side by side in one run.

Each measurement is a fresh interpreter (``python -X importtime``; the total is the cumulative
time of the top-level ``metacpo`` import, and the wall time of the whole process for
``--help``), repeated ``--repeats`` times, alternating between this checkout and, with
``--compare DIR``, another checkout (e.g. the main branch), so both see the same machine load.
Reports medians and the ratio, and whether Safety-Gymnasium/MuJoCo were imported.

Usage: python bench/import_time.py [--compare /path/to/other/checkout] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
PROBE = ("import sys, metacpo; print('HEAVY', int('safety_gymnasium' in sys.modules), "
         "int('mujoco' in sys.modules))")


def import_ms(root: Path) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", PROBE], env=env, cwd=root, check=True,
                         capture_output=True, text=True)
    total = next(int(line.split("|")[1]) for line in out.stderr.splitlines()
                 if line.rstrip().endswith("| metacpo"))
    heavy = next(line for line in out.stdout.splitlines() if line.startswith("HEAVY"))
    return total / 1000.0, heavy


def help_ms(root: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(root)}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "metacpo.cli", "--help"], env=env, cwd=root, check=True,
                   capture_output=True)
    return 1000.0 * (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", type=Path, default=None, help="another checkout to compare with")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    roots = {"this": HERE}
    if args.compare is not None:
        roots["compare"] = args.compare.resolve()
    imp: dict[str, list[float]] = {k: [] for k in roots}
    hlp: dict[str, list[float]] = {k: [] for k in roots}
    heavy: dict[str, str] = {}
    for _ in range(args.repeats):
        for name, root in roots.items():
            ms, heavy[name] = import_ms(root)
            imp[name].append(ms)
            hlp[name].append(help_ms(root))
    print(f"{'checkout':<10}{'import metacpo ms':>19}{'metacpo --help ms':>19}  safety_gymnasium, mujoco imported")
    for name, root in roots.items():
        print(f"{name:<10}{statistics.median(imp[name]):>19.0f}{statistics.median(hlp[name]):>19.0f}  "
              f"{heavy[name].split()[1:]}  ({root})")
    if "compare" in roots:
        print(f"ratio compare/this: import {statistics.median(imp['compare']) / statistics.median(imp['this']):.1f}x, "
              f"--help {statistics.median(hlp['compare']) / statistics.median(hlp['this']):.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

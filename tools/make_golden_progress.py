"""Record the reference progress.csv rows that tests/integration/test_golden_progress.py pins.

    PYTHONPATH=. python tools/make_golden_progress.py            # every case
    PYTHONPATH=. python tools/make_golden_progress.py cpo-local  # some cases

Run it only at a commit whose numbers are trusted (a behaviour change that is meant to change
the figures re-records them, and says so in its commit message). The cases are in
tests/golden_runs.py; the CSVs go to tests/data/golden/<algo>-<sampler>.csv.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from metacpo.cli import main  # noqa: E402
from tests.golden_runs import CASES, GOLDEN_DIR, case_name, progress_rows, train_argv, write_rows  # noqa: E402


def record(algo: str, sampler: str) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        code = main(train_argv(algo, sampler, run_dir))
        if code != 0:
            raise SystemExit(f"{case_name(algo, sampler)}: metacpo train exited with {code}")
        out = GOLDEN_DIR / f"{case_name(algo, sampler)}.csv"
        write_rows(out, progress_rows(run_dir))
    return out


if __name__ == "__main__":
    wanted = set(sys.argv[1:])
    for algo, sampler in CASES:
        if not wanted or case_name(algo, sampler) in wanted:
            print(record(algo, sampler))

"""The fixed-seed training runs whose progress.csv rows are pinned bit for bit (tests/data/golden).

Shared by ``tools/make_golden_progress.py`` (writes the reference CSVs at a trusted commit) and
``tests/integration/test_golden_progress.py`` (re-runs every case and compares). Tiny budgets:
policy/critic hidden [8], 500 steps per iteration (one Stcircle episode), 2 iterations; the meta
algorithms use 2 tasks and 1 inner step. Columns under ``time/`` are wall-clock and left out.
"""

from __future__ import annotations

import csv
from pathlib import Path

GOLDEN_DIR = Path(__file__).resolve().parent / "data" / "golden"
ENV = "SafetyPointStcircle1-v0"
ALGOS = ("cpo", "trpo", "meta-cpo", "meta-trpo", "multitask-cpo")
SAMPLERS = ("local", "process")
VARIANTS: dict[str, list[str]] = {
    "": [],
    # the Fisher metric on inner and outer steps, and the projected meta-step
    "fisher": ["--set", "meta.metric=fisher", "--set", "meta.project_meta_step=true"],
}
CASES: tuple[tuple[str, str], ...] = (*((a, s) for a in ALGOS for s in SAMPLERS), ("meta-cpo+fisher", "local"))
"""(algorithm[+variant], sampler kind) of every pinned run."""


def case_name(algo: str, sampler: str) -> str:
    return f"{algo}-{sampler}"


def train_argv(algo: str, sampler: str, run_dir: Path) -> list[str]:
    """``metacpo`` argv of one pinned run."""
    algo, _, variant = algo.partition("+")
    argv = ["train", "--algo", algo, "--env-id", ENV, "--sampler", sampler, "--steps-per-iter", "500",
            "--iters", "2", "--seed", "3", "--run-dir", str(run_dir), "--no-progress",
            "--set", "policy.hidden=[8]", "--set", "critic.hidden=[8]", "--set", "run.tensorboard=false"]
    if sampler == "process":
        argv += ["--set", "sampler.workers=2"]
    if algo.startswith("meta-"):
        argv += ["--set", "meta.meta_batch_size=2", "--set", "meta.inner_steps=1"]
    return argv + VARIANTS[variant]


def progress_rows(run_dir: Path) -> list[dict[str, str]]:
    """progress.csv rows of ``run_dir`` without the wall-clock (``time/*``) columns."""
    with open(run_dir / "progress.csv", newline="") as fh:
        return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in csv.DictReader(fh)]


def write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))

"""Custom task families and range overrides from the command line: --import, --overrides, and
the run recording them so resume, evaluate and every sampler worker see the same families."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from metacpo.checkpoint import load_checkpoint
from metacpo.cli import main
from metacpo.logging.writers import read_progress

RING = str(Path(__file__).parent / "data" / "ring_family.py")
TINY = ["--no-progress", "--steps-per-iter", "500", "--set", "policy.hidden=[8]", "--set", "critic.hidden=[8]",
        "--set", "run.tensorboard=false"]
ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "metacpo.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300, cwd=str(ROOT))


def test_train_a_custom_family_with_process_workers_then_resume_and_evaluate(tmp_path):
    over = tmp_path / "ring.yaml"
    over.write_text("ring:\n  1: {radius: [3.2, 3.3]}\n")
    run = tmp_path / "run"
    r = _cli("train", "--algo", "multitask-cpo", "--import", RING, "--overrides", str(over),
             "--env-id", "SafetyPointString1-v0", "--sampler", "process", "--workers", "2", "--iters", "1",
             "--run-dir", str(run), *TINY)
    assert r.returncode == 0, r.stderr
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["env"]["imports"] == [RING]
    assert cfg["env"]["task_overrides"] == {"ring": {1: {"radius": [3.2, 3.3]}}}
    # The task the workers sampled (unpicklable there without the import) is a ring task in the
    # overridden range; the batch was split over both workers (500 steps, 2 workers).
    task = load_checkpoint(run / "checkpoint.pt")["algorithm"]["current_task"]
    assert 3.2 <= task["radius"] <= 3.3 and 2.0 <= task["wall_distance"] <= 2.4
    # resume and evaluate load the family from the run's record alone
    r = _cli("train", "--resume", str(run), "--iters", "2", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert [row["iteration"] for row in read_progress(run / "progress.csv")] == ["0", "1"]
    r = _cli("evaluate", str(run), "--episodes", "1")
    assert r.returncode == 0 and "episodes 1" in r.stdout, r.stderr


def test_a_task_of_a_family_the_workers_do_not_know_is_an_error_naming_it(tmp_path):
    from metacpo.data.normalizer import NormalizerState
    from metacpo.models.policy import GaussianMLPPolicy, PolicySpec
    from metacpo.samplers import PolicySnapshot
    from metacpo.samplers.process import ProcessSampler
    from metacpo.tasks.setup import TaskSetup, import_task_module

    import pytest

    mod = import_task_module(RING)
    task = mod.RING.distribution(1).sample(np.random.default_rng(0))
    snap = PolicySnapshot.from_policy(GaussianMLPPolicy(PolicySpec(obs_dim=28, act_dim=2, hidden=(8,))),
                                      NormalizerState.identity(28))
    with ProcessSampler("SafetyPointStcircle1-v0", seed=0, num_workers=1) as proc:
        with pytest.raises(RuntimeError, match="metacpo_user_ring_family"):
            proc.sample(snapshot=snap, num_steps=50, tasks=[task])
    with ProcessSampler("SafetyPointString1-v0", seed=0, num_workers=1, task_setup=TaskSetup(imports=(RING,))) as proc:
        (b,) = proc.sample(snapshot=snap, num_steps=50, tasks=[task])
    assert b.task == task and len(b) == 50


def test_overrides_reach_process_workers(tmp_path):
    """cpo on the level-0 ring task: each worker draws its own task from the (overridden) level 0.
    A 1-worker process run equals the local run with the same overrides, and differs without them."""
    over = tmp_path / "ring0.yaml"
    over.write_text("ring:\n  0: {radius: 1.5, wall_distance: 0.6}\n")
    rows = {}
    for name, extra in {"process": ["--sampler", "process", "--workers", "1", "--overrides", str(over)],
                        "local": ["--sampler", "local", "--overrides", str(over)],
                        "plain": ["--sampler", "process", "--workers", "1"]}.items():
        run = tmp_path / name
        assert main(["train", "--import", RING, "--env-id", "SafetyPointString0-v0", "--iters", "1",
                     "--run-dir", str(run), *TINY, *extra]) == 0
        (row,) = read_progress(run / "progress.csv")
        rows[name] = {k: v for k, v in row.items() if k.startswith("rollout/")}
    assert rows["process"] == rows["local"]
    assert rows["process"] != rows["plain"]

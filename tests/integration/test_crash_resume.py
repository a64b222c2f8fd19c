"""Crash-safe training: ``metacpo train`` SIGKILLed at arbitrary points (mid-iteration, and the moment a
checkpoint write is seen in progress) leaves only loadable checkpoints, and ``--resume`` reproduces the
uninterrupted run's progress.csv rows (local sampler, fixed seed; timing columns ignored).

The env is level 0 of Stcircle (one fixed task, fast resets), so runs are a function of the seed."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from metacpo.checkpoint import load_checkpoint

ITERS = 12
ARGS = ["--algo", "cpo", "--env-id", "SafetyPointStcircle0-v0", "--sampler", "local", "--steps-per-iter", "1000",
        "--iters", str(ITERS), "--seed", "3", "--no-progress", "--set", "run.tensorboard=false",
        "--set", "policy.hidden=[8]", "--set", "critic.hidden=[8]"]


def _train(*extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "metacpo.cli", "train", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _finish(p: subprocess.Popen) -> None:
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-2000:]


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "progress.csv").open() as f:
        return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in csv.DictReader(f)]


def _tmp_files(run_dir: Path) -> list[str]:
    return [n for n in os.listdir(run_dir) if n.endswith(".tmp")]


def _kill_after_checkpoint(run_dir: Path, p: subprocess.Popen, *, min_iteration: int, during_write: bool) -> int:
    """SIGKILL ``p`` once a checkpoint of at least ``min_iteration`` exists: 0.2 s later (mid-iteration),
    or, with ``during_write``, the moment the next checkpoint's temporary file shows up."""
    ckpt = run_dir / "checkpoint.pt"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert p.poll() is None, "training finished before it could be killed"
        if ckpt.exists() and load_checkpoint(ckpt)["iteration"] >= min_iteration:
            break
        time.sleep(0.02)
    if during_write:
        while p.poll() is None and not _tmp_files(run_dir) and time.monotonic() < deadline:
            pass  # busy-poll: the write lasts milliseconds
    else:
        time.sleep(0.2)
    os.kill(p.pid, signal.SIGKILL)
    print(f"killed after checkpoint {load_checkpoint(ckpt)['iteration']}; temporary files then: {_tmp_files(run_dir)}")
    p.wait(timeout=30)
    assert p.returncode == -signal.SIGKILL
    return int(load_checkpoint(ckpt)["iteration"])


def test_sigkilled_training_resumes_to_the_uninterrupted_rows(tmp_path):
    ref_dir, mid_dir, write_dir = tmp_path / "ref", tmp_path / "mid", tmp_path / "write"
    ref = _train(*ARGS, "--run-dir", str(ref_dir))
    mid = _train(*ARGS, "--run-dir", str(mid_dir))
    killed_at = _kill_after_checkpoint(mid_dir, mid, min_iteration=1, during_write=False)
    write = _train(*ARGS, "--run-dir", str(write_dir))
    resume_mid = _train("--resume", str(mid_dir), "--no-progress")
    killed_write_at = _kill_after_checkpoint(write_dir, write, min_iteration=2, during_write=True)
    # Whatever the kill interrupted, the checkpoint in place is whole; a torn write can only be a
    # temporary file, which resume ignores (simulate the worst one: a truncated copy).
    ck = write_dir / "checkpoint.pt"
    assert 2 <= killed_write_at <= ITERS and load_checkpoint(ck)["iteration"] == killed_write_at
    (write_dir / ".checkpoint.pt.torn.tmp").write_bytes(ck.read_bytes()[:1000])
    resume_write = _train("--resume", str(write_dir), "--no-progress")
    for p in (ref, resume_mid, resume_write):
        _finish(p)

    assert 1 <= killed_at < ITERS
    expected = _rows(ref_dir)
    assert [r["iteration"] for r in expected] == [str(i) for i in range(ITERS)]
    assert _rows(mid_dir) == expected
    assert _rows(write_dir) == expected
    for d in (ref_dir, mid_dir, write_dir):
        assert load_checkpoint(d / "checkpoint.pt")["iteration"] == ITERS


def test_resume_on_car_with_worker_processes_reproduces_the_rows(tmp_path):
    """On Car a fresh env's first reset differs (~1e-16) from later ones, and a resumed run's workers
    start with fresh envs: the checkpoint keeps every share's last reset and the new workers repeat it,
    so a run stopped after 2 iterations and resumed to 5 writes the rows of an uninterrupted 5-iteration
    run (process sampler, 2 workers, episodes spread over them)."""
    args = ["--algo", "cpo", "--env-id", "SafetyCarStcircle1-v0", "--sampler", "process", "--workers", "2",
            "--steps-per-iter", "1000", "--seed", "2", "--no-progress", "--set", "run.tensorboard=false",
            "--set", "policy.hidden=[8]", "--set", "critic.hidden=[8]"]
    ref_dir, part_dir = tmp_path / "ref", tmp_path / "part"
    _finish(_train(*args, "--iters", "5", "--run-dir", str(ref_dir)))
    _finish(_train(*args, "--iters", "2", "--run-dir", str(part_dir)))
    _finish(_train("--resume", str(part_dir), "--iters", "5", "--no-progress"))
    expected = _rows(ref_dir)
    assert [r["iteration"] for r in expected] == [str(i) for i in range(5)]
    assert _rows(part_dir) == expected

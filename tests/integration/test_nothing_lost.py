"""Nothing lost, nothing hangs: resume safety, output locations, bad input accepted before, and
Ctrl-C (a real SIGINT to a real `metacpo` process) for train and adapt."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from metacpo.cli import main
from metacpo.logging.writers import read_progress

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--env-id", "SafetyPointStcircle0-v0", "--sampler", "local", "--steps-per-iter", "500", "--no-progress",
        "--set", "policy.hidden=[8]", "--set", "critic.hidden=[8]", "--set", "run.tensorboard=false"]


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: "), err
    return err[-1]


def _default_sigint() -> None:
    # A command a user starts from a terminal has Ctrl-C at its default; a test suite started in
    # the background by a non-interactive shell has SIGINT ignored, and children inherit that
    # (Python then never raises KeyboardInterrupt). Give the CLI the user's disposition.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _popen(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen([sys.executable, "-m", "metacpo.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=str(ROOT),
                            preexec_fn=_default_sigint, **kw)


@pytest.fixture(scope="module")
def two_iterations(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("resume") / "run"
    assert main(["train", "--iters", "2", "--run-dir", str(run), *TINY]) == 0
    return run


def _copy(run: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(run, dest)
    return dest


def test_resume_checks_progress_rows_against_the_checkpoint(two_iterations, tmp_path, capsys):
    text = (two_iterations / "progress.csv").read_text()
    header, row0, row1 = text.splitlines()
    cases = {
        "empty": ("", "is empty but the checkpoint has 2 iterations"),
        "duplicate": "\n".join([header, row0, row0, row1]) + "\n",
        "missing": "\n".join([header, row1]) + "\n",
        "short": "\n".join([header, row0]) + "\n",
    }
    expect = {"duplicate": "row 2 is iteration 0, expected 1 (a duplicated row)",
              "missing": "row 1 is iteration 1, expected 0", "short": "rows of iterations 1..1 are missing"}
    for name, content in cases.items():
        msg = content[1] if isinstance(content, tuple) else expect[name]
        content = content[0] if isinstance(content, tuple) else content
        run = _copy(two_iterations, tmp_path / name)
        (run / "progress.csv").write_text(content)
        config_before = (run / "config.yaml").read_bytes()
        assert main(["train", "--resume", str(run), "--iters", "3", "--no-progress"]) == 2, name
        assert msg in _err(capsys), name
        assert (run / "progress.csv").read_text() == content  # never rewritten
        assert (run / "config.yaml").read_bytes() == config_before
    # a row logged after the last checkpoint (a crash between the two) is dropped and re-run
    run = _copy(two_iterations, tmp_path / "extra")
    (run / "progress.csv").write_text(text + row1.replace("1,", "2,", 1) + "\n")
    assert main(["train", "--resume", str(run), "--iters", "3", "--no-progress"]) == 0
    assert [r["iteration"] for r in read_progress(run / "progress.csv")] == ["0", "1", "2"]


def test_resume_of_a_finished_run_says_how_to_continue(two_iterations, tmp_path, capsys):
    run = _copy(two_iterations, tmp_path / "done")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    for extra in ([], ["--iters", "2"], ["--iters", "1"]):
        assert main(["train", "--resume", str(run), "--no-progress", *extra]) == 2
        assert _err(capsys) == (f"error: run {run} already has 2 iterations; pass --iters M > 2 to continue")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_bad_outputs_and_inputs_are_one_line_errors_without_stub_dirs(tmp_path, capsys, two_iterations):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cases = [
        (["train", "--run-dir", str(a_file), *TINY], f"--run-dir {a_file} is a file, not a directory"),
        (["train", "--run-dir", str(a_file / "sub"), *TINY], f"{a_file} is a file, not a directory"),
        (["train", "--seed", "2000000", "--run-dir", str(tmp_path / "s"), *TINY],
         "--seed (run.seed) must be in [0, 1000000)"),
        (["train", "--ray-address", "auto", "--run-dir", str(tmp_path / "r"), *TINY],
         "--ray-address auto needs --sampler ray"),
        (["train", "--env-id", "SafetyPointFoo1-v0", "--run-dir", str(tmp_path / "f"), "--iters", "1"],
         "neither a Safety-Gymnasium id"),
        (["evaluate", str(two_iterations), "--seed", "-1"], "--seed must be an integer >= 0, got -1"),
        (["adapt", str(two_iterations), "--steps-per-iter", "0", "--out", str(tmp_path / "a")],
         "--steps-per-iter must be >= 1, got 0"),
        (["adapt", str(two_iterations), "--out", str(a_file)], f"--out {a_file} is a file, not a directory"),
        (["adapt", str(two_iterations), "--ray-address", "auto", "--out", str(tmp_path / "a")],
         "--ray-address auto needs --sampler ray"),
    ]
    for argv, msg in cases:
        assert main(argv) == 2, argv
        assert msg in _err(capsys), argv
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # no stub run or output dirs


def test_unreachable_ray_address_fails_fast_with_one_line(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for address, msg in [(f"127.0.0.1:{port}", f"cannot reach a Ray head at 127.0.0.1:{port}"),
                         ("auto", "no running Ray cluster found")]:
        run = tmp_path / "run"
        t0 = time.monotonic()
        p = _popen("train", "--sampler", "ray", "--ray-address", address, "--run-dir", str(run),
                   *[a for a in TINY if a not in ("--sampler", "local")])
        out, err = p.communicate(timeout=120)
        assert time.monotonic() - t0 < 60  # a hang would hit the timeout above
        assert p.returncode == 2, err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and msg in lines[0], err
        assert not run.exists()


def _wait_for(pred, what: str, timeout: float = 240.0) -> None:
    t0 = time.monotonic()
    while not pred():
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("target", ["group", "main"])
def test_ctrl_c_during_training_exits_130_quietly_and_resumes(tmp_path, target):
    run = tmp_path / "run"
    p = _popen("train", "--iters", "200", "--run-dir", str(run), "--sampler", "process", "--workers", "2",
               *[a for a in TINY if a not in ("--sampler", "local")], start_new_session=True)
    _wait_for(lambda: (run / "checkpoint.pt").exists() or p.poll() is not None, "the first checkpoint")
    t0 = time.monotonic()
    if target == "group":
        os.killpg(p.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    else:
        os.kill(p.pid, signal.SIGINT)
    out, err = p.communicate(timeout=60)
    elapsed = time.monotonic() - t0
    assert p.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted; ") and last.endswith(f"continue with: metacpo train --resume {run}"), err
    assert elapsed < 30, elapsed  # hang guard; the measured figure is in the report
    saved = len(read_progress(run / "progress.csv"))
    assert main(["train", "--resume", str(run), "--iters", str(saved + 1), "--no-progress"]) == 0
    assert [int(r["iteration"]) for r in read_progress(run / "progress.csv")] == list(range(saved + 1))


def test_interrupted_adapt_continues_to_the_uninterrupted_outputs(two_iterations, tmp_path):
    args = ["adapt", str(two_iterations), "--level", "1", "--tasks", "2", "--seeds", "2", "--adapt-iters", "1",
            "--steps-per-iter", "500", "--from-scratch", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    out = tmp_path / "cut"
    p = _popen(*args, "--out", str(out))
    _wait_for(lambda: len(list((out / "adapt_parts").glob("*.json"))) >= 2 or p.poll() is not None, "two curves")
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "Traceback" not in err and "run the same command again to continue" in err.strip().splitlines()[-1]
    kept = len(list((out / "adapt_parts").glob("*.json")))
    assert 2 <= kept < 8 and not (out / "adapt.csv").exists()
    assert main([*args, "--out", str(out)]) == 0
    for name in ("adapt.csv", "adapt.json"):
        assert (out / name).read_text() == (tmp_path / "whole" / name).read_text(), name

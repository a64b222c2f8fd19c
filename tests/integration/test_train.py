"""End-to-end runs on SafetyPointCircle1-v0 with tiny budgets (one 500-step episode, 2 iterations)."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metacpo.cli import main
from metacpo.config import TrainConfig
from metacpo.training import train

ENV = "SafetyPointCircle1-v0"
TINY = ["--set", "policy.hidden=[16]", "--set", "critic.hidden=[16]", "--set", "critic.iters=2"]


def _config(run_dir, *, iters=2, algo="cpo", tensorboard=False):
    return TrainConfig.from_dict({
        "algo": algo,
        "env": {"env_id": ENV},
        "policy": {"hidden": [16]},
        "critic": {"hidden": [16], "iters": 2},
        "update": {"cost_limit": 5.0},
        "sampler": {"kind": "local", "steps_per_iter": 500},
        "run": {"seed": 7, "iters": iters, "run_dir": str(run_dir), "tensorboard": tensorboard},
    })


def _rows(run_dir):
    with open(Path(run_dir) / "progress.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def test_same_seed_gives_identical_progress_and_resume_continues_exactly(tmp_path):
    a = train(_config(tmp_path / "a", tensorboard=True), progress=False)
    train(_config(tmp_path / "b"), progress=False)
    rows_a = _rows(a.run_dir)
    assert len(rows_a) == 2 and rows_a == _rows(tmp_path / "b")
    # The progress file has the documented columns and real numbers.
    for col in ("rollout/env_steps", "rollout/ep_return_mean", "rollout/ep_cost_mean", "rollout/j_c",
                "update/kl", "update/step_norm", "solver/lam", "solver/nu", "solver/case", "update/ls_fraction"):
        assert col in rows_a[0]
    assert [r["rollout/env_steps"] for r in rows_a] == ["500", "1000"]
    for r in rows_a:  # each accepted step moved the policy, inside the trust region (delta 0.01, mean KL)
        assert float(r["update/ls_fraction"]) > 0, r
        assert float(r["update/step_norm"]) > 0 and 0 < float(r["update/kl"]) <= 0.01 * (1 + 1e-6)
        assert float(r["rollout/j_c"]) == float(r["rollout/ep_cost_mean"])  # J_C: the complete episode's cost
    assert list((a.run_dir / "tb").glob("events.out.tfevents.*"))
    ck = torch.load(a.run_dir / "checkpoint.pt", weights_only=True)
    assert ck["iteration"] == 2 and "policy" in ck["algorithm"] and "obs_norm" in ck["algorithm"]
    assert TrainConfig.from_dict(__import__("yaml").safe_load((a.run_dir / "config.yaml").read_text())) == _config(a.run_dir, tensorboard=True)

    # Stop after one iteration, then resume to two: same rows as the uninterrupted run.
    c_dir = tmp_path / "c"
    train(_config(c_dir, iters=1), progress=False)
    assert len(_rows(c_dir)) == 1
    assert main(["train", "--resume", str(c_dir), "--iters", "2", "--no-progress"]) == 0
    assert _rows(c_dir) == rows_a
    # A finished run refuses to be overwritten.
    with pytest.raises(ValueError, match="already holds a run"):
        train(_config(c_dir), progress=False)


def test_cpo_steps_target_the_limit_minus_the_integral_margin(tmp_path):
    """progress.csv pins the wiring: m_k = clip(m_{k-1} + gain * (J_C(k) - d), 0, d), the solver's
    b_k = J_C(k) - (d - m_k), and the logged prediction error
    e_k = J_C(k) - (J_C(k-1) + cost-surrogate change(k-1))."""
    base = _config(tmp_path / "m", iters=4).to_dict()
    d = 2.0  # a wide policy on the narrow fixed Circle task pays cost early: the margin grows, then decays
    cfg = TrainConfig.from_dict({
        **base, "env": {"env_id": "SafetyPointStcircle0-v0"}, "policy": {**base["policy"], "log_std_init": 1.0},
        "constraint": {"cost_limit": d}, "margin": {"gain": 0.5},
    })
    train(cfg, progress=False)
    rows = _rows(tmp_path / "m")
    m_prev = 0.0
    for k, r in enumerate(rows):
        j_c, m, b = float(r["rollout/j_c"]), float(r["cost/margin"]), float(r["solver/b"])
        assert m == pytest.approx(min(max(m_prev + 0.5 * (j_c - d), 0.0), d), abs=1e-9)
        assert b == pytest.approx(j_c - (d - m), abs=1e-9)
        if k == 0:
            assert r["cost/prediction_error"] == "nan"
        else:
            prev = rows[k - 1]
            e = j_c - (float(prev["rollout/j_c"]) + float(prev["update/loss_c_change"]))
            assert float(r["cost/prediction_error"]) == pytest.approx(e, abs=1e-9)
        m_prev = m
    assert any(float(r["cost/margin"]) > 0 for r in rows), rows  # the test exercises a positive margin ...
    assert any(float(r["cost/margin"]) < float(p["cost/margin"]) for p, r in zip(rows, rows[1:])), rows  # ... and decay
    # TRPO has no cost limit and no margin.
    assert _rows(train(_config(tmp_path / "t", iters=1, algo="trpo"), progress=False).run_dir)[0]["cost/margin"] == "nan"


def test_cli_train_trpo_with_process_sampler_and_evaluate(tmp_path):
    run_dir = tmp_path / "trpo"
    cmd = [sys.executable, "-m", "metacpo.cli", "train", "--algo", "trpo", "--env-id", ENV, "--steps-per-iter", "500",
           "--iters", "1", "--workers", "1", "--sampler", "process", "--run-dir", str(run_dir), "--no-progress", *TINY]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"run dir: {run_dir}" in out.stdout
    rows = _rows(run_dir)
    assert len(rows) == 1 and rows[0]["solver/case"] == "unconstrained" and rows[0]["solver/nu"] == "0.0"


def test_cli_train_cpo_then_evaluate(tmp_path, capsys):
    run_dir = tmp_path / "cpo"
    assert main(["train", "--algo", "cpo", "--env-id", ENV, "--steps-per-iter", "500", "--iters", "1",
                 "--sampler", "local", "--run-dir", str(run_dir), "--cost-limit", "10", "--seed", "3",
                 "--no-progress", *TINY]) == 0
    assert main(["evaluate", str(run_dir), "--episodes", "1", "--json"]) == 0
    import json

    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["lengths"] == [500] and len(res["returns"]) == 1 and res["costs"][0] >= 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--algo", "ppo"], "error: unknown algo 'ppo'; allowed: ['cpo', "),
        (["train", "--set", "update.delta=0"], "error: update.delta must be > 0, got 0.0"),
        (["train", "--cost-limit", "-1"], "error: constraint.cost_limit must be >= 0, got -1.0"),
        (["train", "--seed", "abc"], "error: run.seed expects an integer, got 'abc'"),
        (["train", "--cost-limit", "lots"], "error: constraint.cost_limit expects a number, got 'lots'"),
        (["train", "--sampler", "gpu"], "error: unknown sampler.kind 'gpu'; allowed: ['local', 'process', 'ray']"),
        (["train", "--set", "update.detla=0.1"], "error: unknown key(s) ['detla'] in config section 'update'"),
        (["train", "--set", "margin.gain=0"], "error: margin.gain must lie in (0, 1], got 0.0"),
        (["train", "--algo", "trpo", "--set", "margin.gain=0.5"], "error: unknown config section(s) ['margin']"),
        (["train", "--env-id", "NoSuchEnv-v0", "--sampler", "local"], "error: unknown env id 'NoSuchEnv-v0'"),
        (["evaluate", "/nonexistent/run"], "error: run directory /nonexistent/run does not exist"),
        (["train", "--resume", "/nonexistent/run"], "error: /nonexistent/run is not a run directory"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, message, capsys, tmp_path):
    if argv[0] == "train" and "--resume" not in argv:
        argv = [*argv, "--run-dir", str(tmp_path / "r"), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message), err
    assert len(err.splitlines()) == 1


def test_corrupt_or_mismatched_checkpoint_is_named(tmp_path, capsys):
    run_dir = tmp_path / "run"
    train(_config(run_dir, iters=1), progress=False)
    ck_path = run_dir / "checkpoint.pt"
    ck = torch.load(ck_path, weights_only=True)
    ck["config"]["policy"]["hidden"] = [32]  # weights were saved for hidden (16,)
    torch.save(ck, ck_path)
    assert main(["evaluate", str(run_dir), "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert f"checkpoint {ck_path} does not match" in err and "size mismatch" in err
    ck_path.write_bytes(b"\x00garbage")
    assert main(["train", "--resume", str(run_dir), "--iters", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"checkpoint {ck_path} is corrupt" in err and len(err.strip().splitlines()) == 1


def test_a_batch_shorter_than_an_episode_is_a_clear_error(tmp_path, capsys):
    """200 steps of 500-step episodes complete no episode: J_C cannot be estimated, so training
    stops with a one-line error instead of logging NaN return/cost and J_C 0."""
    code = main(["train", "--algo", "cpo", "--env-id", "SafetyPointStcircle0-v0", "--steps-per-iter", "200",
                 "--iters", "1", "--sampler", "local", "--run-dir", str(tmp_path / "short"), "--no-progress", *TINY])
    err = capsys.readouterr().err
    assert code == 2 and "no complete episode" in err and "steps_per_iter" in err
    assert len(err.strip().splitlines()) == 1

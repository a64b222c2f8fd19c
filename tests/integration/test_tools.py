"""The diagnostics in tools/ run on a real (tiny) CPO run and print self-consistent figures."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from metacpo.config import TrainConfig
from metacpo.training import train

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("tools") / "cpo"
    cfg = TrainConfig.from_dict({
        "algo": "cpo",
        "env": {"env_id": "SafetyPointStcircle0-v0"},
        "policy": {"hidden": [16], "log_std_init": 1.0},
        "critic": {"hidden": [16], "iters": 2},
        "update": {"cost_limit": 2.0},
        "sampler": {"kind": "local", "steps_per_iter": 1000},
        "run": {"seed": 3, "iters": 2, "run_dir": str(run_dir), "tensorboard": False},
    })
    train(cfg, progress=False)
    return run_dir


def _run_tool(name, *args):
    out = subprocess.run([sys.executable, str(ROOT / "tools" / name), *map(str, args)],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_cost_gradient_snr(tiny_run):
    out = _run_tool("cost_gradient_snr.py", tiny_run, "--batches", 3, "--steps", 1000)
    assert len(re.findall(r"^batch \d: episode cost", out, flags=re.M)) == 3
    cosines = [float(x) for x in re.findall(r"-?\d+\.\d{3}", out.split("cos(g, a) within batches:")[1])]
    assert len(cosines) == 3 and all(-1.0 <= c <= 1.0 for c in cosines)


def test_cost_prediction_check_decomposes_the_real_change(tiny_run):
    out = _run_tool("cost_prediction_check.py", tiny_run, "--trials", 2, "--batch-steps", 1000,
                    "--eval-steps", 2000, "--workers", 1)
    trials = re.findall(r"actual\+ ([-+\d.]+) actual- ([-+\d.]+) lin ([-+\d.]+) quad ([-+\d.]+)", out)
    assert len(trials) == 2
    for dp, dm, lin, quad in (map(float, t) for t in trials):
        assert lin == pytest.approx((dp - dm) / 2, abs=0.011)  # printed to 2 decimals
        assert quad == pytest.approx((dp + dm) / 2, abs=0.011)
    assert "mean over trials: pred" in out

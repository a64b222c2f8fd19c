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
    assert len(cosines) == 3
    # recompute the tool's figures for its first batch independently: same policy, same sampler seed
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from _trained_run import load_trained_run
    finally:
        sys.path.pop(0)
    from metacpo.algorithms.common import process_batch, surrogate_losses
    from metacpo.functional import flat_grad, params_of
    from metacpo.samplers import LocalSampler, PolicySnapshot

    run = load_trained_run(tiny_run)
    adv = run.config.advantage
    with LocalSampler(run.env_id, seed=123) as sampler:
        (b,) = sampler.sample(snapshot=PolicySnapshot.from_policy(run.policy, run.obs_norm), num_steps=1000)
    params = params_of(run.policy)
    pb = process_batch(b, policy=run.policy, params=params, critic_r=run.critic_r, critic_c=run.critic_c,
                       obs_norm=run.obs_norm, gamma=adv.gamma, lam=adv.lam, cost_gamma=adv.cost_gamma,
                       cost_lam=adv.cost_lam)
    loss_r, loss_c = surrogate_losses(run.policy, params, pb)
    a = flat_grad(loss_c, params, retain_graph=True)
    g = flat_grad(loss_r, params)
    first = re.search(r"^batch 0: episode cost ([\d.]+)\s+\|g\| (\S+)\s+\|a\| (\S+)", out, flags=re.M)
    assert float(first.group(1)) == pytest.approx(float(b.episode_costs.mean()), abs=0.051)
    assert float(first.group(2)) == pytest.approx(float(g.norm()), rel=1e-3)
    assert float(first.group(3)) == pytest.approx(float(a.norm()), rel=1e-3)
    assert cosines[0] == pytest.approx(float(g @ a / (g.norm() * a.norm())), abs=6e-4)


def test_cost_prediction_check_decomposes_the_real_change(tiny_run):
    out = _run_tool("cost_prediction_check.py", tiny_run, "--trials", 2, "--batch-steps", 1000,
                    "--eval-steps", 2000, "--workers", 1)
    trials = re.findall(r"actual\+ ([-+\d.]+) actual- ([-+\d.]+) lin ([-+\d.]+) quad ([-+\d.]+)", out)
    assert len(trials) == 2
    for dp, dm, lin, quad in (map(float, t) for t in trials):
        assert lin == pytest.approx((dp - dm) / 2, abs=0.011)  # printed to 2 decimals
        assert quad == pytest.approx((dp + dm) / 2, abs=0.011)
    assert "mean over trials: pred" in out


def test_collect_cells_copies_the_rows_of_finished_cells_only(tmp_path):
    import json

    src, dst = tmp_path / "out", tmp_path / "data"
    for seed, status in ((0, "done"), (1, "running")):
        cell = src / "cpo" / "SafetyPointStcircle1-v0" / f"seed{seed}"
        (cell / "adapt").mkdir(parents=True)
        (cell / "cell.json").write_text(json.dumps({"status": status}))
        for name in ("progress.csv", "config.yaml", "adapt/adapt.csv", "adapt/adapt.json", "checkpoint.pt"):
            (cell / name).write_text(f"{name} of seed {seed}")
    out = _run_tool("collect_cells.py", src, dst)
    assert "copied cpo/SafetyPointStcircle1-v0/seed0" in out and "skip cpo/SafetyPointStcircle1-v0/seed1: running" in out
    done = dst / "cpo" / "SafetyPointStcircle1-v0" / "seed0"
    assert sorted(str(p.relative_to(done)) for p in done.rglob("*") if p.is_file()) == [
        "adapt/adapt.csv", "adapt/adapt.json", "cell.json", "config.yaml", "progress.csv"]
    assert (done / "adapt" / "adapt.csv").read_text() == "adapt/adapt.csv of seed 0"
    assert not (dst / "cpo" / "SafetyPointStcircle1-v0" / "seed1").exists()


def test_adapt_table_pools_cells_by_entry_and_counts_pairs_within_the_limit(tmp_path):
    files = []
    for label, seed, rows in (("a", 0, [(10.0, 0.0), (20.0, 30.0)]), ("a", 1, [(30.0, 20.0), (40.0, 50.0)]),
                              ("b", 0, [(1.0, 1.0), (3.0, 3.0)])):
        path = tmp_path / label / "SafetyPointStcircle1-v0" / f"seed{seed}" / "adapt" / "adapt.csv"
        path.parent.mkdir(parents=True)
        lines = ["label,task,seed,step,ep_return,ep_cost"] + [f"seed{seed},0,{i},1,{r},{c}" for i, (r, c) in enumerate(rows)]
        path.write_text("\n".join(lines) + "\n")
        files.append(path)
    out = _run_tool("adapt_table.py", *files, "--group", "cell", "--steps", "1")
    assert "| a | 4 | 25.0 / 25.0 (50%) |" in out  # returns 10..40, costs 0, 30, 20, 50: 2 of 4 within 25
    assert "| b | 2 | 2.0 / 2.0 (100%) |" in out
    pooled = _run_tool("adapt_table.py", *files, "--steps", "1", "--limit", "1")
    assert "| all | 6 | 17.3 / 17.3 (33%) |" in pooled  # costs 0 and 1 are within d = 1

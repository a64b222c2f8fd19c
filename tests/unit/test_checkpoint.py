import os
from pathlib import Path

import pytest
import torch

from metacpo.checkpoint import CheckpointError, config_mismatch, load_checkpoint, save_checkpoint
from metacpo.models.policy import GaussianMLPPolicy, PolicySpec


def _payload(it=3):
    policy = GaussianMLPPolicy(PolicySpec(obs_dim=4, act_dim=2, hidden=(8,)))
    import numpy as np

    rng = np.random.default_rng([1, 2])
    return {
        "iteration": it,
        "config": {"algo": "cpo", "update": {"delta": 0.01}},
        "algorithm": {
            "policy": policy.state_dict(),
            "rng": rng.bit_generator.state,  # 128-bit ints survive weights_only loading
            "torch_generator": torch.Generator().manual_seed(4).get_state(),
        },
    }


def test_round_trip_with_weights_only(tmp_path):
    path = save_checkpoint(tmp_path / "ck.pt", _payload())
    raw = torch.load(path, weights_only=True)  # no pickled modules inside
    assert raw["format"] == "metacpo-checkpoint/1"
    data = load_checkpoint(path)
    assert data["iteration"] == 3
    import numpy as np

    g = np.random.default_rng()
    g.bit_generator.state = data["algorithm"]["rng"]
    assert g.integers(1 << 30) == np.random.default_rng([1, 2]).integers(1 << 30)
    assert sorted(os.listdir(tmp_path)) == ["ck.pt"]  # no temporary files left behind


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "ck.pt", _payload(it=1))

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, _payload(it=2))
    monkeypatch.undo()
    assert load_checkpoint(path)["iteration"] == 1  # the old checkpoint is intact
    assert sorted(os.listdir(tmp_path)) == ["ck.pt"]


def test_corrupt_truncated_and_pickled_module_files_are_rejected_naming_the_file(tmp_path):
    good = save_checkpoint(tmp_path / "good.pt", _payload())
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated.pt.*corrupt"):
        load_checkpoint(truncated)
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_checkpoint(garbage)
    module = tmp_path / "module.pt"
    torch.save({"format": "metacpo-checkpoint/1", "policy": GaussianMLPPolicy(PolicySpec(4, 2))}, module)
    with pytest.raises(CheckpointError, match="module.pt"):
        load_checkpoint(module)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="other.pt has format None"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match="missing.pt does not exist"):
        load_checkpoint(Path(tmp_path / "missing.pt"))


def test_config_mismatch_names_keys():
    a = {"algo": "cpo", "update": {"delta": 0.01, "cost_limit": 25.0}, "run": {"iters": 5}}
    b = {"algo": "cpo", "update": {"delta": 0.02, "cost_limit": 25.0}, "run": {"iters": 9}}
    assert config_mismatch(a, b, ignore=("run.iters",)) == ["update.delta: checkpoint 0.01 vs now 0.02"]

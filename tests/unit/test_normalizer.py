import numpy as np
import pytest
import torch

from metacpo.data.normalizer import NormalizerState, RunningNormalizer


def test_running_statistics_equal_full_batch_statistics():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(1000, 4)) * np.array([1, 10, 0.1, 1])
    n = RunningNormalizer(4, clip=5.0)
    for chunk in np.array_split(x, [7, 100, 101, 640]):
        n.update(chunk)
    np.testing.assert_allclose(n.mean, x.mean(0), rtol=1e-10)
    np.testing.assert_allclose(n.var, x.var(0), rtol=1e-10)
    assert n.count == 1000
    z = n.normalize(x)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=0.05)
    assert np.abs(z).max() <= 5.0


def test_snapshot_is_frozen_and_state_dict_round_trips(tmp_path):
    n = RunningNormalizer(3, clip=10.0)
    n.update(np.arange(12.0).reshape(4, 3))
    snap = n.state()
    before = snap.normalize(np.ones(3))
    n.update(np.full((5, 3), 100.0))
    np.testing.assert_array_equal(snap.normalize(np.ones(3)), before)  # unaffected by later updates
    path = tmp_path / "n.pt"
    torch.save(n.state_dict(), path)
    m = RunningNormalizer(3)
    m.load_state_dict(torch.load(path, weights_only=True))
    np.testing.assert_array_equal(m.mean, n.mean)
    np.testing.assert_array_equal(m.var, n.var)
    assert (m.count, m.clip) == (n.count, n.clip)
    with pytest.raises(ValueError, match="dimension"):
        RunningNormalizer(2).load_state_dict(n.state_dict())


def test_identity_state_and_nonfinite_rejected():
    x = np.array([1.5, -2.0])
    np.testing.assert_allclose(NormalizerState.identity(2).normalize(x), x)
    with pytest.raises(FloatingPointError):
        RunningNormalizer(2).update(np.array([[np.nan, 1.0]]))

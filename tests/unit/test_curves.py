"""Training-curve plots and their printed summaries (metacpo.logging.curves)."""

import csv

import numpy as np
import pytest

from metacpo.logging.curves import main, rolling_mean


def _run(path, returns, costs):
    path.mkdir()
    with open(path / "progress.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["iteration", "rollout/env_steps", "rollout/ep_return_mean", "rollout/ep_cost_mean", "rollout/j_c"])
        for i, (r, c) in enumerate(zip(returns, costs)):
            w.writerow([i, 1000 * (i + 1), r, c, c])
    return path


def test_rolling_mean_is_trailing_and_skips_nan():
    np.testing.assert_allclose(rolling_mean(np.array([1.0, 3.0, np.nan, 5.0]), 2), [1.0, 2.0, 3.0, 5.0])


def test_overlay_plot_and_summaries(tmp_path, capsys):
    a = _run(tmp_path / "a", [0, 1, 2, 3, 4, 5], [50, 40, 30, 26, 24, 22])
    b = _run(tmp_path / "b", [0, 2, 4, 6, 8, 10], [60, 70, 80, 90, 100, 110])
    out = tmp_path / "plots" / "c.png"
    csv_copy = tmp_path / "saved.csv"
    csv_copy.write_text((b / "progress.csv").read_text())
    assert main([str(a), str(out), "--cost-limit", "25", "--window", "2", "--label", "cpo", "--with", f"trpo={b}",
                 "--with", f"saved={csv_copy}"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = dict(line.rsplit(": ", 1) for line in capsys.readouterr().out.strip().splitlines())
    assert float(printed["cpo cost_last"]) == pytest.approx(23.0)
    assert float(printed["cpo return_first"]) == pytest.approx(0.5)
    assert float(printed["trpo cost_last"]) == pytest.approx(105.0)
    assert float(printed["trpo iterations"]) == 6
    assert float(printed["saved cost_last"]) == pytest.approx(105.0)


@pytest.mark.parametrize("bad, message", [("trpo", "--with takes LABEL=RUN_DIR, got 'trpo'"),
                                          ("x=/no/such/run", "neither a progress CSV nor a run directory with /no/such/run/progress.csv")])
def test_bad_overlay_argument_is_named(tmp_path, capsys, bad, message):
    a = _run(tmp_path / "a", [0, 1], [1, 2])
    with pytest.raises(SystemExit) as exc:
        main([str(a), str(tmp_path / "o.png"), "--with", bad])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err

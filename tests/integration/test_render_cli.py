"""`metacpo render`, `metacpo plot` and the shipped-checkpoint `metacpo demo` through the CLI."""

from __future__ import annotations

import csv
import json

import imageio.v2 as imageio
import pytest

from metacpo.cli import main
from metacpo.commands.demo import DEMO_RUNS, demo_data_dir

pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning")
META = demo_data_dir() / "meta-cpo"


def test_shipped_demo_checkpoints_are_small_and_loadable():
    from metacpo.adaptation import load_initialisation

    for name in DEMO_RUNS:
        d = demo_data_dir() / name
        assert sorted(p.name for p in d.iterdir()) == ["checkpoint.pt", "progress.csv"]
        assert (d / "checkpoint.pt").stat().st_size < 200_000
        init = load_initialisation(d)
        assert init.config.env.env_id == "SafetyPointStcircle1-v0"
        assert set(init.state) == {"policy", "critic_r", "critic_c", "obs_norm"}
    assert load_initialisation(demo_data_dir() / "meta-cpo").config.algo == "meta-cpo"


def test_render_gif_with_adaptation_side_by_side(tmp_path, capsys):
    out = tmp_path / "v.gif"
    rc = main(["render", str(META), "--out", str(out), "--adapt", "1", "--adapt-steps", "500", "--every", "25",
               "--size", "64", "--task", "radius=2.2,wall_distance=1.3"])
    assert rc == 0
    frames = imageio.mimread(out, memtest=False)
    assert len(frames) == 1 + 500 // 25  # the start and every 25th of 500 steps
    assert frames[0].shape[:2] == (64, 64 + 4 + 64)
    printed = capsys.readouterr().out
    assert "CircleTask(radius=2.2, wall_distance=1.3)" in printed and "camera overview" in printed
    assert "before:" in printed and "after 1 update:" in printed
    assert f"wrote {out}: 21 frames of 132x64" in printed


def test_render_mp4_two_episodes(tmp_path, capsys):
    out = tmp_path / "v.mp4"
    assert main(["render", str(META), "--out", str(out), "--episodes", "2", "--every", "50", "--size", "48",
                 "--task-seed", "3"]) == 0
    frames = imageio.mimread(out, memtest=False)
    assert len(frames) == 2 * (1 + 500 // 50) and frames[0].shape == (48, 48, 3)
    assert "camera fixedfar" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--out", "x.avi"], "unsupported video format '.avi'"),
    (["--out", "x.gif", "--size", "8"], "--size must be an integer >= 16, got 8"),
    (["--out", "x.gif", "--task", "radius=2"], "missing ['wall_distance']"),
    (["--out", "x.gif", "--episodes", "0"], "--episodes must be an integer >= 1, got 0"),
])
def test_render_bad_input_is_one_line_exit_2(tmp_path, capsys, argv, message):
    argv = [str(tmp_path / a) if a.startswith("x.") else a for a in argv]
    assert main(["render", str(META), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not list(tmp_path.iterdir())  # nothing written


def test_plot_command(tmp_path, capsys):
    out = tmp_path / "curves.png"
    assert main(["plot", str(META), str(demo_data_dir() / "multitask-cpo" / "progress.csv"), "--out", str(out),
                 "--window", "5"]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("meta-cpo: 30 iterations")
    assert printed[1].startswith("progress: 30 iterations")
    assert printed[-1] == f"wrote {out} (cost limit 25)"
    assert main(["plot", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert main(["plot", str(META), "--out", str(tmp_path / "c.jpg")]) == 2
    assert "unsupported image format '.jpg'" in capsys.readouterr().err


def test_demo_with_shipped_checkpoints(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--tasks", "1", "--adapt-iters", "1", "--steps-per-iter", "500", "--video-size", "48",
               "--run-dir", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    rows = list(csv.DictReader((out / "adapt.csv").open()))
    assert {r["label"] for r in rows} == {"meta-cpo", "multitask-cpo", "cpo-from-scratch"}
    assert len(rows) == 3 * 1 * 2
    meta = json.loads((out / "adapt.json").read_text())["settings"]
    assert meta["env_id"] == "SafetyPointStcircle2-v0" and meta["level"] == 2
    table = printed.split("cost limit 25):\n", 1)[1].splitlines()
    assert table[0].split() == ["step", "meta-cpo", "multitask-cpo", "cpo-from-scratch"]
    assert [line.split()[0] for line in table[1:3]] == ["0", "1"]
    video = out / "adapt_meta-cpo.mp4"
    assert len(imageio.mimread(video, memtest=False)) == 1 + 500 // 2
    for path in (out / "adapt.png", video):
        assert str(path) in printed

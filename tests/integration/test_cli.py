"""The CLI's own contract: every command has truthful --help, bad input is one line + exit 2."""

import subprocess
import sys

import pytest

from metacpo.cli import COMMANDS, build_parser, main


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    assert f"usage: metacpo {name}" in capsys.readouterr().out


def test_all_commands_are_built():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)


def test_value_error_is_one_line_exit_2():
    out = subprocess.run(
        [sys.executable, "-m", "metacpo.cli", "train", "--algo", "nope", "--iters", "1"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 2
    lines = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert "'nope'" in lines[0] and "cpo" in lines[0]
    assert "Traceback" not in out.stderr


def test_demo_runs_and_reports_where_results_went(tmp_path, capsys):
    run_dir = tmp_path / "demo"
    rc = main(["demo", "--train", "--iters", "1", "--steps-per-iter", "500", "--adapt-iters", "1",
               "--no-video", "--run-dir", str(run_dir)])
    assert rc == 0
    out = capsys.readouterr().out
    for name in ("progress.csv", "checkpoint.pt", "adapt.csv", "adapt.json", "adapt.png"):
        assert (run_dir / name).is_file(), name
        assert str(run_dir / name) in out
    import csv

    rows = list(csv.DictReader((run_dir / "adapt.csv").open()))
    assert {r["label"] for r in rows} == {"demo", "cpo-from-scratch"}
    assert len(rows) == 2 * 2 * 2  # 2 curves x 2 held-out tasks x (initial + 1 update)


def test_train_help_lists_each_algorithm_section_once():
    out = subprocess.run([sys.executable, "-m", "metacpo.cli", "train", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0
    assert out.stdout.count("  meta.inner_steps = ") == 1  # meta-cpo and meta-trpo share one [meta] listing
    assert "[meta] section (algo meta-cpo, meta-trpo only):" in out.stdout


def test_train_flags_reach_the_config_as_typed_values():
    """A flag's text is converted to its field's type (never re-parsed as YAML): a run dir or Ray
    address that looks like a number stays a string; numbers are numbers; flags beat --set."""
    from metacpo.commands.train import build_config

    parser = build_parser()
    args = parser.parse_args(["train", "--run-dir", "0123", "--seed", "7", "--cost-limit", "10",
                              "--sampler", "ray", "--ray-address", "1.5", "--set", "run.seed=1",
                              "--set", "update.delta=0.02"])
    config = build_config(args)
    assert config.run.run_dir == "0123" and config.sampler.ray_address == "1.5"
    assert config.run.seed == 7 and config.constraint.cost_limit == 10.0 and config.update.delta == 0.02
    assert isinstance(config.constraint.cost_limit, float) and config.sampler.kind == "ray"

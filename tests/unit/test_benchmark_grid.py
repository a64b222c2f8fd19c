"""Grid files: validation (one-line errors naming the bad value) and the resolved cell configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from metacpo.adaptation import TEST_SEED_BASE
from metacpo.benchmark.grid import load_grid
from metacpo.cli import main

REPO = Path(__file__).resolve().parents[2]
BASE = {
    "name": "t",
    "description": "test grid",
    "train": {"sampler.kind": "local", "run.iters": 2, "sampler.steps_per_iter": 500},
    "algorithms": {"cpo": {"algo": "cpo"}, "trpo": {"algo": "trpo", "set": {"update.delta": 0.02}}},
    "envs": ["SafetyPointStcircle1-v0"],
    "seeds": [0, 1],
}


def _write(tmp_path: Path, data: dict, name: str = "g.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def _with(**changes) -> dict:
    d = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}
    d.update(changes)
    return d


@pytest.mark.parametrize("changes, message", [
    ({"bogus": 1}, "unknown key 'bogus'; allowed: ['name', 'description', 'train', 'algorithms', 'envs', 'seeds', 'adapt']"),
    ({"algorithms": {"x": {"algo": "ppo"}}}, "unknown algo 'ppo' in algorithms.x; allowed: ['cpo', 'meta-cpo', 'meta-trpo', 'multitask-cpo', 'multitask-trpo-lag', 'trpo', 'trpo-lag']"),
    ({"algorithms": {"x": {"algo": "cpo", "sett": {}}}}, "unknown key 'sett' in algorithms.x"),
    ({"algorithms": {"a/b": {"algo": "cpo"}}}, "algorithm label 'a/b' must be"),
    ({"envs": ["SafetyPointCircle9-v0"]}, "unknown env id 'SafetyPointCircle9-v0'"),
    ({"envs": []}, "envs must be a non-empty list"),
    ({"seeds": [0, 0]}, "seeds lists a seed twice: [0, 0]"),
    ({"seeds": [-1]}, "bad seed -1"),
    ({"seeds": [TEST_SEED_BASE]}, f"bad seed {TEST_SEED_BASE}"),
    ({"seeds": ["0"]}, "bad seed '0'"),
    ({"seeds": 3}, "seeds must be a non-empty list"),
    ({"train": {"run.seed": 3}}, "key 'run.seed' is set by the grid per cell"),
    ({"train": {"env.env_id": "X"}}, "key 'env.env_id' is set by the grid per cell"),
    ({"train": {"iters": 3}}, "key 'iters' must be section.key"),
    ({"train": {"sampler.kind": "ray"}}, "sampler.kind 'ray' is not allowed in a grid; allowed: ['local', 'process']"),
    ({"train": {"run.iterz": 3}}, "algorithms.cpo on SafetyPointStcircle1-v0: unknown key(s) ['iterz'] in config section 'run'"),
    ({"train": {"update.delta": -1.0}}, "update.delta must be > 0, got -1.0"),
    ({"train": {"meta.inner_steps": 1}}, "config section(s) ['meta']"),
    ({"algorithms": {"s": {"algo": "cpo", "train": False}}}, "has train: false but the grid has no adapt stage"),
    ({"adapt": {"level": 2, "tasks": 2}}, "adapt.steps_per_iter is required"),
    ({"adapt": {"steps_per_iter": 500, "taks": 2}}, "unknown key 'taks' in adapt"),
    ({"adapt": {"steps_per_iter": 500, "tasks": 0}}, "--tasks must be >= 1, got 0"),
    ({"adapt": {"steps_per_iter": 500, "tasks": "5"}}, "config key adapt.tasks expects an integer, got '5'"),
    ({"adapt": {"steps_per_iter": 500}, "envs": ["SafetyPointCircle1-v0"]}, "the adapt stage needs metacpo task-family env ids"),
    ({"name": "a b"}, "name must be a word"),
    ({"adapt": {"steps_per_iter": 500, "meta_steps": -1}}, "--meta-steps must be an integer >= 0 (or omitted: the inner step for every update), got -1"),
    ({"adapt": {"steps_per_iter": 500, "meta_steps": "3"}}, "--meta-steps must be an integer >= 0 (or omitted: the inner step for every update), got '3'"),
    ({"algorithms": {"x": {"algo": "cpo", "level": 5}}},
     "algorithms.x on SafetyPointStcircle1-v0: level 5 is not a level of the 'circle' task family; allowed: [0, 1, 2]"),
    ({"algorithms": {"x": {"algo": "cpo", "level": -1}}}, "algorithms.x.level must be an integer >= 0 (a level of the env's task family), got -1"),
    ({"algorithms": {"x": {"algo": "cpo", "level": "0"}}}, "algorithms.x.level must be an integer >= 0 (a level of the env's task family), got '0'"),
    ({"algorithms": {"x": {"algo": "cpo", "level": True}}}, "algorithms.x.level must be an integer >= 0"),
    ({"algorithms": {"a": {"algo": "meta-cpo", "init": "z"}, "z": {"algo": "cpo"}}},
     "algorithms.a.init 'z' must name an earlier entry that trains; allowed: []"),
    ({"algorithms": {"cpo": {"algo": "cpo"}, "m": {"algo": "meta-cpo", "init": "cp"}}},
     "algorithms.m.init 'cp' must name an earlier entry that trains; allowed: ['cpo']"),
    ({"algorithms": {"cpo": {"algo": "cpo"}, "m": {"algo": "meta-cpo", "init": "cpo", "train": False}},
      "adapt": {"steps_per_iter": 500}}, "algorithms.m has init 'cpo' and train: false"),
    ({"algorithms": {"cpo": {"algo": "cpo"}, "m": {"algo": "meta-cpo", "init": "cpo", "set": {"run.init_from": "/x"}}}},
     "algorithms.m gives both init and set run.init_from; use one"),
    ({"algorithms": {"x": {"algo": "cpo", "level": 0}}, "envs": ["SafetyPointCircle1-v0"]},
     "algorithms.x on SafetyPointCircle1-v0: level 0 needs a metacpo task-family env id (e.g. SafetyPointStcircle1-v0), "
     "got 'SafetyPointCircle1-v0'"),
])
def test_bad_grids_are_one_line_errors(tmp_path, capsys, changes, message):
    path = _write(tmp_path, _with(**changes))
    with pytest.raises(ValueError) as exc:
        load_grid(path)
    assert message in str(exc.value) and str(path) in str(exc.value)
    # the CLI: one line on stderr, exit 2, nothing written
    out = tmp_path / "out"
    assert main(["benchmark", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not out.exists()


def test_missing_and_malformed_files(tmp_path, capsys):
    assert main(["benchmark", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "grid file" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    assert main(["benchmark", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "invalid YAML" in capsys.readouterr().err


def test_cells_resolve_configs_in_order(tmp_path):
    # preset < train < algorithm set < grid-owned keys
    grid = load_grid(_write(tmp_path, _with(
        train={"sampler.kind": "local", "run.iters": 2, "sampler.steps_per_iter": 500, "update.delta": 0.03},
        algorithms={
            "cpo-preset": {"algo": "cpo", "preset": "cpo_point_circle", "set": {"margin.gain": 0.3}},
            "trpo": {"algo": "trpo", "set": {"update.delta": 0.02, "run.iters": 4}},
        },
    )))
    cells = grid.cells(tmp_path / "out")
    assert [c.key for c in cells] == ["cpo-preset/SafetyPointStcircle1-v0/seed0", "cpo-preset/SafetyPointStcircle1-v0/seed1",
                                      "trpo/SafetyPointStcircle1-v0/seed0", "trpo/SafetyPointStcircle1-v0/seed1"]
    c = cells[1]
    assert c.config.algo == "cpo" and c.config.run.seed == 1
    assert c.config.env.env_id == "SafetyPointStcircle1-v0"  # grid env beats the preset's SafetyPointCircle1-v0
    assert c.config.policy.hidden == (64, 64) and c.config.update.metric == "fisher"  # from the preset
    assert c.config.update.delta == 0.03  # train beats the preset's 0.01
    assert c.config.extra["margin"].gain == 0.3  # set beats the preset's 0.2
    assert c.config.sampler.steps_per_iter == 500 and c.config.run.iters == 2
    assert Path(c.config.run.run_dir) == (tmp_path / "out" / "cpo-preset" / "SafetyPointStcircle1-v0" / "seed1").resolve()
    t = cells[2]
    assert t.config.algo == "trpo" and t.config.update.delta == 0.02 and t.config.run.iters == 4
    assert all(c.adapt is None and c.cpus == 1 for c in cells)


def test_adapt_stage_same_for_every_cell_of_an_env(tmp_path):
    grid = load_grid(_write(tmp_path, _with(
        train={"sampler.kind": "process", "sampler.workers": 2, "run.iters": 2},
        algorithms={"a": {"algo": "cpo", "set": {"update.cost_limit": 10.0}}, "b": {"algo": "meta-cpo"}},
        adapt={"level": 2, "tasks": 3, "seeds": 2, "adapt_iters": 4, "steps_per_iter": 1000, "cost_limit": 20},
    )))
    cells = grid.cells(tmp_path / "out")
    assert all(c.adapt == cells[0].adapt for c in cells)
    a = cells[0].adapt
    assert (a.level, a.tasks, a.seeds, a.adapt_iters, a.steps_per_iter, a.cost_limit) == (2, 3, 2, 4, 1000, 20.0)
    assert all(c.cpus == 2 for c in cells)  # the sampler workers
    # without adapt.cost_limit the cells' common constraint.cost_limit (set here by its old name update.cost_limit) is used; different limits are an error
    no_limit = {"steps_per_iter": 1000}
    grid = load_grid(_write(tmp_path, _with(algorithms={"a": {"algo": "cpo"}, "b": {"algo": "meta-cpo"}}, adapt=no_limit)))
    assert {c.adapt.cost_limit for c in grid.cells(tmp_path)} == {25.0}
    with pytest.raises(ValueError, match=r"different constraint.cost_limit \[10.0, 25.0\]; set adapt.cost_limit"):
        load_grid(_write(tmp_path, _with(algorithms={"a": {"algo": "cpo", "set": {"update.cost_limit": 10.0}},
                                                     "b": {"algo": "meta-cpo"}}, adapt=no_limit)))


def test_entry_with_a_level_trains_on_that_level_of_the_grid_envs_family(tmp_path):
    grid = load_grid(_write(tmp_path, _with(
        envs=["SafetyPointStcircle1-v0", "SafetyCarStbutton1-v0"],
        algorithms={"cpo": {"algo": "cpo"}, "cpo-level0": {"algo": "cpo", "level": 0},
                    "cpo-level2": {"algo": "cpo", "level": 2}},
        adapt={"level": 2, "tasks": 2, "steps_per_iter": 1000},
    )))
    cells = {c.key: c for c in grid.cells(tmp_path / "out")}
    trained_on = {k: c.config.env.env_id for k, c in cells.items() if k.endswith("seed0")}
    assert trained_on == {
        "cpo/SafetyPointStcircle1-v0/seed0": "SafetyPointStcircle1-v0",
        "cpo/SafetyCarStbutton1-v0/seed0": "SafetyCarStbutton1-v0",
        "cpo-level0/SafetyPointStcircle1-v0/seed0": "SafetyPointStcircle0-v0",
        "cpo-level0/SafetyCarStbutton1-v0/seed0": "SafetyCarStbutton0-v0",
        "cpo-level2/SafetyPointStcircle1-v0/seed0": "SafetyPointStcircle2-v0",
        "cpo-level2/SafetyCarStbutton1-v0/seed0": "SafetyCarStbutton2-v0",
    }
    c = cells["cpo-level0/SafetyPointStcircle1-v0/seed1"]
    assert c.env_id == "SafetyPointStcircle1-v0" and c.train_env_id == "SafetyPointStcircle0-v0"
    assert Path(c.config.run.run_dir) == (tmp_path / "out" / "cpo-level0" / "SafetyPointStcircle1-v0" / "seed1").resolve()
    # the same meta-test stage as the grid env's other cells
    assert c.adapt == cells["cpo/SafetyPointStcircle1-v0/seed1"].adapt and c.adapt.level == 2
    # the pending cell.json records the training env
    from metacpo.benchmark.runner import cell_state_for

    assert cell_state_for(grid, c).train_env_id == "SafetyPointStcircle0-v0"
    assert cell_state_for(grid, cells["cpo/SafetyPointStcircle1-v0/seed1"]).train_env_id == "SafetyPointStcircle1-v0"


def test_entry_with_init_starts_from_the_sibling_cell_of_the_same_env_and_seed(tmp_path):
    grid = load_grid(_write(tmp_path, _with(
        algorithms={"cpo-level0": {"algo": "cpo", "level": 0}, "warm": {"algo": "meta-cpo", "init": "cpo-level0"}},
        adapt={"level": 2, "tasks": 2, "steps_per_iter": 1000},
    )))
    cells = {c.key: c for c in grid.cells(tmp_path / "out")}
    out = (tmp_path / "out").resolve()
    for seed in (0, 1):
        warm = cells[f"warm/SafetyPointStcircle1-v0/seed{seed}"]
        assert warm.config.run.init_from == str(out / "cpo-level0" / "SafetyPointStcircle1-v0" / f"seed{seed}")
        assert cells[f"cpo-level0/SafetyPointStcircle1-v0/seed{seed}"].config.run.init_from == ""
    from metacpo.benchmark.runner import _init_cells, plan

    deps = _init_cells(plan(grid, out))
    assert deps == {f"warm/SafetyPointStcircle1-v0/seed{s}": f"cpo-level0/SafetyPointStcircle1-v0/seed{s}" for s in (0, 1)}


def test_adapt_meta_steps_reaches_the_cells_and_is_left_out_of_cell_json_at_its_default(tmp_path):
    from metacpo.adaptation import AdaptSettings
    from metacpo.benchmark.grid import adapt_settings_dict

    grid = load_grid(_write(tmp_path, _with(adapt={"steps_per_iter": 500, "meta_steps": 3})))
    assert {c.adapt.meta_steps for c in grid.cells(tmp_path / "out")} == {3}
    assert adapt_settings_dict(grid.cells(tmp_path / "out")[0].adapt)["meta_steps"] == 3
    # cells meta-tested before the setting existed (cell.json without it) still match the default
    plain = adapt_settings_dict(AdaptSettings(steps_per_iter=500, cost_limit=25.0))
    assert "meta_steps" not in plain and adapt_settings_dict(AdaptSettings(**plain)) == plain
    assert adapt_settings_dict(AdaptSettings(meta_steps=0))["meta_steps"] == 0


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "benchmarks").glob("*.yaml")))
def test_shipped_grids_are_valid(name):
    grid = load_grid(REPO / "benchmarks" / name)
    assert grid.name == Path(name).stem and grid.description
    assert len(grid.cells("/tmp/unused")) == len(grid.algorithms) * len(grid.envs) * len(grid.seeds)


@pytest.mark.parametrize("name", ["cpo_circle_advgamma", "meta_ablation_pointstcircle"])
def test_finished_cells_written_before_the_constraint_section_are_still_finished(tmp_path, name):
    """The committed cells of these grids (docs/data/grids, cell.json with ``update.cost_limit``)
    are planned as finished against the grid file, which now says ``constraint.cost_limit``."""
    import json
    import shutil

    from metacpo.benchmark.runner import plan
    from metacpo.checkpoint import save_checkpoint

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / name
    shutil.copytree(root / "docs" / "data" / "grids" / name, out)
    cells = sorted(out.rglob("cell.json"))
    assert cells and all("cost_limit" in json.loads(c.read_text())["config"]["update"] for c in cells)
    for c in cells:  # the checkpoints are not committed: a finished one holds the last iteration
        config = json.loads(c.read_text())["config"]
        save_checkpoint(c.parent / "checkpoint.pt", {"iteration": config["run"]["iters"], "config": config,
                                                      "algorithm": {}})
    planned = {p.dir.resolve(): p for p in plan(load_grid(root / "benchmarks" / f"{name}.yaml"), out)}
    assert [(planned[c.parent.resolve()].action, planned[c.parent.resolve()].reason) for c in cells] == \
        [("skip", "")] * len(cells)

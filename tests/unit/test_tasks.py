"""Task parameters, distributions (Table 1 ranges), env-id parsing, overrides and bad input."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest

from metacpo import tasks
from metacpo.tasks import ButtonTask, CircleTask, IntUniform, ParamDomain, Uniform
from metacpo.tasks.spec import make_range

N_DRAWS = 500


@pytest.fixture(autouse=True)
def _no_overrides():
    tasks.clear_overrides()
    yield
    tasks.clear_overrides()


# ---- env ids --------------------------------------------------------------------------------


def test_parse_env_id_all_registered_ids():
    ids = tasks.registered_ids()
    assert len([i for i in ids if "Stcircle" in i or "Stbutton" in i]) == 4 * 4 * 3
    for agent in ("Point", "Car", "Doggo", "Racecar"):
        for fam in ("circle", "button", "buttonref", "circleref"):
            for level in (0, 1, 2):
                eid = f"Safety{agent}St{fam}{level}-v0"
                assert eid in ids
                assert tasks.parse_env_id(eid) == (agent, fam, level)


@pytest.mark.parametrize(("bad", "needle"), [
    ("SafetyAntStcircle1-v0", "unknown agent 'Ant'"),
    ("SafetyPointStsquare1-v0", "unknown task family 'square'"),
    ("SafetyPointStcircle3-v0", "unknown level 3"),
    ("SafetyPointStcircle1-v1", "unknown version 'v1'"),
    ("PointCircle", "malformed env id"),
])
def test_parse_env_id_errors_name_bad_part_and_allowed(bad, needle):
    with pytest.raises(ValueError, match=needle) as exc:
        tasks.parse_env_id(bad)
    msg = str(exc.value)
    if "agent" in needle:
        assert "Point, Car, Doggo, Racecar" in msg
    if "family" in needle:
        assert "button" in msg and "circle" in msg
    if "level" in needle:
        assert "0, 1, 2" in msg


# ---- level tables ---------------------------------------------------------------------------


def test_level0_is_one_fixed_task():
    rng = np.random.default_rng(0)
    c = tasks.get_distribution("circle", 0)
    b = tasks.get_distribution("button", 0)
    assert c.is_fixed and b.is_fixed
    assert set(c.sample_n(rng, 20)) == {CircleTask(radius=1.25, wall_distance=0.75 * 1.25)}
    assert set(b.sample_n(rng, 20)) == {ButtonTask(half_size=1.9, num_buttons=4, num_hazards=7,
                                                   wrong_button_cost=0.0)}


@pytest.mark.parametrize(("level", "r_lo", "r_hi", "q_lo", "q_hi"),
                         [(1, 1.0, 1.5, 0.55, 0.75), (2, 2.0, 2.5, 0.55, 0.65)])
def test_circle_draws_stay_in_table_ranges(level, r_lo, r_hi, q_lo, q_hi):
    draws = tasks.get_distribution(f"SafetyPointStcircle{level}-v0").sample_n(np.random.default_rng(level), N_DRAWS)
    r = np.array([t.radius for t in draws])
    q = np.array([t.wall_distance / t.radius for t in draws])
    assert r.min() >= r_lo and r.max() <= r_hi
    assert q.min() >= q_lo - 1e-12 and q.max() <= q_hi + 1e-12
    # the draws spread over the range (not a constant)
    assert r.max() - r.min() > 0.8 * (r_hi - r_lo)
    assert q.max() - q.min() > 0.8 * (q_hi - q_lo)


@pytest.mark.parametrize(("level", "h_lo", "h_hi", "buttons", "extra", "wrong"),
                         [(1, 1.75, 2.0, range(3, 7), 3, 0.0), (2, 2.6, 2.9, range(6, 11), 6, 1.0)])
def test_button_draws_stay_in_table_ranges(level, h_lo, h_hi, buttons, extra, wrong):
    draws = tasks.get_distribution("button", level).sample_n(np.random.default_rng(10 + level), N_DRAWS)
    h = np.array([t.half_size for t in draws])
    assert h.min() >= h_lo and h.max() <= h_hi
    nb = {t.num_buttons for t in draws}
    assert nb == set(buttons)  # every count of U{a..b} occurs, nothing else
    assert all(t.num_hazards == t.num_buttons + extra for t in draws)
    assert all(t.wrong_button_cost == wrong for t in draws)


def test_level2_disjoint_from_level1_where_table_says_so():
    rng = np.random.default_rng(7)
    c1 = tasks.get_distribution("circle", 1).sample_n(rng, N_DRAWS)
    c2 = tasks.get_distribution("circle", 2).sample_n(rng, N_DRAWS)
    assert max(t.radius for t in c1) < min(t.radius for t in c2)
    b1 = tasks.get_distribution("button", 1).sample_n(rng, N_DRAWS)
    b2 = tasks.get_distribution("button", 2).sample_n(rng, N_DRAWS)
    assert max(t.half_size for t in b1) < min(t.half_size for t in b2)
    assert max(t.num_hazards for t in b1) < min(t.num_hazards for t in b2)  # 9 < 12
    # the declared ranges themselves are disjoint too
    assert tasks.get_distribution("circle", 1).range_of("radius").high < \
        tasks.get_distribution("circle", 2).range_of("radius").low
    assert tasks.get_distribution("button", 1).range_of("half_size").high < \
        tasks.get_distribution("button", 2).range_of("half_size").low


def test_seeded_draws_are_deterministic_and_seed_dependent():
    d = tasks.get_distribution("SafetyCarStbutton1-v0")
    a = d.sample_n(np.random.default_rng(123), 10)
    b = d.sample_n(np.random.default_rng(123), 10)
    c = d.sample_n(np.random.default_rng(124), 10)
    assert a == b and a != c
    rng = np.random.default_rng(5)
    seq = [d.sample(rng) for _ in range(4)]
    assert seq == d.sample_n(np.random.default_rng(5), 4)


def test_tasks_are_frozen_picklable_and_know_their_family():
    t = CircleTask(radius=1.2, wall_distance=0.8)
    assert t.family == "circle" and ButtonTask.family == "button"
    assert pickle.loads(pickle.dumps(t)) == t
    with pytest.raises(AttributeError):
        t.radius = 2.0  # type: ignore[misc]
    assert t.as_dict() == {"radius": 1.2, "wall_distance": 0.8}


def test_describe_lists_ranges_and_derived_fields():
    desc = tasks.get_distribution("circle", 1).describe()
    assert desc == {"radius": "U(1, 1.5)", "wall_ratio": "U(0.55, 0.75)",
                    "wall_distance": "radius * wall_ratio"}
    assert tasks.get_distribution("button", 2).describe()["num_buttons"] == "U{6..10}"


# ---- bad input --------------------------------------------------------------------------------


def test_task_constructors_reject_bad_values():
    with pytest.raises(ValueError, match=r"radius=-1.0 .*number > 0"):
        CircleTask(radius=-1.0, wall_distance=0.5)
    with pytest.raises(ValueError, match=r"wall_distance=0.1 .*> 0.2"):
        CircleTask(radius=1.0, wall_distance=0.1)
    with pytest.raises(ValueError, match=r"num_buttons=0 .*integer >= 1"):
        ButtonTask(half_size=2.0, num_buttons=0, num_hazards=3)
    with pytest.raises(ValueError, match=r"half_size=0.0"):
        ButtonTask(half_size=0.0, num_buttons=2, num_hazards=3)
    with pytest.raises(ValueError, match=r"wrong_button_cost=-1"):
        ButtonTask(half_size=2.0, num_buttons=2, num_hazards=3, wrong_button_cost=-1)


def test_make_range_validation():
    radius = ParamDomain("radius", "r", minimum=0.0, min_inclusive=False)
    count = ParamDomain("num_buttons", "n", integer=True, minimum=1)
    assert make_range(radius, [1.0, 2.0], where="x") == Uniform(1.0, 2.0)
    assert make_range(count, [3, 6], where="x") == IntUniform(3, 6)
    assert make_range(count, {"low": 4, "high": 4}, where="x") == tasks.Fixed(4)
    with pytest.raises(ValueError, match=r"low 2 > high 1; expected low <= high"):
        make_range(radius, [2.0, 1.0], where="x")
    with pytest.raises(ValueError, match=r"radius=-0.5 is not allowed; allowed: number > 0"):
        make_range(radius, [-0.5, 1.0], where="x")
    with pytest.raises(ValueError, match=r"num_buttons=0 is not allowed; allowed: integer >= 1"):
        make_range(count, [0, 3], where="x")
    with pytest.raises(ValueError, match=r"must be an integer, got 2.5"):
        make_range(count, [2.5, 3], where="x")
    with pytest.raises(ValueError, match=r"\[low, high\]"):
        make_range(radius, [1.0, 2.0, 3.0], where="x")


def test_get_distribution_errors():
    with pytest.raises(ValueError, match="unknown task family 'square'; allowed: button, buttonref, circle, circleref"):
        tasks.get_distribution("square", 1)
    with pytest.raises(ValueError, match="unknown level 5 for family 'circle'; allowed: 0, 1, 2"):
        tasks.get_distribution("circle", 5)
    with pytest.raises(ValueError, match="level is required"):
        tasks.get_distribution("circle")
    with pytest.raises(ValueError, match="rng must be a numpy.random.Generator"):
        tasks.get_distribution("circle", 1).sample(np.random.RandomState(0))


# ---- overrides --------------------------------------------------------------------------------


def test_overrides_yaml_and_toml_agree_and_apply(tmp_path):
    y = tmp_path / "o.yaml"
    y.write_text("circle:\n  1: {radius: [1.1, 1.2]}\nbutton:\n  level2: {num_buttons: [6, 7]}\n")
    t = tmp_path / "o.toml"
    t.write_text('[circle.1]\nradius = [1.1, 1.2]\n[button.2]\nnum_buttons = [6, 7]\n')
    dy = tasks.load_distribution_overrides(str(y), apply=False)
    dt = tasks.load_distribution_overrides(str(t), apply=False)
    assert [d.ranges for d in dy] == [d.ranges for d in dt]
    assert tasks.get_distribution("circle", 1).range_of("radius") == Uniform(1.0, 1.5)  # not applied
    tasks.load_distribution_overrides(str(y))
    assert tasks.get_distribution("circle", 1).range_of("radius") == Uniform(1.1, 1.2)
    # unlisted parameters keep the built-in range
    assert tasks.get_distribution("circle", 1).range_of("wall_ratio") == Uniform(0.55, 0.75)
    draws = tasks.get_distribution("SafetyPointStbutton2-v0").sample_n(np.random.default_rng(0), 200)
    assert {d.num_buttons for d in draws} == {6, 7}
    tasks.clear_overrides()
    assert tasks.get_distribution("circle", 1).range_of("radius") == Uniform(1.0, 1.5)


@pytest.mark.parametrize(("text", "needle"), [
    ("circle:\n  1: {radius: [1.5, 1.0]}\n", "low 1.5 > high 1"),
    ("circle:\n  1: {radius: [-1.0, 1.0]}\n", "radius=-1.0 is not allowed; allowed: number > 0"),
    ("button:\n  1: {num_buttons: [0, 3]}\n", "num_buttons=0 is not allowed; allowed: integer >= 1"),
    ("circle:\n  7: {radius: 1.0}\n", "unknown level 7 for family 'circle'; allowed: 0, 1, 2"),
    ("square:\n  1: {radius: 1.0}\n", "unknown task family 'square'"),
    ("circle:\n  1: {diameter: 1.0}\n", "unknown parameter 'diameter'.*allowed: radius, wall_ratio"),
    ("circle:\n  1: {radius: 0.3, wall_ratio: 0.5}\n", "wall_distance=0.15"),
    ("- 1\n- 2\n", "expected a mapping"),
])
def test_bad_override_files_raise_value_errors(tmp_path, text, needle):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ValueError, match=needle):
        tasks.load_distribution_overrides(str(p))
    assert tasks.get_distribution("circle", 1).range_of("radius") == Uniform(1.0, 1.5)


def test_override_file_type_and_existence(tmp_path):
    p = tmp_path / "o.json"
    p.write_text("{}")
    with pytest.raises(ValueError, match=r"unsupported override file type '.json'.*\.yaml, \.yml, \.toml"):
        tasks.load_distribution_overrides(str(p))
    with pytest.raises(FileNotFoundError):
        tasks.load_distribution_overrides(str(tmp_path / "missing.yaml"))


def test_family_definition_validation():
    with pytest.raises(ValueError, match="lower-case letters"):
        tasks.TaskFamily(name="Goal2", task_type=CircleTask, params=(), build_task=dict, levels={0: {}},
                         task_class=object, max_episode_steps=10)
    with pytest.raises(ValueError, match="already registered"):
        tasks.add_family(dataclasses.replace(tasks.CIRCLE))


# ---- metacpo envs -----------------------------------------------------------------------------


def test_envs_command_lists_every_id_with_ranges(capsys):
    from metacpo.cli import main

    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    for agent in ("Point", "Car", "Doggo", "Racecar"):
        assert f"Safety{agent}Stcircle1-v0" in out and f"Safety{agent}Stbutton2-v0" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("SafetyPointStcircle1-v0"))
    assert "radius=U(1, 1.5)" in line and "wall_ratio=U(0.55, 0.75)" in line and "500 steps" in line
    line = next(ln for ln in out.splitlines() if ln.startswith("SafetyCarStbutton2-v0"))
    assert "num_buttons=U{6..10}" in line and "half_size=U(2.6, 2.9)" in line and "1000 steps" in line


def test_envs_command_filters_and_json(capsys):
    import json

    from metacpo.cli import main

    assert main(["envs", "--family", "button", "--agent", "Doggo", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in rows] == [f"SafetyDoggoStbutton{lv}-v0" for lv in (0, 1, 2)]
    assert rows[0]["fixed"] and not rows[1]["fixed"]


@pytest.mark.parametrize(("argv", "needle"), [
    (["envs", "--agent", "Ant"], "error: unknown agent 'Ant'; allowed: Point, Car, Doggo, Racecar"),
    (["envs", "--family", "square"], "error: unknown task family 'square'; allowed: button, buttonref, circle"),
    (["envs", "--level", "4"], "error: unknown level 4"),
])
def test_envs_command_bad_input_is_one_line_exit_2(capsys, argv, needle):
    from metacpo.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(needle)
    assert "Traceback" not in "\n".join(err)


def test_envs_command_bad_override_file_exit_2(capsys, tmp_path):
    from metacpo.cli import main

    p = tmp_path / "bad.toml"
    p.write_text("[circle.1]\nradius = [1.5, 1.0]\n")
    assert main(["envs", "--overrides", str(p)]) == 2
    assert "low 1.5 > high 1" in capsys.readouterr().err

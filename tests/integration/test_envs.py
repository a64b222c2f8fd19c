"""Every registered id under Safety-Gymnasium's env checker; spaces; determinism; make_env."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from gymnasium.utils.passive_env_checker import check_action_space, check_observation_space, env_reset_passive_checker

import metacpo  # noqa: F401  (registers the ids)
from metacpo import tasks
from metacpo.compat import import_safety_gymnasium
from metacpo.tasks import ButtonTask, CircleTask

sg = import_safety_gymnasium()
from safety_gymnasium.wrappers.env_checker import SafePassiveEnvChecker  # noqa: E402

# safety-gymnasium 1.0.0 reads joint types with a deprecated numpy conversion (Car, Racecar)
pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUR_IDS = [i for i in tasks.registered_ids() if "Stcircle" in i or "Stbutton" in i]


def _unwrap_chain(env):
    chain = []
    while hasattr(env, "env"):
        chain.append(type(env).__name__)
        env = env.env
    return chain


@pytest.mark.parametrize("env_id", OUR_IDS)
def test_every_id_passes_safety_gymnasium_env_checker(env_id):
    env = sg.make(env_id)
    assert "SafePassiveEnvChecker" in _unwrap_chain(env)
    agent, family, level = tasks.parse_env_id(env_id)
    assert env.spec.max_episode_steps == tasks.get_family(family).max_episode_steps
    check_observation_space(env.observation_space)
    check_action_space(env.action_space)
    obs, info = env_reset_passive_checker(env.unwrapped, seed=0)
    assert env.observation_space.contains(obs)
    assert isinstance(info["task"], tasks.get_family(family).task_type)
    assert env.unwrapped.task_params == info["task"]
    assert tasks.get_distribution(family, level).family.name == family
    checked = SafePassiveEnvChecker(env.unwrapped)
    checked.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(3):  # the checker validates the six-value step on its first call
        out = checked.step(rng.uniform(env.action_space.low, env.action_space.high))
        assert len(out) == 6
        obs, reward, cost, terminated, truncated, info = out
        assert env.observation_space.contains(obs)
        assert np.isfinite(reward) and cost in (0.0, 1.0)
        assert isinstance(terminated, bool) and isinstance(truncated, bool)
        assert "cost_sum" in info


@pytest.mark.parametrize("agent", ["Point", "Car", "Doggo", "Racecar"])
def test_spaces_identical_across_tasks_of_a_family(agent):
    button_tasks = [ButtonTask(half_size=1.8, num_buttons=1, num_hazards=1),
                    ButtonTask(half_size=2.9, num_buttons=10, num_hazards=16, wrong_button_cost=1.0)]
    circle_tasks = [CircleTask(radius=1.0, wall_distance=0.55), CircleTask(radius=2.5, wall_distance=1.6)]
    for family, ts in (("button", button_tasks), ("circle", circle_tasks)):
        envs = [tasks.make_env(f"Safety{agent}St{family}1-v0", task=t) for t in ts]
        spaces = {(str(e.observation_space), str(e.action_space)) for e in envs}
        assert len(spaces) == 1, spaces
        shapes = {e.reset(seed=1)[0].shape for e in envs}
        assert shapes == {envs[0].observation_space.shape}
        # switching a live env to the other task keeps the spaces and the observation size
        env = envs[0]
        before = (env.observation_space, env.action_space)
        env.unwrapped.set_task(ts[1])
        assert env.unwrapped.task_params == ts[0]  # takes effect at the next reset
        obs, info = env.reset(seed=2)
        assert env.unwrapped.task_params == ts[1] == info["task"]
        assert (env.observation_space, env.action_space) == before
        assert env.observation_space.contains(obs)
        if family == "button":
            assert env.unwrapped.task.buttons.num == ts[1].num_buttons
            assert env.unwrapped.task.hazards.num == ts[1].num_hazards


def test_obs_size_does_not_depend_on_number_of_buttons_across_levels():
    sizes = {tasks.make_env(f"SafetyPointStbutton{lv}-v0", seed=lv).observation_space.shape for lv in (0, 1, 2)}
    assert len(sizes) == 1


def test_seeded_task_and_first_observation_are_deterministic():
    eid = "SafetyCarStbutton1-v0"
    e1 = tasks.make_env(eid, seed=11)
    e2 = tasks.make_env(eid, seed=11)
    e3 = tasks.make_env(eid, seed=12)
    assert e1.unwrapped.task_params == e2.unwrapped.task_params != e3.unwrapped.task_params
    expected = tasks.get_distribution(eid).sample(np.random.default_rng(11))
    assert e1.unwrapped.task_params == expected
    o1, _ = e1.reset(seed=5)
    o2, _ = e2.reset(seed=5)
    np.testing.assert_array_equal(o1, o2)
    o1b, _ = e1.reset(seed=6)
    assert not np.array_equal(o1, o1b)
    # a seeded env's unseeded resets are reproducible as well
    f1, f2 = tasks.make_env(eid, seed=11), tasks.make_env(eid, seed=11)
    for _ in range(2):
        np.testing.assert_array_equal(f1.reset()[0], f2.reset()[0])


def test_plain_safety_gymnasium_make_draws_tasks_from_the_level():
    dist = tasks.get_distribution("circle", 2)
    drawn = [sg.make("SafetyPointStcircle2-v0").unwrapped.task_params for _ in range(3)]
    for t in drawn:
        assert dist.range_of("radius").contains(t.radius)
    assert len(set(drawn)) == 3
    assert sg.make("SafetyPointStcircle0-v0").unwrapped.task_params == CircleTask(1.25, 0.9375)


def test_circle_costs_at_the_walls_and_rewards_running_along_the_circle():
    task = CircleTask(radius=1.0, wall_distance=0.5)
    env = tasks.make_env("SafetyPointStcircle1-v0", task=task)
    env.reset(seed=0)
    u = env.unwrapped
    assert u.task.sigwalls.locate_factor == 0.5 and u.task.circle.radius == 1.0
    outside = []
    for _ in range(150):  # drive straight: the point leaves the strip |x| <= 0.5
        _, reward, cost, _, _, _ = env.step(np.array([1.0, 0.0]))
        (x, y, _), (vx, vy, _) = u.task.agent.pos, u.task.agent.vel
        r = np.hypot(x, y)
        assert reward == pytest.approx(((-vx * y + vy * x) / r) / (1 + abs(r - 1.0)) * 0.1, abs=1e-12)
        assert cost == float(abs(x) > 0.5)
        outside.append(abs(x) > 0.5)
    assert any(outside) and not all(outside)


def test_make_env_built_in_ids_and_bad_input():
    env = tasks.make_env("SafetyPointCircle0-v0")
    assert len(env.reset(seed=0)) == 2
    with pytest.raises(ValueError, match="built-in Safety-Gymnasium env without task parameters"):
        tasks.make_env("SafetyPointGoal1-v0", task=CircleTask(1.0, 0.6))
    with pytest.raises(ValueError, match="needs a CircleTask, got ButtonTask"):
        tasks.make_env("SafetyPointStcircle1-v0", task=ButtonTask(2.0, 3, 6))
    with pytest.raises(ValueError, match="unknown agent 'Ant'.*allowed: Point, Car, Doggo, Racecar"):
        tasks.make_env("SafetyAntStcircle1-v0")
    with pytest.raises(ValueError, match="unknown level 3"):
        tasks.make_env("SafetyPointStbutton3-v0")
    with pytest.raises(ValueError, match="malformed env id"):
        tasks.make_env("NoSuchEnv-v0")
    env = tasks.make_env("SafetyPointStcircle1-v0", seed=0)
    with pytest.raises(ValueError, match="needs a CircleTask"):
        env.unwrapped.set_task(ButtonTask(2.0, 3, 6))


def test_env_pickles_with_its_task():
    env = tasks.make_env("SafetyPointStbutton1-v0", seed=3)
    clone = pickle.loads(pickle.dumps(env.unwrapped))
    assert clone.task_params == env.unwrapped.task_params
    np.testing.assert_array_equal(clone.reset(seed=1)[0], env.unwrapped.reset(seed=1)[0])


def test_custom_distribution_example_runs():
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "custom_task_distribution.py"), "--steps", "5",
         "--overrides", os.path.join(ROOT, "examples", "task_overrides.toml")],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "registered 12 ids" in out
    assert "SafetyPointStgoal1-v0 task=GoalTask(" in out
    assert "switched to GoalTask(half_size=2.2, goal_size=0.18, num_hazards=12)" in out
    assert "override circle level 1: radius=U(1.1, 1.3)" in out
    assert "num_buttons=U{6..8}" in out

"""Our fast envs vs the plain Safety-Gymnasium Builder running the same task and layout.

Same task, seed and action sequence: identical rewards, costs, flags and info; observations
equal to 1e-12. Actions steer the agent toward the goal button so that presses (goal_met,
goal resampling, wrong-button costs) and hazards are exercised, not only idle driving.
"""

from __future__ import annotations

import numpy as np
import pytest

from metacpo.compat import import_safety_gymnasium
from metacpo.tasks import (
    ButtonTask,
    CircleTask,
    RefButtonTask,
    RefCircleTask,
    StochasticBuilder,
    make_env,
)
from metacpo.tasks.builder import FAST_ENV_VAR, StandardBuilder
from metacpo.tasks.fast import _MODEL_CACHE
from tests.reference_builder import ReferenceBuilder

# safety-gymnasium 1.0.0 reads joint types with a deprecated numpy conversion (Car, Racecar)
pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning")


def _steer(env, rng: np.random.Generator) -> np.ndarray:
    """Point/Car-style action: turn toward the goal and drive, with noise."""
    task = env.task
    low, high = env.action_space.low, env.action_space.high
    noise = rng.uniform(low, high)
    if hasattr(task, "circle"):  # drive forward on a wide arc, out across the walls and back
        return np.clip(0.6 * high + 0.4 * noise, low, high)
    if not hasattr(task, "goal") and not hasattr(task, "buttons") or task.agent.body_info.nu != 2:
        return noise
    pos = task.data.body("agent").xpos[:2]
    mat = task.data.body("agent").xmat.reshape(3, 3)
    goal = task.data.body("goal").xpos[:2]
    ego = (np.r_[goal - pos, 0.0] @ mat)[:2]
    ang = np.arctan2(ego[1], ego[0])
    if env.task.agent.__class__.__name__ == "Point":
        act = np.array([1.0 if abs(ang) < 0.5 else 0.1, np.clip(2 * ang, -1, 1)])
    else:  # Car: differential drive (left, right)
        turn = np.clip(ang, -1, 1)
        act = np.array([1.0 - turn, 1.0 + turn]) * 0.5
    return np.clip(0.8 * act + 0.2 * noise, low, high)


def _run_pair(agent: str, family: str, tasks, steps: int, seed: int):
    _MODEL_CACHE.clear()
    fast = StochasticBuilder(agent, family, 1, task=tasks[0])
    plain = ReferenceBuilder(agent, family, tasks[0])
    assert fast._fast and type(fast.task).__name__.startswith("Fast")
    assert fast.observation_space == plain.observation_space
    rng = np.random.default_rng(seed)
    events = {"goal_met": 0, "cost": 0.0}
    for ep, task in enumerate(tasks):
        if ep > 0:
            fast.set_task(task)
            plain.task.apply_task(task)
        o1, _ = fast.reset(seed=seed + ep)
        o2, _ = plain.reset(seed=seed + ep)
        assert fast.task.world_info.layout.keys() == plain.task.world_info.layout.keys()
        for k, v in plain.task.world_info.layout.items():
            np.testing.assert_array_equal(fast.task.world_info.layout[k], v)
        np.testing.assert_allclose(o1, o2, rtol=0, atol=1e-12)
        for t in range(steps):
            a = _steer(plain, rng)
            r1 = fast.step(a)
            r2 = plain.step(a)
            np.testing.assert_allclose(r1[0], r2[0], rtol=0, atol=1e-12, err_msg=f"obs ep{ep} t{t}")
            assert r1[1] == r2[1], (ep, t, r1[1], r2[1])
            assert r1[2] == r2[2], (ep, t, r1[2], r2[2])
            assert r1[3:5] == r2[3:5]
            assert r1[5] == r2[5], (r1[5], r2[5])
            events["goal_met"] += int(r1[5].get("goal_met", False))
            events["cost"] += r1[2]
            if r1[3] or r1[4]:
                break
    events["reused"] = fast.task.reused_builds
    return events


@pytest.mark.parametrize("agent", ["Point", "Car"])
def test_circle_equivalence(agent):
    t1, t2 = CircleTask(radius=1.2, wall_distance=0.7), CircleTask(radius=2.3, wall_distance=1.4)
    ev = _run_pair(agent, "circle", [t1, t1, t2, t2], steps=120, seed=3)
    assert ev["reused"] == 3  # the compiled model was moved (and the circle resized), not rebuilt


@pytest.mark.parametrize("agent", ["Point", "Car"])
def test_reference_circle_variant_equivalence(agent):
    """The reference's Car-Circle variant (family circleref: Circle plus hazards)."""
    t1 = RefCircleTask(radius=1.2, wall_distance=0.7, num_hazards=5, hazard_extent=1.4)
    t2 = RefCircleTask(radius=1.8, wall_distance=1.1, num_hazards=11, hazard_extent=1.8)
    ev = _run_pair(agent, "circleref", [t1, t1, t2, t2], steps=150, seed=3)
    assert ev["reused"] == 2  # same structure: moved, not rebuilt (t2 has more hazards: rebuilt once)
    assert ev["cost"] > 0, ev


def test_button_equivalence_point_presses_buttons():
    t1 = ButtonTask(half_size=1.2, num_buttons=5, num_hazards=4, wrong_button_cost=1.0)
    t2 = ButtonTask(half_size=1.9, num_buttons=3, num_hazards=6, wrong_button_cost=0.0)
    ev = _run_pair("Point", "button", [t1, t1, t2, t1], steps=300, seed=5)
    assert ev["reused"] == 2  # t1 again: from the process-wide model cache
    assert ev["goal_met"] >= 1, ev  # the goal path was exercised
    assert ev["cost"] > 0, ev


@pytest.mark.parametrize("agent", ["Point", "Car"])
def test_reference_button_variant_equivalence(agent):
    """The reference's Button variant (family buttonref: wrong buttons cost at level 1 too)."""
    t1 = RefButtonTask(half_size=1.2, num_buttons=5, num_hazards=8, wrong_button_cost=1.0)
    t2 = RefButtonTask(half_size=1.8, num_buttons=3, num_hazards=6, wrong_button_cost=1.0)
    ev = _run_pair(agent, "buttonref", [t1, t1, t2], steps=250 if agent == "Point" else 100, seed=5)
    assert ev["reused"] == 1
    if agent == "Point":
        assert ev["goal_met"] >= 1 and ev["cost"] > 0, ev


@pytest.mark.parametrize("agent", ["Car", "Doggo", "Racecar"])
def test_button_equivalence_other_agents(agent):
    t1 = ButtonTask(half_size=2.0, num_buttons=6, num_hazards=9, wrong_button_cost=1.0)
    ev = _run_pair(agent, "button", [t1, t1], steps=100 if agent == "Car" else 30, seed=7)
    assert ev["reused"] == 1


_RENDER_ONLY = {"cam_pos", "cam_quat", "cam_pos0", "cam_poscom0", "cam_mat0"}


@pytest.mark.parametrize(("agent", "family", "first", "task"), [
    ("Car", "button", None, ButtonTask(half_size=2.0, num_buttons=6, num_hazards=9, wrong_button_cost=1.0)),
    ("Point", "circle", None, CircleTask(radius=1.3, wall_distance=0.9)),
    ("Car", "circle", CircleTask(radius=2.4, wall_distance=1.5), CircleTask(radius=1.1, wall_distance=0.7)),
])
def test_reused_model_equals_freshly_compiled_model(agent, family, first, task):
    """Moving the bodies of a compiled model (+ resizing the circle) + mj_setConst == compiling
    the new layout's XML."""
    _MODEL_CACHE.clear()
    reuse = StochasticBuilder(agent, family, 1, task=first or task)
    reuse.reset(seed=1)
    reuse.set_task(task)
    reuse.reset(seed=2)
    assert reuse.task.reused_builds == 1
    _MODEL_CACHE.clear()
    fresh = StochasticBuilder(agent, family, 1, task=task)
    fresh.reset(seed=1)  # a first build runs one mj_forward, a rebuild two: compare rebuilds
    _MODEL_CACHE.clear()
    fresh.task._f_struct = None  # force an XML rebuild
    fresh.reset(seed=2)
    assert fresh.task.reused_builds == 0
    _assert_same_model(reuse.task, fresh.task)


def _assert_same_model(reuse, fresh) -> None:
    """Every model array (rendering-only ones aside) and the state after reset: equal."""
    m1, m2 = reuse.model, fresh.model
    # The inertial frame of a massless body welded to the world has no physical effect (no
    # dofs, zero weight in every centre of mass); MuJoCo derives it from compile-time details.
    inert = (m2.body_mass == 0) & (m2.body_jntnum == 0)
    assert not inert[m2.body("agent").id]
    compared = 0
    for name in dir(m2):
        if name.startswith("_") or name in _RENDER_ONLY:
            continue
        try:
            a, b = getattr(m1, name), getattr(m2, name)
        except Exception:  # noqa: BLE001 - non-array attributes
            continue
        if isinstance(b, np.ndarray):
            compared += 1
            if name in ("body_ipos", "body_iquat"):
                a, b = a[~inert], b[~inert]
            np.testing.assert_array_equal(a, b, err_msg=name)
    assert compared > 100
    for sub in ("opt",):
        for f in ("timestep", "gravity", "tolerance", "impratio"):
            assert np.array_equal(getattr(getattr(m1, sub), f), getattr(getattr(m2, sub), f))
    assert m1.stat.meaninertia == m2.stat.meaninertia and m1.stat.meanmass == m2.stat.meanmass
    d1, d2 = reuse.data, fresh.data
    for f in ("qpos", "qvel", "qacc", "qacc_warmstart", "xpos", "sensordata"):
        np.testing.assert_array_equal(getattr(d1, f), getattr(d2, f), err_msg=f)


@pytest.mark.parametrize(("env_id", "moved"), [
    ("SafetyPointButton1-v0", "_f_gremlins"), ("SafetyCarButton2-v0", "_f_gremlins"),  # mocap welded to a free body
    ("SafetyPointGoal1-v0", "_f_free"), ("SafetyCarGoal2-v0", "_f_free"),  # vases
    ("SafetyPointPush1-v0", "_f_free"), ("SafetyCarPush2-v0", "_f_free"),  # the push box
])
def test_layouts_with_moving_bodies_move_the_compiled_model(env_id, moved):
    """Standard Button (gremlins), Goal (vases) and Push (the push box), levels 1-2: a reset with a
    new layout moves the compiled model -- bodies, welds, free joints' qpos0 -- instead of
    rebuilding it, and the result equals a fresh compile of that layout, every model array and the
    state after reset (equivalence over full episodes: test_standard_ids_equal_plain_...)."""
    _MODEL_CACHE.clear()
    reuse = make_env(env_id).unwrapped
    reuse.reset(seed=1)
    reuse.reset(seed=2)
    assert reuse.task.reused_builds == 1 and getattr(reuse.task, moved)
    _MODEL_CACHE.clear()
    fresh = make_env(env_id).unwrapped
    fresh.reset(seed=1)
    _MODEL_CACHE.clear()
    fresh.task._f_struct = None  # force an XML rebuild
    fresh.reset(seed=2)
    assert fresh.task.reused_builds == 0
    _assert_same_model(reuse.task, fresh.task)


@pytest.mark.parametrize("env_id", ["SafetyPointStcircle1-v0", "SafetyCarButton2-v0", "SafetyDoggoGoal1-v0"])
def test_steps_without_sensors_keep_the_trajectory(monkeypatch, env_id):
    """fast_forward switches sensors off for its physics steps: state, solver warm start and
    everything the step returns are those of steps with sensors on (gremlins on Button 2)."""
    import metacpo.tasks.fast as fast

    def trajectory():
        env = make_env(env_id, seed=3)
        rng = np.random.default_rng(7)
        out = []
        env.reset(seed=11)
        for i in range(300):
            obs, r, c, term, trunc, info = env.step(rng.uniform(-1, 1, env.action_space.shape))
            data = env.unwrapped.task.data
            out.append((obs, r, c, term, trunc, sorted(info.items()), data.qpos.copy(), data.qvel.copy(),
                        data.qacc_warmstart.copy()))
            if term or trunc:
                env.reset(seed=100 + i)
        env.close()
        return out

    skipped = trajectory()
    monkeypatch.setattr(fast, "_DSBL_SENSOR", 0)  # sensors stay on
    for got, expected in zip(skipped, trajectory(), strict=True):
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_array_equal(a, b)


def test_batched_lidar_paths_match_safety_gymnasium_lidar():
    """Both lidar implementations (plain floats, numpy batch) equal BaseTask._obs_lidar."""
    env = StochasticBuilder("Car", "button", 2, task=ButtonTask(half_size=2.8, num_buttons=10,
                                                               num_hazards=16, wrong_button_cost=1.0))
    env.reset(seed=4)
    task = env.task
    rng = np.random.default_rng(0)
    nbins = task.lidar_conf.num_bins
    for _ in range(20):
        env.step(rng.uniform(-1, 1, 2))
        expected = np.concatenate([task._obs_lidar(o.pos, o.group) for _, o, _ in task._f_lidar])
        scalar = task._lidar_scalar()
        task._f_lidar_count, count = 10**6, task._f_lidar_count
        batched = task._lidar_all()
        task._f_lidar_count = count
        assert expected.shape == (3 * nbins,) and expected.max() > 0
        np.testing.assert_allclose(scalar, expected, rtol=0, atol=1e-12)
        np.testing.assert_allclose(batched, expected, rtol=0, atol=1e-12)


# ---- the standard Safety-Gymnasium navigation ids ------------------------------------------

# Every task class, every agent and every obstacle kind (circle, sigwalls 2/4, goal, buttons,
# hazards, gremlins, vases constrained or not, push box, pillars constrained or not). Circle
# episodes run to their own end (500 steps); the others are cut by a time limit.
_STANDARD = [
    ("SafetyPointCircle1-v0", None), ("SafetyCarCircle2-v0", None), ("SafetyRacecarCircle0-v0", 60),
    ("SafetyPointButton1-v0", 250), ("SafetyCarButton2-v0", 120), ("SafetyDoggoButton0-v0", 30),
    ("SafetyPointGoal1-v0", 250), ("SafetyCarGoal2-v0", 150), ("SafetyAntGoal1-v0", 30),
    ("SafetyPointPush2-v0", 150),
]


@pytest.mark.parametrize(("env_id", "limit"), _STANDARD)
def test_standard_ids_equal_plain_safety_gymnasium(env_id, limit):
    """make_env's fast env vs ``safety_gymnasium.make`` of the same id: seeded and unseeded
    resets, full (or time-limited) episodes, identical rewards/costs/flags/info, obs to 1e-12."""
    sg = import_safety_gymnasium()
    fast = make_env(env_id)
    plain = sg.make(env_id)
    assert type(fast.unwrapped) is StandardBuilder and type(plain.unwrapped).__name__ == "Builder"
    assert type(fast.unwrapped.task).__name__ == "Fast" + type(plain.unwrapped.task).__name__
    assert fast.observation_space == plain.observation_space
    assert fast.spec.max_episode_steps == plain.spec.max_episode_steps
    rng = np.random.default_rng(11)
    events = {"goal_met": 0, "cost": 0.0, "steps": 0}
    for ep, seed in enumerate([21, None]):  # the second reset continues the layout stream
        o1, _ = fast.reset(seed=seed)
        o2, _ = plain.reset(seed=seed)
        np.testing.assert_allclose(o1, o2, rtol=0, atol=1e-12)
        t = 0
        while True:
            a = _steer(plain.unwrapped, rng)
            r1, r2 = fast.step(a), plain.step(a)
            np.testing.assert_allclose(r1[0], r2[0], rtol=0, atol=1e-12, err_msg=f"obs ep{ep} t{t}")
            assert r1[1] == r2[1] and r1[2] == r2[2], (ep, t, r1[1:3], r2[1:3])
            assert r1[3:5] == r2[3:5] and r1[5] == r2[5], (ep, t, r1[3:], r2[3:])
            events["goal_met"] += int(r1[5].get("goal_met", False))
            events["cost"] += r1[2]
            t += 1
            if r1[3] or r1[4] or t == limit:
                break
        events["steps"] += t
        if limit is None:
            assert t == fast.spec.max_episode_steps  # ran to the env's own truncation
    if env_id in ("SafetyPointGoal1-v0", "SafetyPointButton1-v0"):
        assert events["goal_met"] >= 1, events  # goal resampling exercised
    if env_id in ("SafetyPointCircle1-v0", "SafetyCarButton2-v0", "SafetyPointGoal1-v0"):
        assert events["cost"] > 0, events


def test_fast_path_opt_out(monkeypatch):
    """fast=False, METACPO_FAST_ENVS=0 and rendering give the untouched Builder; bad values fail."""
    assert type(make_env("SafetyPointGoal1-v0", fast=False).unwrapped).__name__ == "Builder"
    monkeypatch.setenv(FAST_ENV_VAR, "0")
    assert type(make_env("SafetyPointGoal1-v0").unwrapped).__name__ == "Builder"
    assert not make_env("SafetyPointStcircle1-v0", seed=0).unwrapped._fast
    monkeypatch.setenv(FAST_ENV_VAR, "maybe")
    with pytest.raises(ValueError, match="METACPO_FAST_ENVS='maybe' is not allowed"):
        make_env("SafetyPointGoal1-v0")
    monkeypatch.delenv(FAST_ENV_VAR)
    assert type(make_env("SafetyPointGoal1-v0").unwrapped) is StandardBuilder
    assert type(make_env("SafetyPointGoal1Vision-v0").unwrapped).__name__ == "Builder"  # not covered
    with pytest.raises(ValueError, match="fast='yes' is not allowed"):
        make_env("SafetyPointGoal1-v0", fast="yes")


@pytest.mark.parametrize("env_id", ["SafetyPointButton1-v0", "SafetyCarButton2-v0", "SafetyPointGoal2-v0",
                                    "SafetyPointPush1-v0", "SafetyPointStbutton2-v0"])
def test_fast_layout_sampling_draws_what_safety_gymnasium_draws(env_id):
    """FastRandomGenerator vs Safety-Gymnasium's RandomGenerator, same placements and seeds: the
    same layouts and the same generator state afterwards (so the same draws), over many resets
    of crowded layouts (tens of thousands of rejected candidates)."""
    from safety_gymnasium.utils.random_generator import RandomGenerator

    from metacpo.tasks.fast import FastRandomGenerator

    env = make_env(env_id)
    env.reset(seed=0)  # placements are set on the first reset
    task = env.unwrapped.task
    assert isinstance(task.random_generator, FastRandomGenerator)
    fast, plain = FastRandomGenerator(), RandomGenerator()
    for g in (fast, plain):
        g.set_placements_info(task.random_generator.placements, task.random_generator.placements_extents,
                              task.random_generator.placements_margin)
    for seed in range(40):
        fast.set_random_seed(seed)
        plain.set_random_seed(seed)
        a, b = fast.build_layout(), plain.build_layout()
        assert list(a) == list(b)
        for k in b:
            np.testing.assert_array_equal(a[k], b[k])
        assert str(fast.random_generator.get_state()) == str(plain.random_generator.get_state())

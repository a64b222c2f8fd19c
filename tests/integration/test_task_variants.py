"""The reference implementation's task variants as families: ``Safety{Agent}Stbuttonref{L}-v0``
charges wrong-button presses at every level, our ``Stbutton`` only at level 2;
``Safety{Agent}Stcircleref{L}-v0`` is the reference's Car-Circle variant (Circle plus hazards)."""

from __future__ import annotations

import numpy as np
import pytest

from metacpo import tasks
from metacpo.tasks import ButtonTask, CircleTask, RefButtonTask, RefCircleTask, get_distribution, make_env

pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning")


def _drive_to_wrong_button(env_id: str, steps: int = 400):
    """Point agent steered onto the wrong button nearest to its start; per-step info and positions."""
    task = get_distribution(env_id).sample(np.random.default_rng(1))
    env = make_env(env_id, task=task)
    env.reset(seed=0)
    t = env.unwrapped.task
    start = t.data.body("agent").xpos[:2].copy()
    wrong = [p[:2] for i, p in enumerate(t.buttons.pos) if i != t.buttons.goal_button]
    target = min(wrong, key=lambda p: np.linalg.norm(p - start))
    costs, buttons, path = [], [], []
    for _ in range(steps):
        pos, mat = t.data.body("agent").xpos[:2], t.data.body("agent").xmat.reshape(3, 3)
        ego = (np.r_[target - pos, 0.0] @ mat)[:2]
        ang = np.arctan2(ego[1], ego[0])
        _, _, cost, term, trunc, info = env.step(np.array([1.0 if abs(ang) < 0.5 else 0.1, np.clip(2 * ang, -1, 1)]))
        costs.append(cost)
        buttons.append(info.get("cost_buttons", 0.0))
        path.append(pos.copy())
        if term or trunc:
            break
    env.close()
    return task, np.array(costs), np.array(buttons), np.array(path)


def test_wrong_button_costs_at_level_1_in_the_reference_variant_only():
    ours, c0, b0, path0 = _drive_to_wrong_button("SafetyPointStbutton1-v0")
    ref, c1, b1, path1 = _drive_to_wrong_button("SafetyPointStbuttonref1-v0")
    assert type(ours) is ButtonTask and type(ref) is RefButtonTask
    assert ours.as_dict() == {**ref.as_dict(), "wrong_button_cost": 0.0} and ref.wrong_button_cost == 1.0
    np.testing.assert_array_equal(path0, path1)  # the same layout and the same drive
    assert b1.sum() > 10 and b0.sum() == 0  # pressing the wrong button costs in the variant only
    assert c0.sum() == c1.sum() - b1.sum()  # the rest of the cost (hazards) is the same


def test_reference_variant_ids_and_levels():
    for level in (0, 1, 2):
        eid = f"SafetyCarStbuttonref{level}-v0"
        assert eid in tasks.registered_ids() and tasks.parse_env_id(eid) == ("Car", "buttonref", level)
        ours = get_distribution("button", level).sample(np.random.default_rng(level))
        ref = get_distribution("buttonref", level).sample(np.random.default_rng(level))
        assert ref.wrong_button_cost == 1.0
        assert {**ours.as_dict(), "wrong_button_cost": 1.0} == ref.as_dict()  # only the wrong-button cost differs
    assert get_distribution("button", 1).sample(np.random.default_rng(0)).wrong_button_cost == 0.0


def _drive_into_nearest_hazard(env_id: str, task, steps: int = 300):
    """Point agent steered onto the hazard nearest to its start; per-step cost and hazard cost."""
    env = make_env(env_id, task=task)
    env.reset(seed=0)
    t = env.unwrapped.task
    start = t.data.body("agent").xpos[:2].copy()
    target = min((p[:2] for p in t.hazards.pos), key=lambda p: np.linalg.norm(p - start))
    costs, hazard = [], []
    for _ in range(steps):
        pos, mat = t.data.body("agent").xpos[:2], t.data.body("agent").xmat.reshape(3, 3)
        ego = (np.r_[target - pos, 0.0] @ mat)[:2]
        ang = np.arctan2(ego[1], ego[0])
        dist = np.linalg.norm(target - pos)
        _, _, cost, term, trunc, info = env.step(np.array([min(1.0, 2 * dist) if abs(ang) < 0.5 else 0.0,
                                                           np.clip(2 * ang, -1, 1)]))
        costs.append(cost)
        hazard.append(info.get("cost_hazards", 0.0))
        if term or trunc:
            break
    env.close()
    return np.array(costs), np.array(hazard)


def test_reference_circle_variant_has_hazards_that_cost():
    # a level-1 circleref task whose walls are out of reach: the only cost is the hazards'
    task = RefCircleTask(radius=1.25, wall_distance=3.0, num_hazards=4, hazard_extent=1.4)
    costs, hazard = _drive_into_nearest_hazard("SafetyPointStcircleref1-v0", task)
    # Safety-Gymnasium's cost indicator: 1 per step inside a hazard, whatever the depth-weighted
    # 3 * (0.12 - distance) is
    assert hazard.sum() >= 3 and set(np.unique(hazard)) == {0.0, 1.0} and np.array_equal(costs, hazard)
    # the plain Circle env has no hazards: no hazard cost, observations 16 lidar bins shorter
    plain = make_env("SafetyPointStcircle1-v0", task=CircleTask(radius=1.25, wall_distance=3.0))
    ref = make_env("SafetyPointStcircleref1-v0", task=task)
    assert not hasattr(plain.unwrapped.task, "hazards")
    assert ref.observation_space.shape[0] == plain.observation_space.shape[0] + 16
    plain.close()
    ref.close()


def test_reference_circle_variant_ids_and_levels():
    for level in (0, 1, 2):
        eid = f"SafetyCarStcircleref{level}-v0"
        assert eid in tasks.registered_ids() and tasks.parse_env_id(eid) == ("Car", "circleref", level)
    rng = np.random.default_rng(0)
    lv0 = get_distribution("circleref", 0).sample(rng)
    assert lv0 == RefCircleTask(radius=1.25, wall_distance=1.25 * 0.65, num_hazards=5, hazard_extent=1.4)
    lv1 = get_distribution("circleref", 1).sample_n(rng, 200)
    assert {t.num_hazards for t in lv1} == {4, 5, 6} and {t.hazard_extent for t in lv1} == {1.4}
    assert all(1.0 <= t.radius <= 1.5 and 0.55 <= t.wall_distance / t.radius <= 0.75 for t in lv1)
    lv2 = get_distribution("circleref", 2).sample_n(rng, 200)
    assert {t.num_hazards for t in lv2} == {10, 11, 12} and {t.hazard_extent for t in lv2} == {1.8}
    assert all(1.5 <= t.radius <= 2.0 and 0.55 <= t.wall_distance / t.radius <= 0.65 for t in lv2)
    with pytest.raises(ValueError, match="family .circleref. needs a RefCircleTask, got CircleTask"):
        make_env("SafetyPointStcircleref1-v0", task=CircleTask(radius=1.25, wall_distance=1.0))
    with pytest.raises(ValueError, match="RefCircleTask: num_hazards=0 is not allowed; allowed: integer >= 1"):
        RefCircleTask(radius=1.25, wall_distance=1.0, num_hazards=0, hazard_extent=1.4)

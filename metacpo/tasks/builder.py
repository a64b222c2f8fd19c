"""Our Safety-Gymnasium ``Builder`` subclass, env registration and :func:`make_env`."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import Iterator
from typing import Any

import gymnasium
import gymnasium.envs.registration
import numpy as np

from metacpo.compat import import_safety_gymnasium
from metacpo.tasks.spec import (
    AGENTS,
    Task,
    TaskFamily,
    env_id as make_env_id,
    get_distribution,
    get_family,
    parse_env_id,
)

sg = import_safety_gymnasium()

from safety_gymnasium.bases.base_task import BaseTask  # noqa: E402
from safety_gymnasium.builder import Builder  # noqa: E402
from safety_gymnasium.utils.common_utils import ResamplingError  # noqa: E402

from metacpo.tasks.registration import ENTRY_POINT, register_ids, registered_ids  # noqa: E402,F401


class FastStepMixin:
    """``Builder.step`` for fast task classes (mixed in before ``Builder``; set ``_fast``).

    The same sequence as Safety-Gymnasium's ``Builder.step`` -- physics, reward, cost, specific
    step, goal handling, alive check, step count -- calling the task's fast counterparts
    (:class:`metacpo.tasks.fast.FastTaskMixin`), without the observation-space check.
    """

    _fast: bool = False

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, float, bool, bool, dict]:
        if not self._fast:
            return super().step(action)  # type: ignore[misc]
        assert not (self.terminated or self.truncated), "Environment must be reset before stepping."  # self.done
        task = self.task
        if type(action) is not np.ndarray:  # np.array(action, copy=False) returns an ndarray itself
            action = np.array(action, copy=False)
        if action.shape != task.action_space.shape:  # self.action_space is the task's
            raise ValueError("Action dimension mismatch")
        info: dict = {}
        if task.fast_forward(action):
            self.truncated = True
            reward = task.reward_conf.reward_exception
            cost = 1.0
            info["cost_exception"] = 1.0
        else:
            reward = self._fast_reward()
            task.cost_forward()
            costs = self._fast_cost()
            info.update(costs)
            cost = costs["cost_sum"]
            task.specific_step()
            if task.fast_goal_achieved():
                info["goal_met"] = True
                if task.mechanism_conf.continue_goal:
                    task.update_layout()
                    if task.mechanism_conf.terminate_resample_failure:
                        try:
                            task.update_world()
                        except ResamplingError:
                            self.terminated = True
                    else:
                        task.update_world()
                else:
                    self.terminated = True
        if not task.agent.is_alive():
            self.terminated = True
        self.steps += 1
        if self.steps >= task.num_steps:
            self.truncated = True
        return task.obs(), reward, cost, self.terminated, self.truncated, info

    def _fast_reward(self) -> float:
        task = self.task
        reward = task.fast_calculate_reward()
        conf = task.reward_conf
        if conf.reward_orientation:
            return self._reward_tail(reward)
        clip = conf.reward_clip
        if clip and not -clip < reward < clip:
            reward = np.clip(reward, -clip, clip)
            print("Warning: reward was outside of range!")
        return reward

    def _reward_tail(self, reward: float) -> float:  # pragma: no cover - unused by built-ins
        from safety_gymnasium.utils.common_utils import quat2zalign

        task = self.task
        zalign = quat2zalign(task.data.get_body_xquat(task.reward_conf.reward_orientation_body))
        reward += task.reward_conf.reward_orientation_scale * zalign
        clip = task.reward_conf.reward_clip
        if clip and not -clip < reward < clip:
            reward = np.clip(reward, -clip, clip)
        return reward

    def _fast_cost(self) -> dict:
        cost = self.task.fast_calculate_cost()
        if self.task.cost_conf.constrain_indicator:
            for k in list(cost):
                cost[k] = float(cost[k] > 0.0)
        self.cost = cost
        return cost


class StochasticBuilder(FastStepMixin, Builder):
    """A Safety-Gymnasium env for one task of a stochastic family.

    ``task`` fixes the task; otherwise one is drawn from the (family, level) distribution with
    ``numpy.random.default_rng(seed)``; a ``seed`` also seeds the layouts of unseeded resets. ``env.unwrapped.task_params`` is the current task and
    :meth:`set_task` switches to another task of the same family at the next reset (spaces stay
    the same). When not rendering (and unless ``fast=False``) resets compile without the skybox
    texture and sample layouts vectorised, and the built-in families use their fast task classes
    (same physics, observations, rewards and costs; see :mod:`metacpo.tasks.fast`).
    """

    def __init__(  # pylint: disable=too-many-arguments
        self,
        agent: str,
        family: str,
        level: int,
        task: Task | None = None,
        seed: int | None = None,
        render_mode: str | None = None,
        width: int = 256,
        height: int = 256,
        camera_id: int | None = None,
        camera_name: str | None = None,
        fast: bool = True,
    ) -> None:
        if agent not in AGENTS:
            raise ValueError(f"unknown agent {agent!r}; allowed: {', '.join(AGENTS)}")
        fam = get_family(family)
        dist = get_distribution(family, level)
        if task is None:
            task = dist.sample(np.random.default_rng(seed))
        self._check_task(fam, task)
        self._family: TaskFamily = fam
        self._level = int(level)
        self._task: Task = task
        self._pending_task: Task | None = None
        self._fast_build = bool(fast) and render_mode is None
        self._fast = self._fast_build and fam.fast_task_class is not None
        super().__init__(
            task_id=make_env_id(agent, family, level),
            config={"agent_name": agent},
            render_mode=render_mode,
            width=width,
            height=height,
            camera_id=camera_id,
            camera_name=camera_name,
        )
        if seed is not None:  # unseeded resets are then reproducible too (layout stream != task draw)
            self.set_seed(int(np.random.SeedSequence([int(seed), 1]).generate_state(1)[0]))
        gymnasium.utils.EzPickle.__init__(
            self, agent=agent, family=family, level=level, task=task, seed=seed,
            render_mode=render_mode, width=width, height=height, camera_id=camera_id,
            camera_name=camera_name, fast=fast)

    @staticmethod
    def _check_task(fam: TaskFamily, task: Any) -> None:
        if not isinstance(task, fam.task_type):
            raise ValueError(f"family {fam.name!r} needs a {fam.task_type.__name__}, "
                             f"got {type(task).__name__}: {task!r}")

    def _get_task(self) -> BaseTask:
        from metacpo.tasks.fast import with_fast_build

        if self._fast:
            cls = self._family.load_fast_task_class()
        elif self._fast_build:
            cls = with_fast_build(self._family.load_task_class())
        else:
            cls = self._family.load_task_class()
        task = cls(config=self.config, task=self._task)
        if self._fast_build:
            task.install_fast_random_generator()
        task.build_observation_space()
        return task

    def set_seed(self, seed: int | None = None) -> None:
        """Seed the layout randomness (an unseeded draw uses fresh OS entropy, not ``np.random``)."""
        if seed is None:
            seed = int(np.random.default_rng().integers(2**32))
        super().set_seed(seed)

    # ---- tasks -------------------------------------------------------------------------------

    @property
    def task_params(self) -> Task:
        """The task in effect (a :meth:`set_task` takes effect at the next reset)."""
        return self._task

    @property
    def family(self) -> TaskFamily:
        """The task family."""
        return self._family

    @property
    def level(self) -> int:
        """The level the env was made for."""
        return self._level

    def set_task(self, task: Task) -> None:
        """Use ``task`` (same family) from the next reset on; spaces do not change."""
        self._check_task(self._family, task)
        self._pending_task = task

    # ---- gym API -----------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        if self._pending_task is not None:
            self.task.apply_task(self._pending_task)
            self._task = self._pending_task
            self._pending_task = None
        obs, info = super().reset(seed=seed, options=options)
        info["task"] = self._task
        return obs, info


_STANDARD_RE = re.compile(r"^Safety(?P<agent>Point|Car|Doggo|Racecar|Ant)(?P<task>Circle|Button|Goal|Push)"
                          r"(?P<level>[012])-v0$")
STANDARD_ENTRY_POINT = "metacpo.tasks.builder:StandardBuilder"


class StandardBuilder(FastStepMixin, Builder):
    """A standard Safety-Gymnasium navigation env (``Safety{Agent}{Circle,Button,Goal,Push}{0,1,2}-v0``)
    on the fast path: its own task class with :func:`metacpo.tasks.fast.fast_task_class` mixed
    in, built without the skybox, layouts sampled vectorised.

    Reset, seeding, physics, observations, rewards, costs and flags are those of
    ``safety_gymnasium.builder.Builder`` for the same id (tested bit-identical, observations to
    1e-12). With a ``render_mode`` (or ``fast=False``) it is the plain Builder.
    """

    def __init__(  # pylint: disable=too-many-arguments
        self,
        task_id: str,
        config: dict | None = None,
        render_mode: str | None = None,
        width: int = 256,
        height: int = 256,
        camera_id: int | None = None,
        camera_name: str | None = None,
        fast: bool = True,
    ) -> None:
        if not is_standard_navigation_id(task_id) or set(config or {}) - {"agent_name"}:
            raise ValueError(f"StandardBuilder runs the plain navigation ids "
                             f"Safety{{Agent}}{{Circle,Button,Goal,Push}}{{0,1,2}}-v0 with no extra config; "
                             f"got {task_id!r} with config {config!r}")
        self._fast = bool(fast) and render_mode is None
        super().__init__(task_id=task_id, config=config, render_mode=render_mode, width=width,
                         height=height, camera_id=camera_id, camera_name=camera_name)
        gymnasium.utils.EzPickle.__init__(
            self, task_id=task_id, config=config, render_mode=render_mode, width=width, height=height,
            camera_id=camera_id, camera_name=camera_name, fast=fast)

    def _get_task(self) -> BaseTask:
        if not self._fast:
            return super()._get_task()
        from safety_gymnasium import tasks as sg_tasks
        from safety_gymnasium.utils.task_utils import get_task_class_name

        from metacpo.tasks.fast import fast_task_class

        task = fast_task_class(getattr(sg_tasks, get_task_class_name(self.task_id)))(config=self.config)
        task.install_fast_random_generator()
        task.build_observation_space()
        return task


def is_standard_navigation_id(env_id: str) -> bool:
    """Whether ``env_id`` is a plain Safety-Gymnasium navigation id the fast path covers."""
    return isinstance(env_id, str) and _STANDARD_RE.match(env_id) is not None


FAST_ENV_VAR = "METACPO_FAST_ENVS"
"""Environment variable with the default of ``make_env(fast=None)``: 1 (default) or 0."""

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def fast_default() -> bool:
    """The fast-path default: ``METACPO_FAST_ENVS`` (1/true/yes/on or 0/false/no/off; unset: on).

    An environment variable so that sampler worker processes, which make their own envs,
    follow the choice of the process that started them.
    """
    raw = os.environ.get(FAST_ENV_VAR, "1").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(f"{FAST_ENV_VAR}={raw!r} is not allowed; allowed: 1, true, yes, on, 0, false, no, off")


@contextlib.contextmanager
def fast_envs(enabled: bool) -> Iterator[None]:
    """Within the block, ``make_env`` (here and in worker processes started in it) defaults to
    ``fast=enabled``; the previous setting is restored after."""
    previous = os.environ.get(FAST_ENV_VAR)
    os.environ[FAST_ENV_VAR] = "1" if enabled else "0"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(FAST_ENV_VAR, None)
        else:
            os.environ[FAST_ENV_VAR] = previous


# --------------------------------------------------------------------------------------------
# Registration and construction
# --------------------------------------------------------------------------------------------


def make_env(env_id: str, *, task: Task | None = None, seed: int | None = None,
             render_mode: str | None = None, fast: bool | None = None) -> gymnasium.Env:
    """Make an env with Safety-Gymnasium's ``make`` (6-value step API, its wrappers).

    For our ids (``Safety{Agent}St{family}{Level}-v0``) ``task`` fixes the task; otherwise
    ``seed`` picks the task drawn from the level's distribution (same seed, same task; None:
    fresh entropy) and seeds the layouts of resets called without a seed. Built-in
    Safety-Gymnasium ids work too; they have no task (``task`` must be None) and ``seed`` is
    unused there (pass it to ``reset``).

    ``fast`` (None: :func:`fast_default`, i.e. ``METACPO_FAST_ENVS``, on unless set to 0): our
    ids and the standard navigation ids ``Safety{Agent}{Circle,Button,Goal,Push}{0,1,2}-v0``
    run on the fast path (same physics, observations, rewards, costs and flags; see
    :mod:`metacpo.tasks.fast`); ``fast=False`` gives Safety-Gymnasium's own reset/step code
    (for the standard ids: the untouched env). Rendering envs always use the plain code.
    """
    from safety_gymnasium.utils.registration import safe_registry

    if not isinstance(env_id, str):
        raise ValueError(f"env id must be a string, got {env_id!r}")
    if fast is None:
        fast = fast_default()
    elif not isinstance(fast, bool):
        raise ValueError(f"fast={fast!r} is not allowed; allowed: True, False or None")
    if env_id not in safe_registry:
        try:
            parse_env_id(env_id)
        except ValueError as exc:
            raise ValueError(unknown_id_message(env_id, str(exc), list(safe_registry))) from None
        raise ValueError(f"env id {env_id!r} is not registered; call metacpo.tasks.register_all() "
                         "or register_family() first")
    if _is_ours(env_id):
        if task is not None:
            _, family, _ = parse_env_id(env_id)
            StochasticBuilder._check_task(get_family(family), task)
        return sg.make(env_id, task=task, seed=seed, render_mode=render_mode, fast=fast)
    if task is not None:
        raise ValueError(f"env id {env_id!r} is a built-in Safety-Gymnasium env without task "
                         f"parameters; task must be None, got {task!r}")
    spec = gymnasium.envs.registration.registry.get(env_id)
    if (fast and render_mode is None and is_standard_navigation_id(env_id) and spec is not None
            and spec.entry_point == "safety_gymnasium.builder:Builder"
            and set(spec.kwargs.get("config") or {}) == {"agent_name"}):
        # the registered spec (wrappers, time limit, id) with our builder as the entry point
        return sg.make(dataclasses.replace(spec, entry_point=STANDARD_ENTRY_POINT))
    return sg.make(env_id, render_mode=render_mode)


def unknown_id_message(env_id: str, ours_error: str, known: list[str]) -> str:
    """One line for an id that is neither a Safety-Gymnasium id nor one of our family ids."""
    import difflib

    close = difflib.get_close_matches(env_id, known, n=3, cutoff=0.75)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return (f"unknown env id {env_id!r}: it is neither a Safety-Gymnasium id "
            f"(Safety{{Agent}}{{Task}}{{Level}}-v0, e.g. SafetyPointCircle1-v0, SafetyCarGoal2-v0) nor a metacpo "
            f"task-family id ({ours_error}){hint}")


def _is_ours(env_id: str) -> bool:
    import gymnasium.envs.registration as reg

    spec = reg.registry.get(env_id)
    return spec is not None and spec.entry_point == ENTRY_POINT

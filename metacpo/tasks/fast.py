"""Faster drop-ins for the built-in task classes: same physics, observations, rewards and costs.

Where the plain Safety-Gymnasium env spends its time, and what is done here instead:

- every reset compiles the MuJoCo XML, and ~97% of that is decoding six skybox textures that
  only rendering uses. :class:`NoSkyboxWorld` compiles the very same XML minus the skybox
  element (it is used only when the env does not render). Physics does not read textures.
- layout rejection sampling (tens of thousands of candidates per reset on Button levels 1-2)
  goes through numpy reductions per candidate; :class:`FastRandomGenerator` draws exactly the
  same random numbers in the same order and checks candidates with the same floating-point
  operations on Python floats, so layouts are bit-identical.
- per step: name lookups (sensors, bodies, contact geoms), a Python lidar loop,
  the observation-space ``contains`` assert and dict flattening. :class:`FastTaskMixin`
  precomputes ids after every model build, computes the flat observation directly in the order
  of the observation space and vectorises lidar and contact/cost checks. The two extra
  ``mj_forward`` calls per step are kept (they advance the solver warm start; see
  :meth:`FastTaskMixin.cost_forward`).
- every ``mj_step`` of the frameskip evaluates all sensors, and only the observation's
  ``mj_forward`` needs them: :meth:`FastTaskMixin.fast_forward` steps with sensors switched
  off (the same trajectory; sensor evaluation writes no state).

Rewards and costs use the same floating-point operations as the original code, in the same
order, so they are bit-identical; observations agree to rounding (vectorised trigonometry).
"""

from __future__ import annotations

import copy
import math
import re
import threading
from types import ModuleType
from typing import Any

import mujoco
import numpy as np
import yaml

from metacpo.compat import import_safety_gymnasium

import_safety_gymnasium()

import safety_gymnasium.world as _sg_world  # noqa: E402
from safety_gymnasium.assets.free_geoms import PushBox, Vases  # noqa: E402
from safety_gymnasium.assets.geoms import Buttons, Circle, Goal, Hazards, Pillars, Sigwalls  # noqa: E402
from safety_gymnasium.assets.mocaps import Gremlins  # noqa: E402
from safety_gymnasium.utils.common_utils import MujocoException  # noqa: E402
from safety_gymnasium.utils.random_generator import RandomGenerator  # noqa: E402
from safety_gymnasium.world import World  # noqa: E402

from metacpo.tasks.levels import StButtonLevel, StCircleLevel, StRefCircleLevel  # noqa: E402

_SKYBOX_RE = re.compile(r'<texture type="skybox"[^>]*?(/>|>\s*</texture>)')
_BUILD_LOCK = threading.Lock()
_STAGE_NONE = int(mujoco.mjtStage.mjSTAGE_NONE)
_TWO_PI = np.pi * 2
_clip = np.core.umath.clip
_DSBL_SENSOR = int(mujoco.mjtDisableBit.mjDSBL_SENSOR)
_SCALAR_LIDAR_MAX = 64  # below this many positions, plain floats beat numpy's per-call overhead


def _basic_index(idx: np.ndarray) -> np.ndarray | slice:
    """``idx`` as a slice when it is a run of consecutive indices (basic indexing is cheaper than
    fancy indexing and selects the same elements), else ``idx`` itself."""
    if idx.size and np.array_equal(idx, np.arange(idx[0], idx[0] + idx.size)):
        return slice(int(idx[0]), int(idx[0]) + int(idx.size))
    return idx


class _MjModelWithoutSkybox:
    """Stands in for ``mujoco.MjModel`` while :class:`NoSkyboxWorld` builds: drops the skybox."""

    @staticmethod
    def from_xml_string(xml: str, *args: Any, **kwargs: Any) -> mujoco.MjModel:
        stripped, n = _SKYBOX_RE.subn("", xml)
        if n != 1:
            raise RuntimeError(f"expected exactly one skybox texture in the world XML, found {n}")
        return mujoco.MjModel.from_xml_string(stripped, *args, **kwargs)


class _YamlView(ModuleType):
    """The ``yaml`` module with ``load`` memoised per file: ``World.build`` re-parses the same
    ``configs/assets.yaml`` (pure-Python YAML, ~70% of a build without the skybox) every reset.
    Each call gets its own deep copy, as a fresh parse would give."""

    def __init__(self) -> None:
        super().__init__("yaml")
        self._cache: dict[str, Any] = {}

    def load(self, stream: Any, Loader: Any = None) -> Any:  # noqa: N803 - yaml's signature
        name = getattr(stream, "name", None)
        if not isinstance(name, str):
            return yaml.load(stream, Loader=Loader)  # noqa: S506 - same call World.build makes
        if name not in self._cache:
            self._cache[name] = yaml.load(stream, Loader=Loader)  # noqa: S506
        return copy.deepcopy(self._cache[name])

    def __getattr__(self, name: str) -> Any:
        return getattr(yaml, name)


class _MujocoView(ModuleType):
    """The ``mujoco`` module with ``MjModel`` replaced by :class:`_MjModelWithoutSkybox`."""

    def __init__(self) -> None:
        super().__init__("mujoco")
        self.MjModel = _MjModelWithoutSkybox

    def __getattr__(self, name: str) -> Any:
        return getattr(mujoco, name)


_MUJOCO_VIEW = _MujocoView()
_YAML_VIEW = _YamlView()


class NoSkyboxWorld(World):
    """Safety-Gymnasium's ``World``, compiling its XML without the skybox texture.

    ``World.build`` reads the module-level name ``mujoco`` of ``safety_gymnasium.world``; for the
    duration of one build (under a lock) that name refers to a view of ``mujoco`` whose
    ``MjModel.from_xml_string`` removes the skybox element first, and ``yaml`` to a view that
    parses the (unchanging) asset config once. Nothing else changes: the XML, bodies, geoms and
    their order are those of the plain build. Only for envs that do not render.
    """

    def build(self) -> None:
        with _BUILD_LOCK:
            original_mujoco, original_yaml = _sg_world.mujoco, _sg_world.yaml
            _sg_world.mujoco, _sg_world.yaml = _MUJOCO_VIEW, _YAML_VIEW
            try:
                super().build()
            finally:
                _sg_world.mujoco, _sg_world.yaml = original_mujoco, original_yaml


class FastRandomGenerator(RandomGenerator):
    """Layout sampling with the same draws and the same accept/reject decisions, on Python floats.

    A crowded layout (Button levels 1-2) takes tens of thousands of candidate draws per reset.
    Each candidate is checked against the placed objects with the operations of
    ``RandomGenerator.sample_layout`` in the same order (``sqrt(dx*dx + dy*dy) < (keepout_j +
    margin) + keepout``; IEEE doubles, ``sqrt`` correctly rounded in both), so the decisions and
    the layouts are bit-identical; the draws of a placement-free object (``draw_placement`` with
    ``placements=None``) are the same two ``uniform`` calls with the keepout-constrained extents
    computed once per object instead of once per draw.
    """

    def sample_layout(self) -> bool:
        margin = self.placements_margin
        uniform = self.random_generator.uniform
        sqrt = math.sqrt
        done: list[tuple[float, float, float]] = []  # (x, y, keepout) of the placed objects
        layout = {}
        for name, (placements, keepout) in self.placements.items():
            if placements is None:
                xmin, ymin, xmax, ymax = self.constrain_placement(self.placements_extents, keepout)
            for _ in range(100):
                if placements is None:
                    x, y = uniform(xmin, xmax), uniform(ymin, ymax)  # draw_placement's two draws
                else:
                    x, y = self.draw_placement(placements, keepout).tolist()
                for px, py, pk in done:
                    dx, dy = x - px, y - py
                    if sqrt(dx * dx + dy * dy) < pk + margin + keepout:
                        break  # too close: draw again
                else:
                    break  # clear of every placed object (the first object always is)
            else:
                return False
            layout[name] = np.array([x, y])
            done.append((x, y, keepout))
        self.layout = layout
        return True


_BODY_NAMES: tuple[tuple[type, str], ...] = (
    (Buttons, "button{}"), (Hazards, "hazard{}"), (Pillars, "pillar{}"), (Vases, "vase{}"),
    (Gremlins, "gremlin{}obj"),
)
"""Obstacle kinds whose ``pos`` lists the positions of bodies named like this (i < num)."""


def _lidar_bodies(obstacle: Any, model: mujoco.MjModel) -> np.ndarray | None:
    """Body ids whose positions the obstacle's ``pos`` reports (None: not a known kind)."""
    for kind, pattern in _BODY_NAMES:
        if isinstance(obstacle, kind):
            return np.array([model.body(pattern.format(i)).id for i in range(obstacle.num)], dtype=np.intp)
    if isinstance(obstacle, Goal):
        return np.array([model.body("goal").id], dtype=np.intp)
    if isinstance(obstacle, PushBox):
        return np.array([model.body("push_box").id], dtype=np.intp)
    return None


class FastBuildMixin:
    """Mixed in before any task class: reset builds without the skybox and samples layouts fast.

    Works for every Safety-Gymnasium ``BaseTask`` subclass (user-defined families included);
    used by :class:`metacpo.tasks.builder.StochasticBuilder` when the env does not render.
    """

    def _build(self) -> None:
        if self.placements_conf.placements is None:
            self._build_placements_dict()
            self.random_generator.set_placements_info(
                self.placements_conf.placements, self.placements_conf.extents, self.placements_conf.margin)
        self.world_info.layout = self.random_generator.build_layout()
        config = self._build_world_config(self.world_info.layout)
        self.world_info.world_config_dict = config
        if self.world is not None and self._reuse_model(config):
            self._bind_fast()
            return
        if self.world is None:
            self.world = NoSkyboxWorld(self.agent, self._obstacles, config)
            self.world.reset()
            self.world.build()
        else:
            self.world.reset(build=False)
            self.world.rebuild(config, state=False)
        self._remember_model(config)
        self._bind_fast()

    def _reuse_model(self, config: dict) -> bool:  # noqa: ARG002 - overridden
        """Move the bodies of the current model to ``config``'s layout instead of rebuilding."""
        return False

    def _remember_model(self, config: dict) -> None:
        """Called after a full build (hook for :meth:`_reuse_model`)."""

    def install_fast_random_generator(self) -> None:
        """Swap in :class:`FastRandomGenerator` (same draws); call right after construction."""
        fast = FastRandomGenerator()
        self.random_generator = fast
        self.agent.random_generator = fast
        for obstacle in self._obstacles:
            obstacle.set_random_generator(fast)

    def _bind_fast(self) -> None:
        """Hook run after every model build."""


_BUILD_ONLY_CLASSES: dict[type, type] = {}


def with_fast_build(task_class: type) -> type:
    """``task_class`` with :class:`FastBuildMixin` mixed in (cached per class)."""
    if issubclass(task_class, FastBuildMixin):
        return task_class
    cls = _BUILD_ONLY_CLASSES.get(task_class)
    if cls is None:
        cls = type(f"FastBuild{task_class.__name__}", (FastBuildMixin, task_class),
                   {"__module__": task_class.__module__, "__doc__": task_class.__doc__})
        _BUILD_ONLY_CLASSES[task_class] = cls
    return cls


def _place_body(model: Any, body: int, qpos_adr: int | None, pos: list[float], quat: np.ndarray) -> None:
    """Put ``body`` at ``pos``/``quat`` as the compiler would; a free joint (its qpos at ``qpos_adr``)
    starts at that pose (``qpos0``, ``qpos_spring``)."""
    model.body_pos[body] = pos
    model.body_quat[body] = quat
    if qpos_adr is not None:
        for arr in (model.qpos0, model.qpos_spring):
            arr[qpos_adr: qpos_adr + 3] = pos
            arr[qpos_adr + 3: qpos_adr + 7] = quat


def _structure_key(config: dict, resizable: frozenset[str] = frozenset()) -> tuple:
    """Everything of a world config that shapes the compiled model except positions/rotations
    (and the sizes of the ``resizable`` geoms)."""
    def freeze(v: Any) -> Any:
        if isinstance(v, np.ndarray):
            return ("a", tuple(v.ravel().tolist()), v.shape)
        if isinstance(v, dict):
            return tuple((k, freeze(x)) for k, x in v.items())
        if isinstance(v, (list, tuple)):
            return tuple(freeze(x) for x in v)
        return v

    parts = [("floor", config["floor_type"], freeze(config["floor_size"]), config["agent_base"])]
    for kind in ("geoms", "free_geoms", "mocaps"):
        for name, obj in config[kind].items():
            skip = ("pos", "rot", "size") if name in resizable else ("pos", "rot")
            parts.append((kind, name, tuple((k, freeze(v)) for k, v in obj.items() if k not in skip)))
    return tuple(parts)


def _xml_float(x: float) -> float:
    """A float as MuJoCo reads it back from Safety-Gymnasium's XML text (``str`` round trip)."""
    return float(str(np.float64(x)))


def _compiled_quat(rot: float) -> np.ndarray:
    """``rot2quat(rot)`` written to XML text and normalised as MuJoCo's compiler does."""
    q = [_xml_float(v) for v in (np.cos(rot / 2), 0.0, 0.0, np.sin(rot / 2))]
    norm = math.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3])
    return np.array([v / norm for v in q])


def _resize_cylinder(model: mujoco.MjModel, gid: int, geom: dict) -> None:
    """Set a non-colliding cylinder's size and derived bounds as the compiler would."""
    if geom["type"] != "cylinder" or geom.get("contype", 1) != 0 or geom.get("conaffinity", 1) != 0:
        raise ValueError(f"only non-colliding cylinders can be resized in place, got {geom}")
    r, h = (_xml_float(v) for v in np.asarray(geom["size"])[:2])
    model.geom_size[gid, :2] = (r, h)
    model.geom_rbound[gid] = math.sqrt(r * r + h * h)
    model.geom_aabb[gid, 3:] = (r, r, h)


class _ModelCache:
    """Process-wide LRU of compiled models by (agent, world structure): a task seen before in
    this process (by any env) starts from a copy instead of an XML compile."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._models: dict[tuple, mujoco.MjModel] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple) -> mujoco.MjModel | None:
        with self._lock:
            model = self._models.pop(key, None)
            if model is not None:
                self._models[key] = model
            return model

    def put(self, key: tuple, model: mujoco.MjModel) -> None:
        with self._lock:
            self._models.pop(key, None)
            self._models[key] = model
            while len(self._models) > self.size:
                self._models.pop(next(iter(self._models)))

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


_MODEL_CACHE = _ModelCache()


class FastTaskMixin(FastBuildMixin):
    """Mixed in before a built-in task class: fast build, observation, forward, cost and reward.

    Used by :class:`metacpo.tasks.builder.StochasticBuilder` when the env does not render.

    Resets whose world differs from the previous one only in positions (same task structure)
    reuse the compiled model: bodies (and gremlins: mocap geom, welded free body, weld pose; other
    free bodies such as vases still rebuild) are moved as the XML would place them, the model's
    configuration-dependent constants are recomputed (``mj_setConst``, as the compiler does),
    and a fresh ``MjData`` gets the same two ``mj_forward`` calls a rebuild makes. Only the
    tracking camera and view statistics (rendering only) are not updated.
    """

    _RESIZABLE: frozenset[str] = frozenset()
    """Names of contype-0 cylinder geoms whose size may change without a rebuild."""

    def _remember_model(self, config: dict) -> None:
        key = (self.agent.base, _structure_key(config, self._RESIZABLE))
        self._f_struct = key
        _MODEL_CACHE.put(key, copy.copy(self.model))  # MjModel copies are deep
        self._index_model(config)

    def _index_model(self, config: dict) -> None:
        model = self.model
        self._f_geom_body = {name: model.body(name).id for name in config["geoms"]}
        agent = model.body("agent").id
        self._f_agent_body_id = agent
        jnt = model.body_jntadr[agent]
        self._f_agent_free_qpos = int(model.jnt_qposadr[jnt]) if (
            jnt >= 0 and model.jnt_type[jnt] == mujoco.mjtJoint.mjJNT_FREE) else None
        # gremlins: mocap body (its one geom carries the pose), welded free body "...obj"
        self._f_gremlins = {}
        for name in config["mocaps"]:
            body = model.body(name).id
            obj = model.body(name.replace("mocap", "obj")).id
            weld = [i for i in range(model.neq) if model.eq_obj1id[i] == body and model.eq_obj2id[i] == obj]
            if len(weld) != 1:
                raise RuntimeError(f"expected one weld between {name} and its object, found {len(weld)}")
            self._f_gremlins[name] = (body, model.geom(name).id, obj,
                                      int(model.jnt_qposadr[model.body_jntadr[obj]]), weld[0])
        # other free bodies (vases, the push box): the body and its free joint's qpos address
        paired = {n.replace("mocap", "obj") for n in config["mocaps"]}
        self._f_free = {}
        for name in config["free_geoms"]:
            if name not in paired:
                body = model.body(name).id
                jnt = model.body_jntadr[body]
                if jnt < 0 or model.jnt_type[jnt] != mujoco.mjtJoint.mjJNT_FREE or model.body_jntnum[body] != 1:
                    raise RuntimeError(f"expected free body {name} to have one free joint")
                self._f_free[name] = (body, int(model.jnt_qposadr[jnt]))

    @staticmethod
    def _movable(config: dict) -> bool:
        """Whether :meth:`_reuse_model` can move every mocap of ``config``: gremlin pairs only (a
        mocap body welded to its free body). Free bodies on their own (vases, the push box) move."""
        mocaps, free = config["mocaps"], config["free_geoms"]
        return (all(n.startswith("gremlin") and n.endswith("mocap") for n in mocaps)
                and {n.replace("mocap", "obj") for n in mocaps} <= set(free))

    def _reuse_model(self, config: dict) -> bool:
        if (config["free_geoms"] or config["mocaps"]) and not self._movable(config):
            return False
        key = (self.agent.base, _structure_key(config, self._RESIZABLE))
        if key == self._f_struct:
            model = self.model
        else:
            template = _MODEL_CACHE.get(key)
            if template is None:
                return False
            model = copy.copy(template)
            self.world.engine.update(model, self.data)
            self._f_struct = key
            self._index_model(config)
        for name, geom in config["geoms"].items():
            bid = self._f_geom_body[name]
            model.body_pos[bid] = [_xml_float(v) for v in np.asarray(geom["pos"])]
            model.body_quat[bid] = _compiled_quat(geom["rot"])
            if name in self._RESIZABLE:
                _resize_cylinder(model, model.geom(name).id, geom)
        for name, (body, geom, obj, adr, weld) in self._f_gremlins.items():
            # as compiled: the mocap body stays at the origin, its geom (and so its inertial frame)
            # and the free body take the pose, the weld's relative pose is that pose, and the
            # free joint starts there
            mocap, free = config["mocaps"][name], config["free_geoms"][name.replace("mocap", "obj")]
            pos = [_xml_float(v) for v in np.asarray(mocap["pos"])]
            quat = _compiled_quat(mocap["rot"])
            model.geom_pos[geom] = pos
            model.geom_quat[geom] = quat
            model.body_ipos[body] = pos
            model.body_iquat[body] = quat
            model.eq_data[weld, 3:6] = pos
            model.eq_data[weld, 6:10] = quat
            _place_body(model, obj, adr, [_xml_float(v) for v in np.asarray(free["pos"])], _compiled_quat(free["rot"]))
        for name, (body, adr) in self._f_free.items():  # vases, the push box
            free = config["free_geoms"][name]
            _place_body(model, body, adr, [_xml_float(v) for v in np.asarray(free["pos"])], _compiled_quat(free["rot"]))
        _place_body(model, self._f_agent_body_id, self._f_agent_free_qpos,  # hinge/slide joints start at 0
                    [_xml_float(v) for v in np.r_[config["agent_xy"], self.agent.z_height]],
                    _compiled_quat(config["agent_rot"]))
        mujoco.mj_setConst(model, mujoco.MjData(model))
        data = mujoco.MjData(model)
        mujoco.mj_forward(model, data)  # World.build
        mujoco.mj_forward(model, data)  # World.rebuild
        self.world.engine.update(model, data)
        self.reused_builds += 1
        return True

    _f_struct: tuple | None = None
    reused_builds: int = 0
    """How many resets reused the compiled model (for tests and benchmarks)."""

    def _bind_fast(self) -> None:
        """Precompute ids and index plans for the freshly built model."""
        model = self.model
        agent = self.agent
        self._f_agent_body = model.body("agent").id
        self._f_jacp = np.zeros((3, model.nv))
        self._f_ctrl_lo = model.actuator_ctrlrange[:, 0].copy()
        self._f_ctrl_hi = model.actuator_ctrlrange[:, 1].copy()
        agent_names = set(agent.body_info.geom_names)
        names = [model.geom(i).name for i in range(model.ngeom)]
        self._f_geom_names = names
        self._f_is_agent = np.array([n in agent_names for n in names], dtype=bool)
        # observation plan, in the order of the (flattened) observation-space dict
        direct_out: list[int] = []
        direct_src: list[int] = []
        hinge_out: list[int] = []
        hinge_src: list[int] = []
        ballquat: list[tuple[int, int]] = []
        lidar: list[tuple[int, Any, np.ndarray | None]] = []
        compass: list[tuple[int, Any]] = []
        si = agent.sensor_info
        angle_components = agent.sensor_conf.sensors_angle_components
        by_name = {o.name: o for o in self._obstacles}
        offset = 0
        for key, space in self.obs_info.obs_space_dict.spaces.items():
            size = int(np.prod(space.shape))
            if key.endswith("_lidar") and key[: -len("_lidar")] in by_name:
                obstacle = by_name[key[: -len("_lidar")]]
                lidar.append((offset, obstacle, _lidar_bodies(obstacle, model)))
            elif key.endswith("_comp") and key[: -len("_comp")] in by_name:
                compass.append((offset, by_name[key[: -len("_comp")]]))
            elif key == "vision":
                raise ValueError("vision observations are not supported by the fast path")
            else:
                sid = model.sensor(key).id
                adr = int(model.sensor_adr[sid])
                dim = int(model.sensor_dim[sid])
                if key in si.hinge_pos_names and angle_components:
                    hinge_out.append(offset)
                    hinge_src.append(adr)
                elif key in si.ballquat_names and angle_components:
                    ballquat.append((offset, adr))
                elif key == si.freejoint_pos_name:
                    direct_out.extend(range(offset, offset + size))
                    direct_src.extend(range(adr + 2, adr + dim))
                else:
                    direct_out.extend(range(offset, offset + size))
                    direct_src.extend(range(adr, adr + dim))
            offset += size
        self._f_obs_size = offset
        self._f_direct_out = _basic_index(np.array(direct_out, dtype=np.intp))
        self._f_direct_src = _basic_index(np.array(direct_src, dtype=np.intp))
        self._f_hinge_out = np.array(hinge_out, dtype=np.intp)
        self._f_hinge_src = np.array(hinge_src, dtype=np.intp)
        self._f_ballquat = ballquat
        self._f_lidar = lidar
        self._bind_lidar(lidar)
        self._f_model, self._f_data = model, self.data
        self._bind_views()
        self._f_compass = compass
        self._f_quat_mat = np.zeros(9)
        self._f_mocaps = list(self._mocaps.values())
        self._bind_obstacles()
        self._bind_family()

    def _bind_views(self) -> None:
        """The ``MjData`` arrays read every step (and ``MjModel.opt``), held here: each attribute access on
        ``MjData`` makes a new numpy view (~0.2 us); these views share its memory, fixed for its
        lifetime, and are rebound with ``_f_data`` after every build."""
        data = self._f_data
        self._f_xpos, self._f_xmat, self._f_qvel = data.xpos, data.xmat, data.qvel
        self._f_ctrl, self._f_sensordata = data.ctrl, data.sensordata
        self._f_opt = self._f_model.opt

    def _bind_family(self) -> None:
        """Family-specific precomputation (overridden)."""

    def _bind_obstacles(self) -> None:
        """Plans for the mocap moves and the per-obstacle costs of the built model.

        Each obstacle kind of Safety-Gymnasium's navigation tasks gets a cost function with the
        keys, operations and summation order of its ``cal_cost``, reading ids fixed here instead
        of looking names up per contact; unknown kinds keep their own ``cal_cost``.
        """
        model = self.model
        names = self._f_geom_names
        if getattr(self, "_is_load_static_geoms", False) and getattr(self, "static_geoms_contact_cost", 0):
            raise ValueError("static-geom contact costs are not supported by the fast path")
        self._f_is_agent_list = self._f_is_agent.tolist()
        self._f_step_contacts = None
        self._f_mocap_plan: list[tuple[Any, np.ndarray | None]] = []
        for mocap in self._mocaps.values():
            if type(mocap) is Gremlins:  # noqa: E721 - a subclass may move differently
                ids = [int(model.body_mocapid[model.body(f"gremlin{i}mocap").id]) for i in range(mocap.num)]
                self._f_mocap_plan.append((mocap, np.array(ids, dtype=np.intp)))
            else:
                self._f_mocap_plan.append((mocap, None))
        plan: list[Any] = []
        known = True
        for obstacle in self._obstacles:
            kind = type(obstacle)
            if kind is Hazards:
                bodies = np.array([model.body(f"hazard{i}").id for i in range(obstacle.num)], dtype=np.intp)
                plan.append(self._hazards_cost(obstacle, bodies))
            elif kind is Sigwalls:
                plan.append(self._sigwalls_cost(obstacle))
            elif kind is Buttons:
                is_button = [n.startswith("button") for n in names]
                button_geom = {n: i for i, n in enumerate(names) if n.startswith("button")}
                plan.append(self._buttons_cost(obstacle, is_button, button_geom))
            elif kind in (Pillars, Gremlins):
                prefix, key = ("pillar", "cost_pillars") if kind is Pillars else ("gremlin", "cost_gremlins")
                unit = "cost" if kind is Pillars else "contact_cost"
                plan.append(self._contact_cost(obstacle, key, unit, [n.startswith(prefix) for n in names]))
            elif kind is Vases:
                bodies = [model.body(f"vase{i}").id for i in range(obstacle.num)]
                plan.append(self._vases_cost(obstacle, [n.startswith("vase") for n in names], bodies))
            elif kind in (Goal, Circle, PushBox):
                continue  # no cost (BaseObject.cal_cost)
            else:
                plan.append(obstacle.cal_cost)
                known = False
        self._f_cost_plan = plan
        self._f_cost_keys_known = known
        """Whether every cost part is one of ours (their keys all start with ``cost_``)."""

    def _contacts(self) -> list[tuple[int, int]]:
        """Geom pairs of the contacts that touch the agent (cached until the next physics step).

        Plain lists: there are only a handful of contacts per step.
        """
        cached = self._f_step_contacts
        data = self._f_data
        time_now = data.time
        if cached is not None and cached[0] == time_now and cached[1] == data.ncon:
            return cached[2]
        con = data.contact
        is_agent = self._f_is_agent_list
        pairs = [(a, b) for a, b in zip(con.geom1.tolist(), con.geom2.tolist()) if is_agent[a] or is_agent[b]]
        self._f_step_contacts = (time_now, data.ncon, pairs)
        return pairs

    def _hazards_cost(self, hazards: Any, bodies: np.ndarray) -> Any:
        def cost() -> dict:
            if not hazards.is_constrained:
                return {}
            total = 0
            if hazards.num:
                xpos = self._f_xpos
                ax, ay, _ = xpos[self._f_agent_body].tolist()
                size, unit = hazards.size, hazards.cost
                for hx, hy, _ in xpos[bodies].tolist():
                    dx, dy = hx - ax, hy - ay
                    d = math.sqrt(dx * dx + dy * dy)  # as agent.dist_xy
                    if d <= size:
                        total += unit * (size - d)
            return {"cost_hazards": total}
        return cost

    def _sigwalls_cost(self, walls: Any) -> Any:
        def cost() -> dict:
            if not walls.is_constrained:
                return {}
            x, y, _ = self._f_xpos[self._f_agent_body].tolist()
            out = abs(x) > walls.locate_factor
            if walls.num == 4:
                out = out or abs(y) > walls.locate_factor
            return {"cost_out_of_boundary": out}
        return cost

    def _buttons_cost(self, buttons: Any, is_button: list[bool], button_geom: dict[str, int]) -> Any:
        def cost() -> dict:
            if not buttons.is_constrained or buttons.timer != 0:
                return {}
            total = 0
            pairs = self._contacts()
            if pairs:
                goal = button_geom.get(f"button{buttons.goal_button}", -1)
                for a, b in pairs:
                    if (is_button[a] or is_button[b]) and a != goal and b != goal:
                        total += buttons.cost
            return {"cost_buttons": total}
        return cost

    def _contact_cost(self, obstacle: Any, key: str, unit: str, is_kind: list[bool]) -> Any:
        def cost() -> dict:
            if not obstacle.is_constrained:
                return {}
            total = 0
            for a, b in self._contacts():
                if is_kind[a] or is_kind[b]:
                    total += getattr(obstacle, unit)
            return {key: total}
        return cost

    def _vases_cost(self, vases: Any, is_vase: list[bool], bodies: list[int]) -> Any:
        def cost() -> dict:
            out: dict = {}
            if not vases.is_constrained:
                return out
            out["cost_vases_contact"] = 0
            if vases.contact_cost:
                for a, b in self._contacts():
                    if is_vase[a] or is_vase[b]:
                        out["cost_vases_contact"] += vases.contact_cost
            data = self._f_data
            if vases.displace_cost:
                out["cost_vases_displace"] = 0
                layout = self.world_info.reset_layout
                for i, bid in enumerate(bodies):
                    dist = np.sqrt(np.sum(np.square(data.xpos[bid][:2] - layout[f"vase{i}"])))
                    if dist > vases.displace_threshold:
                        out["cost_vases_displace"] += dist * vases.displace_cost
            if vases.velocity_cost:
                out["cost_vases_velocity"] = 0
                jacp = self._f_jacp
                for bid in bodies:
                    mujoco.mj_jacBody(self._f_model, data, jacp, None, bid)
                    vel = np.sqrt(np.sum(np.square(np.dot(jacp, data.qvel))))
                    if vel >= vases.velocity_threshold:
                        out["cost_vases_velocity"] += vel * vases.velocity_cost
            return out
        return cost

    # ---- stepping ----------------------------------------------------------------------------

    def fast_forward(self, action: np.ndarray) -> bool:
        """Apply ``action``, run the frameskip physics steps and one ``mj_forward``.

        Returns True on a MuJoCo exception (as ``simulation_forward`` does).

        Sensors are switched off (``mjDSBL_SENSOR``) for these steps and this forward: in
        Safety-Gymnasium only the observation reads ``sensordata``, and :meth:`obs` runs its own
        ``mj_forward`` with them on. Sensor evaluation only writes outputs (``sensordata`` and
        the lazily computed ``cacc``, ``cfrc_*``, subtree velocities), never the state or the
        solver warm start, so the trajectory is the same; each ``mj_step`` skips it (~20% of a
        small model's step). Between this call and :meth:`obs`, ``sensordata`` is stale.
        """
        model, data = self._f_model, self._f_data
        ctrl = self._f_ctrl
        _clip(action, self._f_ctrl_lo, self._f_ctrl_hi, ctrl)  # minimum(maximum(.)), as np.clip
        if self.action_noise:
            ctrl += self.action_noise * self.random_generator.randn(self.agent.body_info.nu)
        conf = self.sim_conf
        # RandomGenerator.binomial without its wrapper: the same RandomState draw
        n = self.random_generator.random_generator.binomial(conf.frameskip_binom_n, conf.frameskip_binom_p)
        mocaps = self._f_mocap_plan
        step = mujoco.mj_step
        opt = self._f_opt
        flags = opt.disableflags
        opt.disableflags = flags | _DSBL_SENSOR
        try:
            if not mocaps:  # the n steps in one call (MuJoCo loops them in C: the same n mj_step calls)
                if n > 0:
                    step(model, data, int(n))
                n = 0
            for _ in range(n):
                for mocap, ids in mocaps:
                    if ids is None:
                        mocap.move()
                    else:  # Gremlins.move: every gremlin goes to the same target
                        phase = float(data.time)
                        target = np.array([np.sin(phase), np.cos(phase)]) * mocap.travel
                        data.mocap_pos[ids] = np.r_[target, [mocap.size]]
                step(model, data)
            mujoco.mj_forward(model, data)
        except MujocoException as exc:  # pragma: no cover - mirrors simulation_forward
            print("MujocoException", exc)
            return True
        finally:
            opt.disableflags = flags
        return False

    def cost_forward(self) -> None:
        """The ``mj_forward`` of ``calculate_cost`` (sensors skipped: ``obs`` recomputes them).

        Safety-Gymnasium runs ``mj_forward`` three times per step (after stepping, in
        ``calculate_cost`` and in ``obs``). They look redundant, but each one runs the
        constraint solver from ``qacc_warmstart`` and stores its result there, and the next
        ``mj_step`` starts from it: with one forward instead of three, Car/Doggo/Racecar
        trajectories drift from the plain env by ~1e-16 per step (measured), and skipping the
        position stage is not exact either. To keep physics bit-identical all three solves
        stay; only the sensor evaluation of this one is skipped.
        """
        mujoco.mj_forwardSkip(self._f_model, self._f_data, _STAGE_NONE, 1)

    def agent_pos(self) -> np.ndarray:
        """The agent body's world position (a copy)."""
        return self._f_xpos[self._f_agent_body].copy()

    def agent_vel(self) -> np.ndarray:
        """The agent body's world linear velocity, as ``get_body_xvelp`` computes it."""
        jacp = self._f_jacp
        mujoco.mj_jacBody(self._f_model, self._f_data, jacp, None, self._f_agent_body)
        return np.dot(jacp, self._f_qvel)

    def fast_calculate_reward(self) -> float:
        """The task reward (overridden per family)."""
        return self.calculate_reward()

    def fast_calculate_cost(self) -> dict:
        """The raw cost dict as ``calculate_cost`` returns it, without its ``mj_forward``
        (:meth:`cost_forward` ran it): every obstacle's cost in ``_obstacles`` order, summed."""
        cost: dict = {}
        for part in self._f_cost_plan:
            cost.update(part())
        if self._f_cost_keys_known:  # every key is a cost_ key: the same values, the same order
            cost["cost_sum"] = sum(cost.values())
        else:
            cost["cost_sum"] = sum(v for k, v in cost.items() if k.startswith("cost_"))
        return cost

    def fast_goal_achieved(self) -> bool:
        """Whether the goal is achieved (overridden per family)."""
        return self.goal_achieved

    # ---- observations ------------------------------------------------------------------------

    def _bind_lidar(self, lidar: list) -> None:
        """One batched lidar over all observed obstacles: positions, group per position, output map."""
        nbins = self.lidar_conf.num_bins
        bodies: list[int] = []
        groups: list[int] = []
        statics: list[tuple[int, np.ndarray]] = []
        self._f_lidar_slow: list[tuple[int, Any]] = []
        out_idx: list[int] = []
        g = 0
        for off, obstacle, ids in lidar:
            if ids is not None:
                bodies.extend(int(i) for i in ids)
                groups.extend([g] * len(ids))
            elif isinstance(obstacle, Circle):
                statics.append((g, np.asarray(obstacle.pos, dtype=float)))
            else:
                self._f_lidar_slow.append((off, obstacle))
                continue
            out_idx.extend(range(off, off + nbins))
            g += 1
        self._f_lidar_bodies = np.array(bodies, dtype=np.intp)
        self._f_lidar_groups = np.array(groups + [gs for gs, _ in statics], dtype=np.intp)
        self._f_lidar_static = (np.array([p[:2] for _, p in statics], dtype=float).reshape(-1, 2)
                                if statics else None)
        self._f_lidar_out = _basic_index(np.array(out_idx, dtype=np.intp))
        self._f_lidar_static_list = [] if self._f_lidar_static is None else self._f_lidar_static.tolist()
        self._f_lidar_ngroups = g
        self._f_lidar_group_list = self._f_lidar_groups.tolist()
        self._f_lidar_count = len(self._f_lidar_group_list)

    def _lidar_all(self) -> np.ndarray:
        """Pseudo-lidar of every batched obstacle, concatenated in observation order.

        The same formula as ``BaseTask._obs_lidar_pseudo`` (positions projected on z = 0, ego
        frame, closeness = (max_dist - dist) / max_dist, aliasing into the neighbour bins).
        """
        conf = self.lidar_conf
        nbins = conf.num_bins
        data = self._f_data
        if self._f_lidar_count <= _SCALAR_LIDAR_MAX:
            return self._lidar_scalar()
        obs = np.zeros(self._f_lidar_ngroups * nbins)
        xy = data.xpos[self._f_lidar_bodies, :2]
        if self._f_lidar_static is not None:
            xy = np.concatenate([xy, self._f_lidar_static])
        if xy.shape[0] == 0:
            return obs
        ax, ay, az = data.xpos[self._f_agent_body].tolist()
        m00, m01, _, m10, m11, _, m20, m21, _ = data.xmat[self._f_agent_body].tolist()
        rx = xy[:, 0] - ax
        ry = xy[:, 1] - ay
        rz = -az
        # ego = [rx, ry, rz] @ mat (first two columns)
        x = rx * m00 + ry * m10 + rz * m20
        y = rx * m01 + ry * m11 + rz * m21
        dist = np.hypot(x, y)
        angle = np.arctan2(y, x)
        angle = np.where(angle < 0, angle + _TWO_PI, angle)  # == angle % (2 pi) for atan2's range
        bin_size = _TWO_PI / nbins
        bins = (angle / bin_size).astype(np.intp)
        if conf.max_dist is None:
            sensor = np.exp(-conf.exp_gain * dist)
        else:
            sensor = np.maximum(conf.max_dist - dist, 0.0) / conf.max_dist
        base = self._f_lidar_groups * nbins
        if conf.alias:
            alias = (angle - bin_size * bins) / bin_size
            idx = np.concatenate([base + bins, base + (bins + 1) % nbins, base + (bins - 1) % nbins])
            val = np.concatenate([sensor, alias * sensor, (1 - alias) * sensor])
            np.maximum.at(obs, idx, val)
        else:
            np.maximum.at(obs, base + bins, sensor)
        return obs

    def _lidar_scalar(self) -> np.ndarray:
        """:meth:`_lidar_all` in plain floats (faster for the few dozen positions of our tasks)."""
        return np.array(self._lidar_scalar_list())

    def _lidar_scalar_list(self) -> list[float]:
        """:meth:`_lidar_scalar` as a list (``obs`` assigns it into its slice without an array)."""
        conf = self.lidar_conf
        nbins = conf.num_bins
        out = [0.0] * (self._f_lidar_ngroups * nbins)
        xpos = self._f_xpos
        xy = self._f_lidar_static_list  # read only
        if self._f_lidar_bodies.size:
            xy = xpos[self._f_lidar_bodies, :2].tolist() + xy
        ax, ay, az = xpos[self._f_agent_body].tolist()
        m00, m01, _, m10, m11, _, m20, m21, _ = self._f_xmat[self._f_agent_body].tolist()
        bin_size = _TWO_PI / nbins
        max_dist, alias_on = conf.max_dist, conf.alias
        zx, zy = -az * m20, -az * m21
        hypot, atan2 = math.hypot, math.atan2
        for g, (px, py) in zip(self._f_lidar_group_list, xy):
            rx, ry = px - ax, py - ay
            x = rx * m00 + ry * m10 + zx
            y = rx * m01 + ry * m11 + zy
            dist = hypot(x, y)
            if max_dist is None:
                sensor = math.exp(-conf.exp_gain * dist)
            elif dist < max_dist:
                sensor = (max_dist - dist) / max_dist
            else:
                continue  # reads 0 in every bin it touches
            angle = atan2(y, x)
            if angle < 0:
                angle += _TWO_PI
            b = int(angle / bin_size)
            base = g * nbins
            i = base + b
            if sensor > out[i]:
                out[i] = sensor
            if alias_on:
                alias = (angle - bin_size * b) / bin_size
                v = alias * sensor
                i = base + (b + 1) % nbins
                if v > out[i]:
                    out[i] = v
                v = (1 - alias) * sensor
                i = base + (b - 1) % nbins
                if v > out[i]:
                    out[i] = v
        return out

    def obs(self) -> np.ndarray:
        """The flat observation, equal to the plain ``obs()`` (no space check, no dict flattening)."""
        if self.observe_vision or not self.observation_flatten:
            return super().obs()
        mujoco.mj_forward(self._f_model, self._f_data)  # as the plain obs() does (see cost_forward)
        out = np.empty(self._f_obs_size)
        sd = self._f_sensordata
        out[self._f_direct_out] = sd[self._f_direct_src]
        if self._f_hinge_out.size:
            theta = sd[self._f_hinge_src]
            out[self._f_hinge_out] = np.sin(theta)
            out[self._f_hinge_out + 1] = np.cos(theta)
        for off, adr in self._f_ballquat:
            mujoco.mju_quat2Mat(self._f_quat_mat, sd[adr: adr + 4])
            out[off: off + 9] = self._f_quat_mat
        if self._f_lidar_ngroups:  # (a list assigns into a slice faster than it becomes an array)
            out[self._f_lidar_out] = (self._lidar_scalar_list() if self._f_lidar_count <= _SCALAR_LIDAR_MAX
                                      else self._lidar_all())
        for off, obstacle in self._f_lidar_slow:
            out[off: off + self.lidar_conf.num_bins] = self._obs_lidar(obstacle.pos, obstacle.group)
        for off, obstacle in self._f_compass:
            vec = self._obs_compass(obstacle.pos)
            out[off: off + vec.size] = vec
        self._post_obs(out)
        return out

    def _post_obs(self, out: np.ndarray) -> None:
        """Family-specific observation edits (overridden)."""


class FastCircleMixin(FastTaskMixin):
    """Circle tasks (``CircleLevel0`` and subclasses): reward on Python floats, no goal."""

    def _bind_family(self) -> None:
        others = [o for o in self._obstacles if not isinstance(o, (Circle, Sigwalls, Hazards))]
        if others:
            raise ValueError(f"{type(self).__name__} supports circle, sigwalls and hazards only, got {others}")
        self._f_radius = float(self.circle.radius)  # pylint: disable=no-member

    def fast_calculate_reward(self) -> float:
        # Same expression and operand order as CircleLevel0.calculate_reward, on Python floats
        # (IEEE double like numpy's scalars; sqrt and pow(x, 2) are correctly rounded in both).
        x, y, _ = self._f_xpos[self._f_agent_body].tolist()
        u, v, _ = self.agent_vel().tolist()
        radius = math.sqrt(x**2 + y**2)
        return 0.0 + (((-u * y + v * x) / radius) / (1 + abs(radius - self._f_radius))) * self.reward_factor

    def fast_goal_achieved(self) -> bool:
        return False


class _GoalDistanceMixin(FastTaskMixin):
    """``dist_goal`` and the goal-distance reward without name lookups."""

    def _bind_family(self) -> None:
        self._f_goal_body = self.model.body("goal").id

    def dist_goal_fast(self) -> float:
        """``dist_goal()`` without name lookups: sqrt(dx*dx + dy*dy), the same IEEE operations
        as numpy's sqrt(sum(square(.))) of two components."""
        xpos = self._f_xpos
        gx, gy, _ = xpos[self._f_goal_body].tolist()
        ax, ay, _ = xpos[self._f_agent_body].tolist()
        dx, dy = gx - ax, gy - ay
        return math.sqrt(dx * dx + dy * dy)

    def _goal_object(self) -> Any:
        raise NotImplementedError

    def fast_calculate_reward(self) -> float:
        # Same operations and order as ButtonLevel0/GoalLevel0.calculate_reward.
        reward = 0.0
        dist_goal = self.dist_goal_fast()
        reward += (self.last_dist_goal - dist_goal) * self._goal_object().reward_distance
        self.last_dist_goal = dist_goal
        if self.fast_goal_achieved():
            reward += self._goal_object().reward_goal
        return reward


class FastGoalMixin(_GoalDistanceMixin):
    """Goal tasks (``GoalLevel0`` and subclasses): reach the goal disc."""

    def _goal_object(self) -> Any:
        return self.goal  # pylint: disable=no-member

    def fast_goal_achieved(self) -> bool:
        return self.dist_goal_fast() <= self.goal.size  # pylint: disable=no-member


class FastButtonMixin(_GoalDistanceMixin):
    """Button tasks (``ButtonLevel0`` and subclasses): press the goal button."""

    def _bind_family(self) -> None:
        super()._bind_family()
        self._f_button_geom = {n: i for i, n in enumerate(self._f_geom_names) if n.startswith("button")}

    def _goal_object(self) -> Any:
        return self.buttons  # pylint: disable=no-member

    def _goal_geom(self) -> int:
        return self._f_button_geom.get(f"button{self.buttons.goal_button}", -1)  # pylint: disable=no-member

    def fast_goal_achieved(self) -> bool:
        pairs = self._contacts()
        if not pairs:
            return False
        goal = self._goal_geom()
        return any(a == goal or b == goal for a, b in pairs)

    def _post_obs(self, out: np.ndarray) -> None:
        if self.buttons.timer != 0:  # pylint: disable=no-member
            for off, obstacle, _ in self._f_lidar:
                if obstacle.name == "buttons":
                    out[off: off + self.lidar_conf.num_bins] = 0.0


class FastStCircleLevel(FastCircleMixin, StCircleLevel):
    """:class:`~metacpo.tasks.levels.StCircleLevel`, fast."""

    _RESIZABLE = frozenset({"circle"})  # the radius only resizes a non-colliding marker


class FastStRefCircleLevel(FastCircleMixin, StRefCircleLevel):
    """:class:`~metacpo.tasks.levels.StRefCircleLevel`, fast."""

    _RESIZABLE = frozenset({"circle"})


class FastStButtonLevel(FastButtonMixin, StButtonLevel):
    """:class:`~metacpo.tasks.levels.StButtonLevel`, fast."""


_FAST_CLASSES: dict[type, type] = {}


def fast_task_class(task_class: type) -> type:
    """A fast drop-in for a Safety-Gymnasium navigation task class (cached per class).

    Circle, Goal and Button tasks get their family's reward and goal test on precomputed ids;
    any other task (Push, ...) keeps its own reward and goal test and gets the fast build,
    observation, physics step and obstacle costs of :class:`FastTaskMixin`.
    """
    from safety_gymnasium.tasks.safe_navigation.button.button_level0 import ButtonLevel0
    from safety_gymnasium.tasks.safe_navigation.circle.circle_level0 import CircleLevel0
    from safety_gymnasium.tasks.safe_navigation.goal.goal_level0 import GoalLevel0

    if issubclass(task_class, FastTaskMixin):
        return task_class
    cls = _FAST_CLASSES.get(task_class)
    if cls is None:
        mixin = FastTaskMixin
        for base, candidate in ((CircleLevel0, FastCircleMixin), (ButtonLevel0, FastButtonMixin),
                                (GoalLevel0, FastGoalMixin)):
            if issubclass(task_class, base):
                mixin = candidate
        cls = type(f"Fast{task_class.__name__}", (mixin, task_class),
                   {"__module__": __name__, "__doc__": f"{task_class.__name__}, fast (see {mixin.__name__})."})
        _FAST_CLASSES[task_class] = cls
    return cls

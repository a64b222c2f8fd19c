"""Offscreen videos of policies: MuJoCo frames, a small overlay, MP4/GIF files.

- **OpenGL context.** MuJoCo needs one to render. :func:`gl_backend` picks it: ``MUJOCO_GL`` when
  the user set it, else ``glfw`` when a display exists, else ``egl`` (headless GPU/Mesa, no extra
  package on most Linux machines), then ``osmesa`` (software; Debian/Ubuntu package
  ``libosmesa6``). The context classes are MuJoCo's own (``mujoco.egl``, ``mujoco.osmesa``,
  ``mujoco.glfw``); when none works, :class:`RenderError` says what was tried and what to install.
  When ``MUJOCO_GL`` was unset and no display exists, it is set to the backend found, so other
  renderers in the process (gymnasium's) agree.
- **Frames.** :class:`SceneRenderer` renders any MuJoCo ``(model, data)`` -- our fast envs (which
  compile without the skybox texture: the sky is black) or the plain Safety-Gymnasium env -- from
  a named model camera (``fixedfar``, ``fixednear``, ``track``) or ``overview``, a free camera
  looking down at 60 degrees from far enough to see an arena of a given half-extent. ``auto``
  picks ``fixedfar`` for arenas up to 2 m (levels 0 and 1) and ``overview`` beyond (level 2).
- **Overlay.** :func:`draw_overlay` writes step, cumulative return and cost in a corner; on a
  step that costs, the cost figure turns red and the frame gets a red border.
- **Files.** :func:`write_video` encodes with imageio: MP4 through imageio-ffmpeg (H.264), GIF
  through Pillow (no ffmpeg); written to a temporary file and renamed, so a failure leaves no
  partial video.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metacpo.fileio import atomic_path

BACKENDS: tuple[str, ...] = ("glfw", "egl", "osmesa")
"""OpenGL backends MuJoCo offers on Linux."""
CAMERAS: tuple[str, ...] = ("auto", "overview", "fixedfar", "fixednear", "track")
"""Camera choices: a model camera of Safety-Gymnasium's world, ``overview`` or ``auto``."""
AUTO_FIXEDFAR_MAX_EXTENT = 2.0
"""``auto`` uses ``fixedfar`` up to this arena half-extent (m), ``overview`` beyond."""
VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".gif")
RED = (220, 30, 30)


class RenderError(RuntimeError):
    """No OpenGL context could be created (message says what was tried and what to install)."""


# --------------------------------------------------------------------------------------------
# OpenGL context
# --------------------------------------------------------------------------------------------

_OSMESA_HINT = ("install OSMesa (Debian/Ubuntu: apt-get install libosmesa6; Fedora: mesa-libOSMesa) "
                "and set MUJOCO_GL=osmesa, or provide EGL (Debian/Ubuntu: libegl1)")


def _context_class(backend: str) -> Any:
    if backend == "egl":
        from mujoco.egl import GLContext
    elif backend == "osmesa":
        from mujoco.osmesa import GLContext
    elif backend == "glfw":
        from mujoco.glfw import GLContext
    else:
        raise ValueError(f"unknown MUJOCO_GL={backend!r}; allowed: {', '.join(BACKENDS)}")
    return GLContext


def _candidates() -> list[str]:
    user = os.environ.get("MUJOCO_GL", "").strip().lower()
    if user:
        if user not in BACKENDS:
            raise ValueError(f"unknown MUJOCO_GL={user!r}; allowed: {', '.join(BACKENDS)}")
        return [user]
    has_display = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return (["glfw"] if has_display else []) + ["egl", "osmesa"]


def _check_context() -> None:
    """Raise unless a usable GL context is current (glfw without a display only warns)."""
    import mujoco

    con = mujoco.MjrContext(mujoco.MjModel.from_xml_string("<mujoco/>"), mujoco.mjtFontScale.mjFONTSCALE_100)
    con.free()


def open_gl_context(width: int, height: int) -> tuple[Any, str]:
    """(a current offscreen GL context of at least ``width`` x ``height``, its backend name)."""
    errors = []
    user_set = bool(os.environ.get("MUJOCO_GL"))
    for backend in _candidates():
        try:
            ctx = _context_class(backend)(width, height)
            ctx.make_current()
            _check_context()
        except Exception as exc:  # noqa: BLE001 - each backend fails in its own way (ImportError, RuntimeError, ...)
            errors.append(f"{backend}: {' '.join(str(exc).split())[:160] or type(exc).__name__}")
            continue
        if not user_set:
            os.environ["MUJOCO_GL"] = backend
        return ctx, backend
    tried = "; ".join(errors)
    if user_set:
        raise RenderError(f"MUJOCO_GL={os.environ['MUJOCO_GL']} cannot render offscreen ({tried}); "
                          f"unset it to try the others, or {_OSMESA_HINT}")
    raise RenderError(f"no OpenGL backend for offscreen rendering works here (tried {tried}); {_OSMESA_HINT}")


def ensure_gl_backend() -> str:
    """Find a working backend (as :func:`open_gl_context`; sets ``MUJOCO_GL`` if it was unset)
    and return its name, e.g. before another library (gymnasium's renderer) reads ``MUJOCO_GL``."""
    ctx, backend = open_gl_context(16, 16)
    ctx.free()
    return backend


# --------------------------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------------------------


def arena_half_extent(task: Any) -> float:
    """Half-extent (m) of the area a task uses: a circle's radius, a button arena's half-size.

    Other tasks: 2.0 (Safety-Gymnasium's default layout extent is about 2 m).
    """
    for name in ("radius", "half_size"):
        v = getattr(task, name, None)
        if isinstance(v, (int, float)) and math.isfinite(v) and v > 0:
            return float(v)
    return 2.0


def resolve_camera(camera: str, extent: float) -> str:
    """The camera ``auto`` stands for at this arena half-extent (others unchanged)."""
    if camera not in CAMERAS:
        raise ValueError(f"unknown camera {camera!r}; allowed: {', '.join(CAMERAS)}")
    if camera == "auto":
        return "fixedfar" if extent <= AUTO_FIXEDFAR_MAX_EXTENT else "overview"
    return camera


class SceneRenderer:
    """Renders ``(model, data)`` pairs to RGB (and depth) arrays from one camera.

    ``camera``: a model camera name or ``overview`` (free camera: look-at the origin, elevation
    -60 degrees, distance so that a disc of radius ``1.3 * extent`` fits the vertical field of
    view). The MuJoCo rendering context is rebuilt when the model object changes (an env reset
    may compile a new model).
    """

    def __init__(self, *, width: int, height: int, camera: str = "fixedfar", extent: float = 2.0) -> None:
        import mujoco

        for name, v in (("width", width), ("height", height)):
            if not isinstance(v, int) or not 16 <= v <= 2048:
                raise ValueError(f"frame {name} must be an integer in 16..2048, got {v!r}")
        if camera == "auto" or camera not in CAMERAS:
            raise ValueError(f"unknown camera {camera!r}; allowed: {', '.join(c for c in CAMERAS if c != 'auto')}")
        self.width, self.height, self.camera, self.extent = width, height, camera, float(extent)
        self._gl, self.backend = open_gl_context(width, height)
        self._mj = mujoco
        self._model: Any = None
        self._con: Any = None
        self._scene: Any = None
        self._opt = mujoco.MjvOption()
        self._opt.geomgroup[:] = 1  # every geom group, as Safety-Gymnasium's renderer does
        self._rect = mujoco.MjrRect(0, 0, width, height)
        self._cam = mujoco.MjvCamera()

    def _bind(self, model: Any) -> None:
        mj = self._mj
        if model is self._model:
            return
        self._gl.make_current()
        if self._con is not None:
            self._con.free()
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
        self._con = mj.MjrContext(model, mj.mjtFontScale.mjFONTSCALE_150)
        mj.mjr_setBuffer(mj.mjtFramebuffer.mjFB_OFFSCREEN, self._con)
        self._scene = mj.MjvScene(model, maxgeom=10_000)
        cam = self._cam
        if self.camera == "overview":
            cam.type = mj.mjtCamera.mjCAMERA_FREE
            cam.lookat[:] = (0.0, 0.0, 0.0)
            cam.elevation, cam.azimuth = -60.0, 90.0
            half_fov = math.radians(model.vis.global_.fovy) / 2.0
            cam.distance = 1.3 * self.extent / math.tan(half_fov) + 0.5
        else:
            cid = mj.mj_name2id(model, mj.mjtObj.mjOBJ_CAMERA, self.camera)
            if cid < 0:
                names = [model.camera(i).name for i in range(model.ncam)]
                raise ValueError(f"the model has no camera {self.camera!r}; it has {names} (or use 'overview')")
            cam.type = mj.mjtCamera.mjCAMERA_FIXED
            cam.fixedcamid = cid
        self._model = model

    def render(self, model: Any, data: Any, *, depth: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """RGB frame (height x width x 3, uint8, top row first); with ``depth`` also the depth
        buffer (values in [0, 1]; 1 where nothing was drawn, i.e. the sky)."""
        mj = self._mj
        self._bind(model)
        self._gl.make_current()
        mj.mjv_updateScene(model, data, self._opt, None, self._cam, mj.mjtCatBit.mjCAT_ALL, self._scene)
        mj.mjr_render(self._rect, self._scene, self._con)
        rgb = np.empty((self.height, self.width, 3), dtype=np.uint8)
        dep = np.empty((self.height, self.width), dtype=np.float32) if depth else None
        mj.mjr_readPixels(rgb, dep, self._rect, self._con)
        rgb = np.ascontiguousarray(rgb[::-1])
        return (rgb, np.ascontiguousarray(dep[::-1])) if dep is not None else rgb

    def close(self) -> None:
        if self._con is not None:
            self._con.free()
            self._con = None
        if self._gl is not None:
            self._gl.free()
            self._gl = None

    def __enter__(self) -> "SceneRenderer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def env_model_data(env: Any) -> tuple[Any, Any]:
    """The live ``(MjModel, MjData)`` of a Safety-Gymnasium env (ours or plain)."""
    task = env.unwrapped.task
    return task.model, task.data


# --------------------------------------------------------------------------------------------
# Overlay
# --------------------------------------------------------------------------------------------


def draw_overlay(frame: np.ndarray, *, step: int, ep_return: float, ep_cost: float, cost_now: bool,
                 title: str = "") -> np.ndarray:
    """A copy of ``frame`` with ``title``, step, cumulative return and cost in the top-left
    corner; when ``cost_now`` (this step cost something) the cost is red and a red border is
    drawn."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(frame)
    d = ImageDraw.Draw(img)
    h = img.height
    size = max(8, h // 22)
    font = _font(size)
    lines = ([(title, (255, 255, 255))] if title else []) + [
        (f"step {step}", (255, 255, 255)),
        (f"return {ep_return:.1f}", (255, 255, 255)),
        (f"cost {ep_cost:.0f}", RED if cost_now else (255, 255, 255)),
    ]
    pad = max(2, size // 4)
    widths = [d.textlength(t, font=font) for t, _ in lines]
    box_w, box_h = int(max(widths)) + 2 * pad, len(lines) * (size + pad) + pad
    d.rectangle((0, 0, box_w, box_h), fill=(0, 0, 0))
    y = pad
    for text, colour in lines:
        d.text((pad, y), text, fill=colour, font=font)
        y += size + pad
    if cost_now:
        b = max(2, h // 64)
        d.rectangle((0, 0, img.width - 1, h - 1), outline=RED, width=b)
    return np.asarray(img)


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 ships a scalable default
    except TypeError:  # pragma: no cover - older Pillow
        return ImageFont.load_default()


# --------------------------------------------------------------------------------------------
# Episodes
# --------------------------------------------------------------------------------------------


@dataclass
class EpisodeVideo:
    """Frames of one episode with its figures."""

    frames: list[np.ndarray]
    ep_return: float
    ep_cost: float
    length: int
    cost_steps: list[int] = field(default_factory=list)
    """Steps (1-based) on which the env reported a cost > 0."""


def record_episode(
    env: Any,
    policy: Any,
    obs_norm: Any,
    renderer: SceneRenderer,
    *,
    seed: int,
    deterministic: bool = True,
    every: int = 1,
    title: str = "",
    noise_rng: np.random.Generator | None = None,
) -> EpisodeVideo:
    """Run one episode of ``policy`` (a GaussianMLPPolicy; mean action when ``deterministic``)
    from ``env.reset(seed=seed)``, rendering the start and every ``every``-th step (and the last).

    Acts like the samplers' rollout: normalised observation in, action clipped to the box.
    """
    from metacpo.samplers.base import NumpyActor

    if every < 1:
        raise ValueError(f"--every must be >= 1, got {every}")
    actor = NumpyActor(policy)
    rng = noise_rng if noise_rng is not None else np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high
    obs, _ = env.reset(seed=int(seed))
    frames = [draw_overlay(renderer.render(*env_model_data(env)), step=0, ep_return=0.0, ep_cost=0.0,
                           cost_now=False, title=title)]
    ret = cst = 0.0
    steps = 0
    cost_steps: list[int] = []
    while True:
        noise = None if deterministic else rng.standard_normal(actor.act_dim)
        action, _ = actor.act(obs_norm.normalize(obs), noise)
        obs, r, c, term, trunc, _ = env.step(np.clip(action, low, high))
        steps += 1
        ret += float(r)
        cst += float(c)
        if c > 0:
            cost_steps.append(steps)
        done = bool(term or trunc)
        if steps % every == 0 or done:
            frames.append(draw_overlay(renderer.render(*env_model_data(env)), step=steps, ep_return=ret,
                                       ep_cost=cst, cost_now=c > 0, title=title))
        if done:
            break
    return EpisodeVideo(frames=frames, ep_return=ret, ep_cost=cst, length=steps, cost_steps=cost_steps)


def side_by_side(left: Sequence[np.ndarray], right: Sequence[np.ndarray], *, gap: int = 4) -> list[np.ndarray]:
    """Frames of two clips next to each other; the shorter clip holds its last frame."""
    if not left or not right:
        raise ValueError("side_by_side needs two non-empty clips")
    n = max(len(left), len(right))
    h = max(left[0].shape[0], right[0].shape[0])
    out = []
    for i in range(n):
        a, b = left[min(i, len(left) - 1)], right[min(i, len(right) - 1)]
        frame = np.full((h, a.shape[1] + gap + b.shape[1], 3), 255, dtype=np.uint8)
        frame[: a.shape[0], : a.shape[1]] = a
        frame[: b.shape[0], a.shape[1] + gap:] = b
        out.append(frame)
    return out


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def check_video_path(path: str | Path) -> Path:
    """``path`` if its suffix is a supported video format, else ValueError."""
    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"--out {str(path)!r}: unsupported video format {path.suffix or '(none)'!r}; "
                         f"allowed: {', '.join(VIDEO_SUFFIXES)}")
    return path


def write_video(frames: Sequence[np.ndarray], path: str | Path, *, fps: float) -> Path:
    """Encode ``frames`` (uint8 RGB, equal shapes) to ``path`` (.mp4 or .gif), atomically."""
    import imageio.v2 as imageio

    path = check_video_path(path)
    if not frames:
        raise ValueError("no frames to write")
    if not (math.isfinite(fps) and 0 < fps <= 120):
        raise ValueError(f"--fps must be in (0, 120], got {fps}")
    suffix = path.suffix.lower()
    with atomic_path(path, suffix=suffix) as tmp:
        if suffix == ".mp4":
            # H.264 needs even sizes; macro_block_size=2 pads at most one pixel instead of up to 15.
            imageio.mimwrite(tmp, list(frames), format="FFMPEG", fps=fps, codec="libx264", quality=7,
                             macro_block_size=2, pixelformat="yuv420p")
        else:
            imageio.mimwrite(tmp, list(frames), format="GIF", duration=1000.0 / fps, loop=0)
    return path


# --------------------------------------------------------------------------------------------
# Videos of runs (what ``metacpo render`` does)
# --------------------------------------------------------------------------------------------

EPISODE_STREAM = 1_000_003
"""Episode seeds come from ``default_rng([seed, EPISODE_STREAM])``, as in ``metacpo evaluate``."""


def parse_task(env_id: str, text: str) -> Any:
    """The task of ``env_id``'s family given as ``name=value,name=value`` (every field)."""
    from dataclasses import MISSING
    from dataclasses import fields as dc_fields

    from metacpo.tasks import get_family, parse_env_id

    try:
        _, family, _ = parse_env_id(env_id)
    except ValueError as exc:
        raise ValueError(f"--task needs a metacpo task-family env id: {exc}") from None
    task_type = get_family(family).task_type
    kinds = {f.name: f.type for f in dc_fields(task_type)}
    given: dict[str, Any] = {}
    for item in (p.strip() for p in text.split(",") if p.strip()):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in kinds:
            raise ValueError(f"--task {text!r}: bad item {item!r}; expected name=value with name in {sorted(kinds)}")
        want_int = kinds[name] in (int, "int")
        try:
            given[name] = int(value) if want_int else float(value)
        except ValueError:
            raise ValueError(f"--task {text!r}: {name}={value!r} is not {'an integer' if want_int else 'a number'}") from None
    required = [f.name for f in dc_fields(task_type) if f.default is MISSING and f.default_factory is MISSING]
    missing = [n for n in required if n not in given]
    if missing:
        raise ValueError(f"--task {text!r}: missing {missing}; {task_type.__name__} needs {sorted(kinds)}")
    return task_type(**given)


def snapshot_of_run(init: Any, env: Any, *, deterministic: bool) -> Any:
    """The :class:`PolicySnapshot` of a loaded run (:class:`metacpo.adaptation.Initialisation`)."""
    from metacpo.algorithms.agent import saved_policy
    from metacpo.checkpoint import CheckpointError
    from metacpo.samplers.base import PolicySnapshot, env_dims

    obs_dim, act_dim = env_dims(env)
    try:
        policy, obs_norm = saved_policy(init.config, init.state, obs_dim=obs_dim, act_dim=act_dim)
    except ValueError as exc:
        raise CheckpointError(f"{init.label}: the policy does not fit this env: {exc}") from None
    return PolicySnapshot.from_policy(policy, obs_norm, deterministic=deterministic)


def adapted_snapshots(init: Any, *, env_id: str, task: Any, updates: int, steps_per_iter: int,
                      cost_limit: float, deterministic: bool) -> tuple[Any, Any]:
    """(policy before adaptation, policy after ``updates`` CPO updates) on ``task``.

    The adaptation is meta-testing's own (:func:`metacpo.adaptation.adapt_one`: the run's inner
    step for meta runs, test seed ``TEST_SEED_BASE``, task index 0).
    """
    from dataclasses import replace

    from metacpo.adaptation import TEST_SEED_BASE, AdaptSettings, adapt_one
    from metacpo.samplers import make_sampler

    if updates < 1:
        raise ValueError(f"--adapt must be >= 1, got {updates}")
    taken: dict[int, Any] = {}

    def take(k: int, algo: Any) -> None:
        if k in (0, updates):
            taken[k] = replace(algo.policy_snapshot(), deterministic=deterministic)

    settings = AdaptSettings(tasks=1, seeds=1, adapt_iters=max(updates - 1, 1), steps_per_iter=steps_per_iter)
    sampler = make_sampler("local", env_id, seed=TEST_SEED_BASE)
    try:
        adapt_one(init, sampler=sampler, task=task, task_index=0, test_seed=TEST_SEED_BASE, settings=settings,
                  steps_per_iter=steps_per_iter, cost_limit=cost_limit, on_policy=take)
    finally:
        sampler.close()
    return taken[0], taken[updates]


@dataclass(frozen=True)
class RenderedEpisode:
    label: str
    seed: int
    ep_return: float
    ep_cost: float
    length: int
    cost_steps: int


@dataclass(frozen=True)
class VideoResult:
    """What :func:`render_run` wrote."""

    path: Path
    frames: int
    width: int
    height: int
    fps: float
    env_id: str
    task: Any
    camera: str
    backend: str
    episodes: list[RenderedEpisode]


def render_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    env_id: str | None = None,
    task: Any = None,
    task_seed: int | None = None,
    episodes: int = 1,
    stochastic: bool = False,
    size: int = 256,
    fps: float = 30.0,
    every: int = 1,
    camera: str = "auto",
    adapt: int = 0,
    adapt_steps: int = 0,
    seed: int = 0,
) -> VideoResult:
    """Render ``episodes`` episodes of a run's policy to ``out`` (.mp4/.gif).

    Task: ``task`` if given, else the task drawn with ``task_seed`` from ``env_id``'s
    distribution, else (no ``adapt``) the run's own default task or (with ``adapt``) held-out
    task 0 of meta-testing. ``env_id`` defaults to the run's env id, with ``adapt`` to its level-2
    sibling. With ``adapt = K`` each episode is shown twice side by side: the run's policy (left)
    and the policy after K adaptation updates on that task (right), from the same start state.
    """
    from metacpo.adaptation import load_initialisation
    from metacpo.samplers.base import make_env_for

    out = check_video_path(out)
    _check_render_settings(episodes=episodes, size=size, every=every, adapt=adapt, fps=fps, task=task,
                           task_seed=task_seed)
    init = load_initialisation(run_dir)
    cfg = init.config
    env_id, task = _render_target(cfg.env.env_id, env_id=env_id, task=task, task_seed=task_seed, adapt=adapt)
    env = make_env_for(env_id, task, seed=None if task is not None else cfg.run.seed)
    try:
        task = getattr(env.unwrapped, "task_params", task)
        extent = arena_half_extent(task)
        cam = resolve_camera(camera, extent)
        if adapt:
            before, after = adapted_snapshots(init, env_id=env_id, task=task, updates=adapt,
                                              steps_per_iter=adapt_steps or cfg.sampler.steps_per_iter,
                                              cost_limit=cfg.constraint.cost_limit, deterministic=not stochastic)
            policies = [("before", before), (f"after {adapt} update{'s' if adapt > 1 else ''}", after)]
        else:
            policies = [(Path(run_dir).resolve().name, snapshot_of_run(init, env, deterministic=not stochastic))]
        ep_seeds = np.random.default_rng([int(seed), EPISODE_STREAM]).integers(2**31 - 1, size=episodes)
        with SceneRenderer(width=size, height=size, camera=cam, extent=extent) as renderer:
            frames, report = _record_episodes(env, policies, renderer, ep_seeds=ep_seeds, every=every)
            backend = renderer.backend
    finally:
        env.close()
    write_video(frames, out, fps=fps)
    h, w = frames[0].shape[:2]
    return VideoResult(path=out, frames=len(frames), width=w, height=h, fps=fps, env_id=env_id, task=task,
                       camera=cam, backend=backend, episodes=report)


def _check_render_settings(*, episodes: int, size: int, every: int, adapt: int, fps: float, task: Any,
                           task_seed: int | None) -> None:
    """ValueError naming the flag of the first setting :func:`render_run` cannot use."""
    for name, v, lo in (("--episodes", episodes, 1), ("--size", size, 16), ("--every", every, 1), ("--adapt", adapt, 0)):
        if not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    if size > 2048:
        raise ValueError(f"--size must be <= 2048, got {size}")
    if not (math.isfinite(fps) and 0 < fps <= 120):
        raise ValueError(f"--fps must be in (0, 120], got {fps}")
    if task is not None and task_seed is not None:
        raise ValueError("give --task or --task-seed, not both")


def _render_target(run_env_id: str, *, env_id: str | None, task: Any, task_seed: int | None,
                   adapt: int) -> tuple[str, Any]:
    """``(env id, task)`` :func:`render_run` shows (its docstring says which); the task None for
    the env's own default task."""
    from metacpo.adaptation import held_out_tasks
    from metacpo.tasks import get_distribution, parse_env_id

    if env_id is None and adapt:
        env_id, held_out = held_out_tasks(run_env_id, level=2, count=1)
        if task is None and task_seed is None:
            task = held_out[0]
    env_id = env_id or run_env_id
    if isinstance(task, str):
        task = parse_task(env_id, task)
    if task is None and task_seed is not None:
        try:
            _, family, level = parse_env_id(env_id)
        except ValueError as exc:
            raise ValueError(f"--task-seed needs a metacpo task-family env id: {exc}") from None
        task = get_distribution(family, level).sample(np.random.default_rng(int(task_seed)))
    if task is None and adapt:
        _, held_out = held_out_tasks(env_id, level=parse_env_id(env_id)[2], count=1)
        task = held_out[0]
    return env_id, task


def _record_episodes(env: Any, policies: Sequence[tuple[str, Any]], renderer: SceneRenderer, *,
                     ep_seeds: Sequence[int], every: int) -> tuple[list[np.ndarray], list[RenderedEpisode]]:
    """Every episode (one per seed) by every ``(label, PolicySnapshot)``, side by side when there
    are two: the frames, and one :class:`RenderedEpisode` per policy and episode."""
    frames: list[np.ndarray] = []
    report: list[RenderedEpisode] = []
    for e, ep_seed in enumerate(ep_seeds):
        clips = []
        for label, snap in policies:
            ep = record_episode(env, snap.build_policy(), snap.obs_norm, renderer, seed=int(ep_seed),
                                deterministic=snap.deterministic, every=every, title=label,
                                noise_rng=np.random.default_rng([int(ep_seed), e]))
            clips.append(ep.frames)
            report.append(RenderedEpisode(label=label, seed=int(ep_seed), ep_return=ep.ep_return,
                                          ep_cost=ep.ep_cost, length=ep.length, cost_steps=len(ep.cost_steps)))
        frames += clips[0] if len(clips) == 1 else side_by_side(clips[0], clips[1])
    return frames, report

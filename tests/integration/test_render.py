"""Rendering: frames of our fast envs against the plain Safety-Gymnasium env, overlays, videos.

Real MuJoCo offscreen rendering (EGL here; see metacpo.rendering for the backend choice).
"""

from __future__ import annotations

import imageio.v2 as imageio
import numpy as np
import pytest

from metacpo.rendering import (
    SceneRenderer,
    draw_overlay,
    ensure_gl_backend,
    env_model_data,
    parse_task,
    resolve_camera,
    side_by_side,
    write_video,
)
from metacpo.tasks import ButtonTask, CircleTask, StochasticBuilder
from tests.reference_builder import ReferenceBuilder

pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning")

SIZE = 160


def _pair(agent: str, family: str, task, seed: int, steps: int):
    """Our fast env and the plain Safety-Gymnasium env on the same task, layout and state."""
    fast = StochasticBuilder(agent, family, 1, task=task)
    assert fast._fast, "the env under test must be the fast one"
    plain = ReferenceBuilder(agent, family, task, render_mode="rgb_array")
    fast.reset(seed=seed)
    plain.reset(seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        a = rng.uniform(-1, 1, fast.action_space.shape)
        fast.step(a)
        plain.step(a)
    fm, fd = env_model_data(fast)
    pm, pd = env_model_data(plain)
    # The same state: copy the plain env's configuration into the fast one (they agree to ~1e-12 anyway).
    np.testing.assert_allclose(fd.qpos, pd.qpos, atol=1e-9)
    fd.qpos[:], fd.qvel[:] = pd.qpos, pd.qvel
    import mujoco

    mujoco.mj_forward(fm, fd)
    return fast, plain


@pytest.mark.parametrize("agent, family, task, camera", [
    ("Point", "circle", CircleTask(radius=1.3, wall_distance=0.9), "fixedfar"),
    ("Point", "circle", CircleTask(radius=2.3, wall_distance=1.4), "fixednear"),
    ("Car", "button", ButtonTask(half_size=1.9, num_buttons=4, num_hazards=7), "fixedfar"),
])
def test_fast_env_frame_matches_plain_safety_gymnasium_outside_the_sky(agent, family, task, camera):
    ensure_gl_backend()  # gymnasium's renderer (used by the plain env) reads MUJOCO_GL
    fast, plain = _pair(agent, family, task, seed=3, steps=40)
    try:
        pt = plain.task
        pt.render_conf.lidar_markers = False  # decorations we do not draw (lidar rings)
        ref = pt.render(width=SIZE, height=SIZE, mode="rgb_array", camera_name=camera, cost={"cost_sum": 0.0})
        with SceneRenderer(width=SIZE, height=SIZE, camera=camera) as r:
            ours, depth = r.render(*env_model_data(fast), depth=True)
    finally:
        fast.close()
        plain.close()
    assert ours.shape == ref.shape == (SIZE, SIZE, 3)
    geometry = depth < 1.0  # the sky: nothing drawn (our fast env has no skybox texture; the plain one does)
    assert geometry.mean() > 0.6, f"only {geometry.mean():.0%} of the frame shows the scene"
    assert ours[geometry].std() > 10, "blank frame"
    diff = np.abs(ours.astype(int) - ref.astype(int))[geometry]
    assert diff.mean() < 0.5, f"mean abs difference {diff.mean():.3f} (0-255 scale) outside the sky"
    assert (diff.max(axis=-1) > 8).mean() < 0.002, "more than 0.2% of scene pixels differ visibly"


def test_frame_follows_the_agent():
    env = StochasticBuilder("Point", "circle", 1, task=CircleTask(radius=1.3, wall_distance=0.9))
    try:
        env.reset(seed=0)
        m, d = env_model_data(env)
        with SceneRenderer(width=SIZE, height=SIZE, camera="overview", extent=1.3) as r:
            a = r.render(m, d)
            import mujoco

            d.qpos[:2] += [0.8, 0.0]  # move the agent 0.8 m along x
            mujoco.mj_forward(m, d)
            b = r.render(m, d)
    finally:
        env.close()
    changed = np.abs(a.astype(int) - b.astype(int)).max(axis=-1) > 30
    assert 0 < changed.mean() < 0.05  # the robot moved: a small region changed, not the whole frame


def test_overlay_marks_cost_steps_in_red():
    frame = np.full((SIZE, SIZE, 3), 128, dtype=np.uint8)
    calm = draw_overlay(frame, step=3, ep_return=1.5, ep_cost=0, cost_now=False)
    hit = draw_overlay(frame, step=4, ep_return=1.6, ep_cost=1, cost_now=True)
    red = lambda f: (f[..., 0] > 180) & (f[..., 1] < 80) & (f[..., 2] < 80)  # noqa: E731
    assert red(calm).sum() == 0
    assert red(hit)[SIZE // 2:, :].sum() > SIZE  # the border, far from the text box
    assert red(hit[:, -1]).all() and red(hit[-1, :]).all()
    assert (calm[:2, :20] == 0).all() and (calm[SIZE // 2:] == 128).all()  # text box top-left, rest untouched
    np.testing.assert_array_equal(frame, 128)  # input not modified


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_video_round_trip(tmp_path, suffix):
    rng = np.random.default_rng(0)
    left = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(5)]
    right = [np.full((48, 64, 3), i * 40, dtype=np.uint8) for i in range(7)]
    frames = side_by_side(left, right, gap=4)
    assert len(frames) == 7 and frames[0].shape == (48, 132, 3)
    np.testing.assert_array_equal(frames[6][:, :64], left[4])  # shorter clip holds its last frame
    path = write_video(frames, tmp_path / f"v{suffix}", fps=10)
    back = imageio.mimread(path, memtest=False)
    assert len(back) == 7
    assert back[0].shape[:2] == (48, 132)
    # right half: flat grey levels survive the encoding
    assert abs(float(np.asarray(back[3])[:, 70:, :3].mean()) - 120) < 4
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary leftovers


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"unsupported video format '.avi'; allowed: .mp4, .gif"):
        write_video([np.zeros((8, 8, 3), np.uint8)], tmp_path / "x.avi", fps=10)
    with pytest.raises(ValueError, match="--fps must be in"):
        write_video([np.zeros((8, 8, 3), np.uint8)], tmp_path / "x.gif", fps=0)
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="unknown camera 'top'"):
        resolve_camera("top", 1.0)
    assert resolve_camera("auto", 1.5) == "fixedfar" and resolve_camera("auto", 2.3) == "overview"
    assert parse_task("SafetyPointStcircle2-v0", "radius=2.2,wall_distance=1.3") == CircleTask(2.2, 1.3)
    with pytest.raises(ValueError, match="missing \\['wall_distance'\\]"):
        parse_task("SafetyPointStcircle2-v0", "radius=2.2")
    with pytest.raises(ValueError, match="bad item 'size=2'"):
        parse_task("SafetyPointStcircle2-v0", "size=2")
    with pytest.raises(ValueError, match="radius=-1.0 is not allowed"):
        parse_task("SafetyPointStcircle2-v0", "radius=-1,wall_distance=1")


def test_headless_backend_choice_and_failure_message(monkeypatch):
    from metacpo.rendering import RenderError, _candidates, open_gl_context

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    assert _candidates() == ["egl", "osmesa"]
    monkeypatch.setenv("DISPLAY", ":0")
    assert _candidates() == ["glfw", "egl", "osmesa"]
    monkeypatch.setenv("MUJOCO_GL", "vulkan")
    with pytest.raises(ValueError, match="unknown MUJOCO_GL='vulkan'; allowed: glfw, egl, osmesa"):
        _candidates()
    # a backend the user forces that cannot work here (glfw without a display) fails with one clear message
    monkeypatch.delenv("DISPLAY")
    monkeypatch.setenv("MUJOCO_GL", "glfw")
    with pytest.raises(RenderError) as exc:
        open_gl_context(32, 32)
    msg = str(exc.value)
    assert msg.startswith("MUJOCO_GL=glfw cannot render offscreen (glfw: ")
    assert "libosmesa6" in msg and "\n" not in msg

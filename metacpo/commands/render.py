"""``metacpo render``: a video of a trained policy (optionally before/after adaptation)."""

from __future__ import annotations

import argparse

NAME = "render"
HELP = ("Render episodes of a run's policy offscreen to an MP4 or GIF, with step, return and cost "
        "overlaid (red on cost steps); --adapt K shows the policy before and after K adaptation updates "
        "side by side.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from metacpo.rendering import CAMERAS

    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `metacpo train`")
    parser.add_argument("--out", metavar="FILE.mp4|FILE.gif", required=True,
                        help="output video: .mp4 (H.264 via imageio-ffmpeg) or .gif (Pillow)")
    parser.add_argument("--env-id", default=None,
                        help="env to render (default: the run's; with --adapt its level-2 meta-test sibling)")
    task = parser.add_mutually_exclusive_group()
    task.add_argument("--task-seed", type=int, default=None, help="draw the task from --env-id's distribution with this seed")
    task.add_argument("--task", default=None, metavar="NAME=VALUE,...",
                      help="explicit task parameters, e.g. radius=2.2,wall_distance=1.3 (Circle) or "
                           "half_size=2.7,num_buttons=6,num_hazards=12,wrong_button_cost=1 (Button)")
    parser.add_argument("--episodes", type=int, default=1, help="episodes to render (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="episode start states derive from it (default %(default)s)")
    parser.add_argument("--stochastic", action="store_true", help="sample actions instead of the mean action")
    parser.add_argument("--size", type=int, default=256, help="frame width and height in pixels (default %(default)s)")
    parser.add_argument("--fps", type=float, default=30.0, help="frames per second of the video (default %(default)s)")
    parser.add_argument("--every", type=int, default=1,
                        help="render every N-th step (smaller, faster files; default %(default)s)")
    parser.add_argument("--camera", choices=CAMERAS, default="auto",
                        help="auto: fixedfar for arenas up to 2 m, overview (a farther free camera) beyond")
    parser.add_argument("--adapt", type=int, default=0, metavar="K",
                        help="show the task before (left) and after (right) K CPO adaptation updates")
    parser.add_argument("--adapt-steps", type=int, default=0,
                        help="environment steps per adaptation update (default: the run's sampler.steps_per_iter)")


def run(args: argparse.Namespace) -> int:
    import sys

    from metacpo.rendering import RenderError, render_run

    try:
        res = render_run(args.run_dir, args.out, env_id=args.env_id, task=args.task, task_seed=args.task_seed,
                         episodes=args.episodes, stochastic=args.stochastic, size=args.size, fps=args.fps,
                         every=args.every, camera=args.camera, adapt=args.adapt, adapt_steps=args.adapt_steps,
                         seed=args.seed)
    except RenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{res.env_id} task {res.task}; camera {res.camera}, OpenGL {res.backend}")
    for ep in res.episodes:
        print(f"  {ep.label}: episode seed {ep.seed}: return {ep.ep_return:.2f}, cost {ep.ep_cost:.0f} "
              f"({ep.cost_steps} cost steps), length {ep.length}")
    print(f"wrote {res.path}: {res.frames} frames of {res.width}x{res.height} at {res.fps:g} fps "
          f"({res.frames / res.fps:.1f} s, {res.path.stat().st_size / 1024:.0f} KiB)")
    return 0

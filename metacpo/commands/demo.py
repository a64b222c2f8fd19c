"""``metacpo demo``: adapt the shipped Meta-CPO initialisation on held-out tasks, against baselines.

What ``make demo`` runs. The package ships two small checkpoints trained on the level-1 Circle
distribution (``metacpo/demo_data/``; produced by ``benchmarks/demo.yaml``, re-create them with
``python tools/make_demo_data.py --train``): Meta-CPO and multi-task CPO with the same
environment-step budget. The demo meta-tests both on held-out level-2 tasks (larger circles,
closer walls) together with CPO from a fresh policy -- every curve adapting with CPO updates on
the same tasks and episode seeds -- prints the per-step return/cost table, writes
``adapt.csv``/``adapt.json``/``adapt.png`` and a video of the Meta-CPO policy on the first
held-out task before (left) and after (right) the adaptation updates.

``--train`` keeps the older path: a short Meta-CPO run from scratch (3 meta-iterations of 2
tasks x 1,000 steps), then the same meta-test of that run against CPO from scratch. Its numbers
are a smoke test of the pipeline, not a result.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

NAME = "demo"
HELP = ("Adapt the shipped Meta-CPO and multi-task CPO checkpoints on held-out level-2 Circle tasks "
        "against CPO from scratch; prints the per-step table and where adapt.png and a before/after "
        "video went (--train: meta-train a short run first instead).")

DEMO_RUNS = ("meta-cpo", "multitask-cpo")
"""Shipped initialisations (directories of metacpo/demo_data), in curve order."""


def demo_data_dir() -> Path:
    """Where the shipped demo checkpoints are (``metacpo/demo_data``)."""
    import metacpo

    return Path(metacpo.__file__).resolve().parent / "demo_data"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train", action="store_true",
                        help="meta-train a short Meta-CPO run from scratch instead of using the shipped checkpoints")
    parser.add_argument("--tasks", type=int, default=2, help="held-out level-2 tasks (default %(default)s)")
    parser.add_argument("--seeds", type=int, default=1, help="test seeds per task (default %(default)s)")
    parser.add_argument("--adapt-iters", type=int, default=3, help="adaptation updates at meta-test (default %(default)s)")
    parser.add_argument("--steps-per-iter", type=int, default=1000,
                        help="environment steps per adaptation update (and per task and round with --train; "
                             "default %(default)s)")
    parser.add_argument("--no-video", action="store_true", help="skip the before/after video")
    parser.add_argument("--video-size", type=int, default=192, help="video frame size in pixels (default %(default)s)")
    parser.add_argument("--run-dir", default=None, help="output directory (default runs/demo-<time>)")
    g = parser.add_argument_group("with --train")
    g.add_argument("--env-id", default="SafetyPointStcircle1-v0", help="task distribution (default %(default)s)")
    g.add_argument("--iters", type=int, default=3, help="meta-iterations (default %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="run seed (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    from metacpo.adaptation import AdaptSettings, held_out_tasks, meta_test

    t0 = time.perf_counter()
    out = Path(args.run_dir or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}")
    settings = AdaptSettings(level=2, tasks=args.tasks, adapt_iters=args.adapt_iters, seeds=args.seeds,
                             steps_per_iter=args.steps_per_iter, from_scratch=True)
    if args.train:
        result = _train(args, out)
        runs, adapt_out = [str(result.run_dir)], out
    else:
        data = demo_data_dir()
        runs = [str(data / name) for name in DEMO_RUNS]
        missing = [r for r in runs if not (Path(r) / "checkpoint.pt").is_file()]
        if missing:
            raise FileNotFoundError(f"shipped demo checkpoint missing: {missing[0]}/checkpoint.pt "
                                    "(re-create with python tools/make_demo_data.py --train, or use --train)")
        adapt_out = out
        print(f"[demo] shipped initialisations ({data}): " + ", ".join(DEMO_RUNS)
              + " -- meta-trained on SafetyPointStcircle1-v0 (benchmarks/demo.yaml)")
    print(f"[demo] meta-testing on {args.tasks} held-out level-2 task(s) x {args.seeds} seed(s), "
          f"{args.adapt_iters} CPO updates of {args.steps_per_iter} steps each, against CPO from scratch")
    res = meta_test(runs, settings=settings, out_dir=adapt_out, echo=None)
    print(_table(res.summary, res.cost_limit))
    video = None
    if not args.no_video:
        from metacpo.rendering import RenderError, render_run

        env_id, tasks = held_out_tasks(_env_of(runs[0]), level=2, count=1)
        path = res.out_dir / f"adapt_{Path(runs[0]).name}.mp4"
        try:
            video = render_run(runs[0], path, env_id=env_id, task=tasks[0], adapt=args.adapt_iters,
                               adapt_steps=args.steps_per_iter, size=args.video_size, every=2, fps=30)
        except RenderError as exc:  # no OpenGL here: the curves are still worth having
            print(f"[demo] no video: {exc}")
        else:
            for ep in video.episodes:
                print(f"[demo] video, {ep.label}: return {ep.ep_return:.1f}, cost {ep.ep_cost:.0f} "
                      f"(one deterministic episode on held-out task 0)")
    print(f"[demo] results ({time.perf_counter() - t0:.0f} s):")
    if args.train:
        print(f"  training log    {Path(runs[0]) / 'progress.csv'} (TensorBoard: tensorboard --logdir {runs[0]})")
        print(f"  checkpoint      {Path(runs[0]) / 'checkpoint.pt'}")
    print(f"  adaptation      {res.out_dir / 'adapt.csv'}, {res.out_dir / 'adapt.json'}")
    print(f"  adaptation plot {res.out_dir / 'adapt.png'}")
    if video is not None:
        print(f"  video           {video.path} ({video.frames} frames, {video.width}x{video.height}; "
              "left: before adaptation, right: after)")
    return 0


def _env_of(run_dir: str) -> str:
    from metacpo.training import load_run_config

    return load_run_config(run_dir).env.env_id


def _table(summary: dict, cost_limit: float) -> str:
    """Per-step mean episode return / cost of every curve (step 0: before adaptation)."""
    labels = list(summary)
    width = max(18, *(len(lb) + 2 for lb in labels))
    head = "step" + "".join(f"{lb:>{width}}" for lb in labels)
    lines = [f"mean episode return / cost per adaptation step (cost limit {cost_limit:g}):", head]
    steps = max(len(rows) for rows in summary.values())
    for k in range(steps):
        cells = []
        for lb in labels:
            rows = summary[lb]
            cells.append(f"{rows[k]['return_mean']:.1f} / {rows[k]['cost_mean']:.1f}" if k < len(rows) else "")
        lines.append(f"{k:>4}" + "".join(f"{c:>{width}}" for c in cells))
    return "\n".join(lines)


def _train(args: argparse.Namespace, run_dir: Path):
    from metacpo.config.schema import TrainConfig, apply_override
    from metacpo.training import train

    data: dict = {"algo": "meta-cpo"}
    for assignment in (
        f"env.env_id={args.env_id}",
        f"run.seed={args.seed}",
        f"run.iters={args.iters}",
        f"run.run_dir={run_dir}",
        f"sampler.steps_per_iter={args.steps_per_iter}",
        "sampler.kind=local",
        "meta.meta_batch_size=2",
        "meta.inner_steps=1",
    ):
        apply_override(data, assignment)
    data["run"]["run_dir"] = str(run_dir)
    config = TrainConfig.from_dict(data)
    print(f"[demo] meta-training Meta-CPO on {args.env_id} for {args.iters} meta-iterations -> {run_dir}")
    return train(config, progress=True)

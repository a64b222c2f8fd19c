"""A sample call's jobs cut into episodes that any worker can run: balance without other batches.

:func:`~metacpo.samplers.base.plan_jobs` fixes which share (generator) samples which steps, and
so the batches. Run as planned, 3 tasks on 2 workers leave one worker with twice the steps of
the other (a default Meta-CPO round: 6,000 and 3,000), and the call lasts as long as the slower.
But every random number a job uses is known before it runs, whenever its episodes run to the
env's time limit (no early termination: every Safety-Gymnasium navigation task): the job draws
its noise seed, then one reset seed per episode, from its share's generator
(:func:`~metacpo.samplers.base.draw_noise_seed`, :func:`~metacpo.samplers.base.draw_reset_seed`),
and episode ``e`` uses rows ``e T ...`` of its noise stream. The env's state after a reset is
not always a function of task and seed alone (a fresh env's first reset differs, for Car by
~1e-16), so each piece carries the reset before it as planned and the worker repeats that
reset when its env's last reset was another (:attr:`~metacpo.samplers.base.Piece.prev`). :func:`plan_pieces` replays those
draws on copies of the share generators and cuts every job into its episodes
(:class:`~metacpo.samplers.base.Piece`); :func:`spread_pieces` deals the pieces out to workers
in equal numbers of steps; the rollouts run each piece as that one episode of its job, and
:func:`join_pieces` puts every job's batch back together -- the batch the job would have been,
bit for bit (tests/unit/test_episodes.py; the golden progress rows). A piece that ended before
its planned steps (the env terminated an episode early) makes :func:`join_pieces` return None:
the caller then runs the call's jobs as planned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from metacpo.data.batch import Batch
from metacpo.samplers.base import Job, Piece, Task, draw_noise_seed, draw_reset_seed


def plan_pieces(jobs: Sequence[Job], states: Sequence[Mapping[str, Any]], *, tasks: Sequence[Task],
                last_resets: Sequence[tuple[Task, int] | None], episode_steps: int,
                ) -> tuple[list[Piece], list[dict[str, Any]], list[tuple[Task, int] | None]]:
    """Every job of ``jobs`` (planned over ``len(states)`` shares) as its episodes, in job order
    and episode order; the share generators' states and last resets after the call.

    ``states[v]``: share ``v``'s generator state before the call (``bit_generator.state``);
    ``last_resets[v]``: ``(task, seed)`` of the last reset of share ``v``'s env as planned (every
    share that has a job here must have one: its first call runs as planned). A job of ``n`` steps
    runs ``ceil(n / episode_steps)`` episodes, the last one ``n mod episode_steps`` steps (cut)
    when that is not 0. The shares run their jobs in plan order, as the workers do.
    """
    if episode_steps <= 0:
        raise ValueError(f"episode_steps must be positive, got {episode_steps}")
    rngs = []
    for st in states:
        g = np.random.Generator(np.random.PCG64())
        g.bit_generator.state = dict(st)
        rngs.append(g)
    last = list(last_resets)
    pieces: list[Piece] = []
    for job in jobs:
        rng, prev, task = rngs[job.worker], last[job.worker], tasks[job.task_index]
        if prev is None:
            raise ValueError(f"share {job.worker} has not reset its env yet: run its first call as planned")
        noise_seed, block = draw_noise_seed(rng), min(job.num_steps, 4096)
        for e, start in enumerate(range(0, job.num_steps, episode_steps)):
            seed = draw_reset_seed(rng)
            pieces.append(Piece(job=job, episode=e, num_steps=min(episode_steps, job.num_steps - start),
                                reset_seed=seed, noise_seed=noise_seed, noise_block=block, row=start, prev=prev))
            prev = (task, seed)
        last[job.worker] = prev
    return pieces, [r.bit_generator.state for r in rngs], last


def spread_pieces(pieces: Sequence[Piece], num_slots: int) -> list[list[Piece]]:
    """Deal ``pieces`` (in order) to ``num_slots`` slots in runs of about equal steps: a piece
    goes to the slot its middle step falls in when the call's steps are cut in ``num_slots``
    equal spans, so a slot's pieces are consecutive (few task switches)."""
    if num_slots <= 0:
        raise ValueError(f"num_slots must be positive, got {num_slots}")
    total = sum(p.num_steps for p in pieces)
    slots: list[list[Piece]] = [[] for _ in range(num_slots)]
    done = 0
    for p in pieces:
        slots[min(num_slots - 1, (2 * done + p.num_steps) * num_slots // (2 * total))].append(p)
        done += p.num_steps
    return slots


def join_pieces(outputs: Sequence[tuple[Piece, Batch]]) -> list[tuple[Job, Batch]] | None:
    """Every job's batch from its pieces' batches, as ``(job, batch)`` in job order; None when a
    piece is not what its job would have run (an episode ended early, or one that is not its
    job's last did not end at the time limit)."""
    by_job: dict[Job, list[tuple[Piece, Batch]]] = {}
    for piece, b in outputs:
        by_job.setdefault(piece.job, []).append((piece, b))
    out: list[tuple[Job, Batch]] = []
    for job, parts in by_job.items():
        parts.sort(key=lambda x: x[0].episode)
        if [p.episode for p, _ in parts] != list(range(len(parts))):
            raise ValueError(f"pieces of job {job} are missing: got episodes {[p.episode for p, _ in parts]}")
        last = len(parts) - 1
        if any(b.info["early_end"] or (i < last and b.info["cut"]) for i, (_, b) in enumerate(parts)):
            return None
        batches = [b for _, b in parts]
        merged = batches[0] if len(batches) == 1 else Batch.concat(batches)
        merged.task = batches[0].task
        merged.info = {
            "cut": batches[-1].info["cut"],
            "episode_seeds": [s for b in batches for s in b.info["episode_seeds"]],
            "sample_seconds": sum(b.info["sample_seconds"] for b in batches),
            "worker": job.worker,
        }
        out.append((job, merged))
    return out

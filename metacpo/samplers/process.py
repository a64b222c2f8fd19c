"""Multiprocess sampler: persistent worker processes, each holding its own environment.

Protocol (parent -> worker over a ``multiprocessing.Pipe``; worker code is
:func:`worker_main`, which only wraps :func:`metacpo.samplers.base.rollout`):

* ``("sample", snapshot, [(job, task), ...])`` -> ``("ok", [(job, Batch), ...])``
* ``("get_state",)`` -> ``("ok", rng_state)``; ``("set_state", rng_state)`` -> ``("ok", None)``
* ``("close",)`` -> the worker exits.
* Any exception in a worker -> ``("error", traceback_text)``; the parent raises ``RuntimeError``
  naming the worker. A worker that died (EOF on its pipe) raises ``WorkerDied`` naming it, which a
  fault-tolerant backend can catch to replace the worker and re-run its share
  (:attr:`WorkerDied.jobs`).

Workers get parameters (a :class:`PolicySnapshot`), never modules; envs and processes persist
across iterations; a task switch is ``env.unwrapped.set_task(task)``.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection
from typing import Any

from metacpo.data.batch import Batch
from metacpo.samplers.base import (
    Job,
    PolicySnapshot,
    Sampler,
    Task,
    check_rng_states,
    make_env_for,
    merge_parts,
    plan_jobs,
    rollout,
    set_task,
    worker_rng,
)


class WorkerDied(RuntimeError):
    """A worker process exited unexpectedly while holding ``jobs``."""

    def __init__(self, worker: int, jobs: Sequence[Job]) -> None:
        super().__init__(f"sampler worker {worker} died (pipe closed) while sampling {len(jobs)} job(s)")
        self.worker = worker
        self.jobs = list(jobs)


def worker_main(conn: Connection, env_id: str, seed: int, index: int) -> None:
    """Body of worker ``index``: build the env and generator once, then serve requests."""
    import torch

    from metacpo.models.policy import GaussianMLPPolicy

    torch.set_num_threads(1)
    try:
        env = make_env_for(env_id)
    except Exception:
        conn.send(("error", traceback.format_exc()))
        return
    rng = worker_rng(seed, index)
    policy: GaussianMLPPolicy | None = None
    conn.send(("ok", None))  # ready
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            break
        try:
            cmd = msg[0]
            if cmd == "close":
                break
            if cmd == "sample":
                snapshot, work = msg[1], msg[2]
                if policy is None or policy.spec != snapshot.spec:
                    policy = GaussianMLPPolicy(snapshot.spec)
                snapshot.load_into(policy)
                out = []
                for job, task in work:
                    if task is not None:
                        set_task(env, task)
                    b = rollout(env, policy, snapshot.obs_norm, job.num_steps, rng,
                                deterministic=snapshot.deterministic, task=task)
                    b.info["worker"] = index
                    out.append((job, b))
                conn.send(("ok", out))
            elif cmd == "get_state":
                conn.send(("ok", rng.bit_generator.state))
            elif cmd == "set_state":
                rng.bit_generator.state = msg[1]
                conn.send(("ok", None))
            else:
                conn.send(("error", f"unknown command {cmd!r}"))
        except Exception:
            conn.send(("error", traceback.format_exc()))
    env.close()
    conn.close()


class ProcessSampler(Sampler):
    """``num_workers`` persistent processes (default: one per CPU core).

    Work for several tasks is spread over workers with :func:`plan_jobs`; with ``num_workers=1``
    the batches equal :class:`LocalSampler`'s bit for bit (same generator, same order), and
    ``LocalSampler(num_virtual_workers=n)`` equals ``ProcessSampler(num_workers=n)``.
    """

    def __init__(self, env_id: str, *, seed: int, num_workers: int | None = None, start_method: str = "spawn") -> None:
        import os

        n = num_workers if num_workers is not None else (os.cpu_count() or 1)
        if n <= 0:
            raise ValueError(f"num_workers must be positive, got {n}")
        self.env_id = env_id
        self._n = n
        ctx = mp.get_context(start_method)
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        try:
            for i in range(n):
                parent, child = ctx.Pipe()
                p = ctx.Process(target=worker_main, args=(child, env_id, seed, i), daemon=True,
                                name=f"metacpo-sampler-{i}")
                p.start()
                child.close()
                self._conns.append(parent)
                self._procs.append(p)
            for i in range(n):
                self._recv(i, [])
        except BaseException:
            self.close()
            raise

    @property
    def num_workers(self) -> int:
        return self._n

    def _recv(self, i: int, jobs: Sequence[Job]) -> Any:
        try:
            status, payload = self._conns[i].recv()
        except EOFError:
            raise WorkerDied(i, jobs) from None
        if status != "ok":
            first = payload.strip().splitlines()[-1] if payload.strip() else payload
            if "ValueError" in first:
                raise ValueError(f"sampler worker {i}: {first.split(':', 1)[-1].strip()}")
            raise RuntimeError(f"sampler worker {i} failed:\n{payload}")
        return payload

    def sample(
        self, *, snapshot: PolicySnapshot, num_steps: int, tasks: Sequence[Task] | None = None
    ) -> list[Batch]:
        task_list: list[Task] = [None] if tasks is None else list(tasks)
        jobs = plan_jobs(num_tasks=len(task_list), num_steps=num_steps, num_workers=self._n)
        per_worker: dict[int, list[Job]] = {}
        for j in jobs:
            per_worker.setdefault(j.worker, []).append(j)
        for w, js in per_worker.items():
            self._conns[w].send(("sample", snapshot, [(j, task_list[j.task_index]) for j in js]))
        parts: dict[int, list[tuple[int, Batch]]] = {k: [] for k in range(len(task_list))}
        for w, js in per_worker.items():
            for job, b in self._recv(w, js):
                parts[job.task_index].append((job.part, b))
        return [
            merge_parts([b for _, b in sorted(parts[k], key=lambda x: x[0])], task=task_list[k])
            for k in range(len(task_list))
        ]

    def state_dict(self) -> dict[str, Any]:
        for c in self._conns:
            c.send(("get_state",))
        return {"worker_rngs": [self._recv(i, []) for i in range(self._n)]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        rngs = check_rng_states(state, self._n)
        for c, s in zip(self._conns, rngs, strict=True):
            c.send(("set_state", s))
        for i in range(self._n):
            self._recv(i, [])

    def close(self) -> None:
        for c in self._conns:
            try:
                c.send(("close",))
            except (OSError, BrokenPipeError):
                pass
        for p in self._procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        for c in self._conns:
            c.close()
        self._conns, self._procs = [], []

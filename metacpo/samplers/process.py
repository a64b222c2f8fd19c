"""Multiprocess sampler: persistent worker processes, each holding its own environment.

Protocol (parent -> worker over a ``multiprocessing.Pipe``; worker code is
:func:`worker_main`, which only wraps :func:`metacpo.samplers.base.rollout`):

* ``("sample", snapshots, [(job, task), ...])`` (one snapshot per task, see :func:`run_jobs`) -> ``("ok", ([(job, Batch), ...], rng_states))``
  (``{share: generator state}`` of the worker's shares after the jobs, so the parent always knows
  every generator's state; a worker runs one share unless ``envs_per_worker > 1``)
* ``("pieces", snapshots, {share: [(piece, task), ...]})`` -> ``("ok", [(piece, Batch), ...])``: single
  episodes of planned jobs with their seeds given (:mod:`metacpo.samplers.episodes`), run on the
  envs of the named shares; the worker's generators are not used (the parent keeps their states)
* ``("get_state",)`` -> ``("ok", rng_states)``; ``("set_state", rng_states[, last_resets])`` -> ``("ok", None)``
  (``last_resets``: ``{share: (task, seed)}``, the reset each share's env last made as planned;
  an env whose last reset was another repeats it, see :class:`~metacpo.samplers.base.Piece`)
* ``("close",)`` -> the worker exits.
* Any exception in a worker -> ``("error", WorkerError)`` (whether it is a ``ValueError``, its
  message and traceback); the parent raises ``ValueError`` (bad input, e.g. a task the env
  rejects) or ``RuntimeError`` with the worker's traceback, naming the worker. A worker that died -- whatever the moment: idle, mid-rollout, or part-way
  through writing its reply, so that the parent reads EOF, a reset or broken pipe, "got end of
  file during message" or a truncated pickle -- raises ``WorkerDied`` naming it;
  :meth:`ProcessSampler.sample` catches it, starts a replacement process, restores the generator
  state the parent last knew for that worker, re-runs the lost jobs and records a
  :class:`~metacpo.samplers.faults.FaultEvent` (``sampler.fault_events``, ``sampler.fault_count``;
  logged as a warning). The re-sampled share is exactly what the dead worker would have produced.

Workers get parameters (a :class:`PolicySnapshot`), never modules; envs and processes persist
across iterations; a task switch is ``env.unwrapped.set_task(task)``. Before building its env a
worker applies the run's :class:`~metacpo.tasks.setup.TaskSetup` (custom families, range
overrides), so it sees the same task families and ranges as the driver.

Interrupts: workers ignore SIGINT (they are started with SIGINT ignored, so a Ctrl-C in a terminal,
which reaches the whole process group, never prints worker tracebacks); the driver handles the
``KeyboardInterrupt`` and :meth:`ProcessSampler.close` ends the workers within about a second
(a short grace period for idle workers, then SIGTERM, then SIGKILL), whatever their number.
"""

from __future__ import annotations

import copy
import logging
import multiprocessing as mp
import pickle
import signal
import sys
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from metacpo.data.batch import Batch
from metacpo.samplers.base import (
    Job,
    Piece,
    PolicySnapshot,
    Sampler,
    Task,
    assemble,
    check_rng_states,
    make_env_for,
    episode_limit,
    note_last_resets,
    resets_from_state,
    resets_to_state,
    plan_call,
    repeat_reset,
    run_jobs,
    run_jobs_lockstep,
    run_pieces,
    worker_rng,
)
from metacpo.samplers.episodes import join_pieces, plan_pieces, spread_pieces
from metacpo.samplers.faults import FaultEvent, record_fault
from metacpo.tasks.setup import TaskSetup

logger = logging.getLogger("metacpo.samplers")

# Every way reading a reply from a worker that died can fail: EOFError (nothing of the reply was
# written), OSError "got end of file during message" (killed while writing it), ConnectionResetError
# and BrokenPipeError (OSError subclasses), and a truncated or garbled pickle.
PIPE_BROKEN: tuple[type[BaseException], ...] = (EOFError, OSError, pickle.UnpicklingError)
CLOSE_GRACE_S = 0.5
"""How long :meth:`ProcessSampler.close` waits for idle workers to exit before terminating them."""


@dataclass(frozen=True)
class WorkerError:
    """A worker's exception as it travels to the parent (exceptions themselves may not pickle)."""

    is_value_error: bool
    """The worker raised a ``ValueError`` (bad input): the parent raises ``ValueError`` too."""
    message: str
    traceback: str

    @staticmethod
    def current() -> "WorkerError":
        """The exception being handled (call inside ``except``)."""
        exc = sys.exc_info()[1]
        return WorkerError(is_value_error=isinstance(exc, ValueError), message=str(exc),
                           traceback=traceback.format_exc())


class WorkerDied(RuntimeError):
    """A worker process exited unexpectedly while holding ``jobs``."""

    def __init__(self, worker: int, jobs: Sequence[Job]) -> None:
        super().__init__(f"sampler worker {worker} died (pipe closed) while sampling {len(jobs)} job(s)")
        self.worker = worker
        self.jobs = list(jobs)


def hosted_shares(worker: int, *, num_workers: int, envs_per_worker: int) -> list[int]:
    """The shares (virtual worker indices) process ``worker`` runs: ``worker + k * num_workers``."""
    return [worker + k * num_workers for k in range(envs_per_worker)]


def worker_main(conn: Connection, env_id: str, seed: int, index: int, setup: TaskSetup | None = None,
                num_workers: int = 1, envs_per_worker: int = 1) -> None:
    """Body of worker ``index``: build the envs and generators once, then serve requests.

    The worker runs the shares :func:`hosted_shares` names, each with its own env and its own
    generator ``worker_rng(seed, share)``; several shares are stepped in lockstep
    (:func:`~metacpo.samplers.base.run_jobs_lockstep`: the batches of running them one by one).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's business
    import torch

    from metacpo.models.policy import GaussianMLPPolicy

    torch.set_num_threads(1)
    shares = hosted_shares(index, num_workers=num_workers, envs_per_worker=envs_per_worker)
    try:
        if setup is not None:
            setup.apply()
        # our stochastic ids: the default task follows the seed
        envs = {v: make_env_for(env_id, seed=seed) for v in shares}
    except Exception:
        conn.send(("error", WorkerError.current()))
        return
    rngs = {v: worker_rng(seed, v) for v in shares}
    last_resets: dict[int, tuple[Task, int]] = {}  # (task, seed) of each env's last reset (run_pieces)
    policy: GaussianMLPPolicy | None = None
    conn.send(("ok", None))  # ready
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            break
        except Exception:  # e.g. a task whose module this worker cannot import
            conn.send(("error", WorkerError.current()))
            continue
        try:
            cmd = msg[0]
            if cmd == "close":
                break
            if cmd == "sample":
                snapshots, work = msg[1], msg[2]
                if len(shares) == 1:
                    policy, out = run_jobs(envs[index], policy, snapshots, work, rngs[index], worker=index)
                else:  # the shares' envs stepped together, one batched policy pass per step
                    policy, out = run_jobs_lockstep(envs, policy, snapshots, work, rngs)
                note_last_resets(last_resets, work, out)
                conn.send(("ok", (out, {v: r.bit_generator.state for v, r in rngs.items()})))
            elif cmd == "pieces":  # episodes of planned jobs, seeds given (metacpo.samplers.episodes)
                policy, out = run_pieces(envs, policy, msg[1], msg[2], last_resets)
                conn.send(("ok", out))
            elif cmd == "get_state":
                conn.send(("ok", {v: r.bit_generator.state for v, r in rngs.items()}))
            elif cmd == "set_state":
                for v, state in msg[1].items():
                    rngs[v].bit_generator.state = state
                for v, reset in (msg[2] if len(msg) > 2 else {}).items():  # envs back where the plan has them
                    repeat_reset(envs[v], v, last_resets, reset)
                conn.send(("ok", None))
            else:
                conn.send(("error", WorkerError(is_value_error=False, message=f"unknown command {cmd!r}", traceback="")))
        except Exception:
            try:
                conn.send(("error", WorkerError.current()))
            except OSError:  # the parent is gone
                break
    for env in envs.values():
        env.close()
    conn.close()


class ProcessSampler(Sampler):
    """``num_workers`` persistent processes (default: one per CPU core).

    Work for several tasks is spread over workers with :func:`plan_jobs`; with ``num_workers=1``
    the batches equal :class:`LocalSampler`'s bit for bit (same generator, same order), and
    ``LocalSampler(num_virtual_workers=n)`` equals ``ProcessSampler(num_workers=n)``.

    ``envs_per_worker=k`` (default 1) plans every call as :func:`plan_jobs` over ``num_workers x k``
    shares, each with its own environment and generator ``worker_rng(seed, share)``; process ``w``
    runs shares ``w, w + num_workers, ...`` with their envs stepped in lockstep (one batched policy
    pass per step for all of them). Work is then cut into finer
    whole-episode parts, which balances e.g. 3 tasks over 2 processes (4,500 steps each instead of
    6,000 and 3,000). The batches are those of ``ProcessSampler(num_workers=n * k)`` and
    ``LocalSampler(num_virtual_workers=n * k)`` bit for bit -- and so differ from ``k = 1``'s (other
    generators draw the seeds and noise of some episodes); they are drawn from the same
    distribution (every episode complete, reset from its own seed; see docs/scaling.md).

    ``spread_episodes`` (default True): the planned jobs are cut into their episodes, each with the
    seeds and noise rows its share would have given it, and the episodes are dealt out to the
    processes in equal numbers of steps (:mod:`metacpo.samplers.episodes`) -- the batches of the
    plan bit for bit, without a process waiting for another that got more steps (3 tasks on 2
    processes: 4,500 steps each instead of 6,000 and 3,000). The first episode that ends before
    the env's time limit (never in Safety-Gymnasium's navigation tasks) turns it off for the
    sampler's life: that call is run again as planned, with a warning.

    Faults: a worker found dead during :meth:`sample` is replaced (see the module docstring); at
    most ``max_faults_per_call`` replacements per call, then ``RuntimeError``.
    """

    def __init__(self, env_id: str, *, seed: int, num_workers: int | None = None, start_method: str = "spawn",
                 max_faults_per_call: int = 3, task_setup: TaskSetup | None = None,
                 envs_per_worker: int = 1, spread_episodes: bool = True) -> None:
        import os

        n = num_workers if num_workers is not None else (os.cpu_count() or 1)
        if n <= 0:
            raise ValueError(f"num_workers must be positive, got {n}")
        if max_faults_per_call < 0:
            raise ValueError(f"max_faults_per_call must be >= 0, got {max_faults_per_call}")
        if not isinstance(envs_per_worker, int) or envs_per_worker <= 0:
            raise ValueError(f"envs_per_worker must be a positive integer, got {envs_per_worker!r}")
        self.env_id = env_id
        self.task_setup = task_setup
        self.episode_steps = episode_limit(env_id)  # work is split in whole episodes (plan_jobs)
        self._n = n
        self.envs_per_worker = envs_per_worker
        self._shares = n * envs_per_worker
        self._seed = seed
        self._busy = False  # a sample call is in progress (workers may be mid-rollout)
        self.spread_episodes = spread_episodes
        self._episodes_run_out = True  # no episode has ended before the time limit yet
        self._last_resets: list[tuple[Task, int] | None] = [None] * (n * envs_per_worker)  # per share, as planned
        self._workers_stale = False  # pieces ran: the workers' generators and envs are not where the plan has them
        self._ctx = mp.get_context(start_method)
        self.max_faults_per_call = max_faults_per_call
        self.fault_events: list[FaultEvent] = []
        self._calls = 0
        # The parent's copy of every share's generator state (updated by every reply).
        self._states: list[dict[str, Any]] = [worker_rng(seed, v).bit_generator.state for v in range(self._shares)]
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        try:
            for i in range(n):
                conn, p = self._spawn(i)
                self._conns.append(conn)
                self._procs.append(p)
            for i in range(n):
                self._recv(i, [])
        except BaseException:
            self.close()
            raise

    def _spawn(self, i: int) -> tuple[Connection, Any]:
        parent, child = self._ctx.Pipe()
        p = self._ctx.Process(target=worker_main, args=(child, self.env_id, self._seed, i, self.task_setup,
                                                        self._n, self.envs_per_worker),
                              daemon=True, name=f"metacpo-sampler-{i}")
        # Start it with SIGINT ignored: the child inherits the disposition and Python keeps it, so
        # a Ctrl-C during its (seconds-long) start-up prints nothing either.
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        try:
            p.start()
        finally:
            if main:
                signal.signal(signal.SIGINT, previous)
        child.close()
        return parent, p

    @property
    def num_workers(self) -> int:
        return self._n

    @property
    def fault_count(self) -> int:
        """Workers replaced so far (each one a :class:`FaultEvent` in ``fault_events``)."""
        return len(self.fault_events)

    def worker_pids(self) -> list[int]:
        """Process ids of the current workers (replacements included)."""
        return [int(p.pid) for p in self._procs]

    def _replace(self, i: int) -> None:
        """Start a fresh worker ``i`` in place of a dead one, at the generator state last known."""
        old, conn = self._procs[i], self._conns[i]
        conn.close()
        if old.is_alive():
            old.kill()
        old.join(timeout=5)
        self._conns[i], self._procs[i] = self._spawn(i)
        self._recv(i, [])  # ready (a replacement that cannot start is a hard error)
        self._conns[i].send(("set_state", self._hosted_states(i), self._hosted_last_resets(i)))
        self._recv(i, [])

    def _hosted(self, i: int) -> list[int]:
        return hosted_shares(i, num_workers=self._n, envs_per_worker=self.envs_per_worker)

    def _hosted_last_resets(self, i: int) -> dict[int, tuple[Task, int]]:
        """The last reset ``(task, seed)`` of worker ``i``'s shares' envs as planned, where known:
        a replacement (fresh envs) repeats them, so its next episodes start as the dead one's would."""
        return {v: self._last_resets[v] for v in self._hosted(i) if self._last_resets[v] is not None}

    def _hosted_states(self, i: int) -> dict[int, dict[str, Any]]:
        """The parent's copies of the generator states of worker ``i``'s shares."""
        return {v: self._states[v] for v in self._hosted(i)}

    def _send_work(self, w: int, msg: tuple[Any, ...], jobs: Sequence[Job], faults: list[int]) -> None:
        while True:
            try:
                self._conns[w].send(msg)
                return
            except OSError as exc:  # BrokenPipeError / ConnectionResetError: died before reading it
                self._fault(w, jobs, faults, f"{type(exc).__name__} sending work")

    def _fault(self, w: int, jobs: Sequence[Job], faults: list[int], reason: str) -> None:
        faults[0] += 1
        if faults[0] > self.max_faults_per_call:
            raise RuntimeError(f"sampler workers died {faults[0]} times in one sample call "
                               f"(max_faults_per_call={self.max_faults_per_call}); last: worker {w}, {reason}")
        record_fault(self.fault_events, backend="process", worker=w, call=self._calls - 1, jobs=len(jobs),
                     reason=reason)
        self._replace(w)

    def _recv(self, i: int, jobs: Sequence[Job]) -> Any:
        try:
            status, payload = self._conns[i].recv()
        except PIPE_BROKEN:  # died before, while or after writing its reply (see PIPE_BROKEN)
            raise WorkerDied(i, jobs) from None
        if status != "ok":
            if payload.is_value_error:
                raise ValueError(f"sampler worker {i}: {payload.message}")
            raise RuntimeError(f"sampler worker {i} failed:\n{payload.traceback or payload.message}")
        return payload

    def sample(
        self,
        *,
        snapshot: PolicySnapshot | Sequence[PolicySnapshot],
        num_steps: int,
        tasks: Sequence[Task] | None = None,
    ) -> list[Batch]:
        task_list, snapshots, jobs = plan_call(snapshot, tasks=tasks, num_steps=num_steps, num_workers=self._shares,
                                               episode_steps=self.episode_steps)
        self._calls += 1
        if (self.spread_episodes and self._episodes_run_out
                and all(self._last_resets[j.worker] is not None for j in jobs)):  # a share's first call: as planned
            outputs = self._sample_pieces(task_list, snapshots, jobs)
            if outputs is not None:
                return assemble(task_list, outputs)
            self._episodes_run_out = False  # an episode ended early: jobs as planned from now on
            logger.warning("sampler: an episode of %s ended before its time limit, so a call's episodes "
                           "cannot be run apart; running every job on its own share from now on "
                           "(the same batches, without the balancing)", self.env_id)
        return assemble(task_list, self._sample_jobs(task_list, snapshots, jobs))

    def _sample_jobs(self, task_list: list[Task], snapshots: list[PolicySnapshot],
                     jobs: list[Job]) -> list[tuple[Job, Batch]]:
        """Run ``jobs`` as planned: share ``v``'s jobs on its process, with its generator."""
        if self._workers_stale:  # pieces ran since the workers' generators last moved
            self._exchange({i: ("set_state", self._hosted_states(i), self._hosted_last_resets(i)) for i in range(self._n)},
                           {i: [] for i in range(self._n)})
            self._workers_stale = False
        per_worker: dict[int, list[Job]] = {}
        for j in jobs:  # j.worker is the share; process j.worker mod n runs it
            per_worker.setdefault(j.worker % self._n, []).append(j)
        # a snapshot shared by several tasks is pickled once per message (pickle memoises objects)
        msgs = {w: ("sample", snapshots, [(j, task_list[j.task_index]) for j in js]) for w, js in per_worker.items()}
        outputs: list[tuple[Job, Batch]] = []
        for out, state in self._exchange(msgs, per_worker).values():
            for v, st in state.items():
                self._states[v] = st
            outputs.extend(out)
        by_job = dict(outputs)  # in plan order below: a share's last job last
        note_last_resets(self._last_resets, [(j, task_list[j.task_index]) for j in jobs], [(j, by_job[j]) for j in jobs])
        return outputs

    def _sample_pieces(self, task_list: list[Task], snapshots: list[PolicySnapshot],
                       jobs: list[Job]) -> list[tuple[Job, Batch]] | None:
        """Run ``jobs`` as episodes dealt out evenly over the processes (:mod:`metacpo.samplers.episodes`);
        None (nothing changed) when an episode did not run as its job would have run it."""
        pieces, after, last = plan_pieces(jobs, self._states, tasks=task_list, last_resets=self._last_resets,
                                          episode_steps=self.episode_steps)
        k = self.envs_per_worker
        per_worker: dict[int, dict[int, list[tuple[Piece, Task]]]] = {}
        for slot, ps in enumerate(spread_pieces(pieces, self._shares)):
            if ps:  # process slot // k runs it on its (slot mod k)-th env
                w = slot // k
                per_worker.setdefault(w, {})[self._hosted(w)[slot % k]] = [(p, task_list[p.task_index]) for p in ps]
        msgs = {w: ("pieces", snapshots, q) for w, q in per_worker.items()}
        replies = self._exchange(msgs, {w: jobs for w in msgs})
        self._workers_stale = True  # their envs ran other shares' episodes; their generators did not move
        joined = join_pieces([item for out in replies.values() for item in out])
        if joined is not None:
            self._states, self._last_resets = after, last
        return joined

    def _exchange(self, msgs: Mapping[int, tuple[Any, ...]], jobs: Mapping[int, Sequence[Any]]) -> dict[int, Any]:
        """Send ``msgs[w]`` to each process ``w``, return its replies by process. A process that
        dies is replaced (its generators restored) and sent its message again; a worker's own error
        is raised after every reply has been read (so no stale reply is left in a pipe)."""
        self._busy = True
        faults = [0]
        for w, msg in msgs.items():
            self._send_work(w, msg, jobs[w], faults)
        replies: dict[int, Any] = {}
        error: Exception | None = None
        for w, msg in msgs.items():
            while True:
                try:
                    replies[w] = self._recv(w, jobs[w])
                    break
                except WorkerDied:  # replace it, restore its generator, re-run its work
                    self._fault(w, jobs[w], faults, "pipe closed (process exited) during the call")
                    self._send_work(w, msg, jobs[w], faults)
                except (ValueError, RuntimeError) as exc:
                    error = error or exc
                    break
        self._busy = False
        if error is not None:
            raise error
        return replies

    def state_dict(self) -> dict[str, Any]:
        # The parent's copies equal the workers' states (every reply carries the state). The shares'
        # last resets as planned let a resumed sampler's fresh envs repeat them: a fresh env's first
        # reset differs from later ones on Car (Piece.prev), so without them a resume is exact on
        # Point only.
        return {"worker_rngs": copy.deepcopy(self._states), "last_resets": resets_to_state(self._last_resets)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        rngs = check_rng_states(state, self._shares)
        last = resets_from_state(self.env_id, state, self._shares)  # all None from older checkpoints
        self._states = copy.deepcopy(list(rngs))
        self._last_resets = last
        self._workers_stale = False  # sent to the workers just below
        for i in range(self._n):
            try:
                self._conns[i].send(("set_state", self._hosted_states(i), self._hosted_last_resets(i)))
                self._recv(i, [])
            except (OSError, WorkerDied):  # dead while idle: the replacement starts at the new state
                self._replace(i)

    def close(self) -> None:
        """End the workers within about a second, whatever they are doing (idempotent).

        Idle workers get ``close`` and :data:`CLOSE_GRACE_S` seconds (all together) to exit; the
        rest (e.g. mid-rollout after a Ctrl-C, or hung) get SIGTERM, then SIGKILL.
        """
        if not self._busy:
            for c in self._conns:
                try:
                    c.send(("close",))
                except OSError:
                    pass
            deadline = time.monotonic() + CLOSE_GRACE_S
            for p in self._procs:
                p.join(timeout=max(0.0, deadline - time.monotonic()))
        for p in self._procs:
            if p.is_alive():
                p.terminate()
        deadline = time.monotonic() + 1.0
        for p in self._procs:
            p.join(timeout=max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(timeout=1.0)
        for c in self._conns:
            c.close()
        self._conns, self._procs = [], []
        self._busy = False

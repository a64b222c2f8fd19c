"""Ray sampler: one Ray actor per worker, each holding its own environment across iterations.

``import ray`` happens only when a :class:`RaySampler` is built (``import metacpo`` never imports
Ray; install it with the ``metacpo[ray]`` extra). Per :meth:`RaySampler.sample` call the policy
snapshot goes into the object store once (``ray.put``) and every actor reads it from there; the
jobs are the same :func:`~metacpo.samplers.base.plan_jobs` split as the other backends (whole tasks
round-robin over actors, or a task split into parts when there are fewer tasks than actors), and
each actor runs the same :func:`~metacpo.samplers.base.rollout` with the same per-worker generator,
so ``RaySampler(num_workers=n)`` gives the batches of ``LocalSampler(num_virtual_workers=n)`` and
``ProcessSampler(num_workers=n)`` bit for bit.

Cluster: ``ray_address=None`` starts a private Ray instance on this machine (unless the caller
already runs Ray in this process, which is then used); ``"auto"`` or
``"ray://host:10001"``/``"host:6379"`` joins an existing cluster (every node needs metacpo and its
dependencies installed in the same Python environment). See ``docs/scaling.md``.

Connecting: before ``ray.init`` joins a cluster, :func:`resolve_ray_address` resolves ``auto``
(``RAY_ADDRESS``, else the cluster ``ray start`` recorded on this machine) and opens a TCP
connection to the head's host:port within ``connect_timeout`` seconds, because ``ray.init`` itself
waits for ever on an address nobody answers. An unreachable address or ``auto`` without a cluster
is a one-line ``ValueError`` naming the address.

Faults: an actor whose process dies (``RayActorError``, e.g. SIGKILL or a lost node) is replaced by
a fresh actor restored to the generator state the driver last knew for it, its jobs are re-run
and a :class:`~metacpo.samplers.faults.FaultEvent` is recorded (``fault_events``/``fault_count``,
logged as a warning). The re-sampled share is what the dead actor would have produced.
"""

from __future__ import annotations

import copy
import logging
import os
import socket
from collections.abc import Mapping, Sequence
from typing import Any

from metacpo.data.batch import Batch
from metacpo.samplers.base import (
    Job,
    PolicySnapshot,
    Sampler,
    Task,
    assemble,
    check_rng_states,
    make_env_for,
    episode_limit,
    note_last_resets,
    plan_call,
    repeat_reset,
    resets_from_state,
    resets_to_state,
    run_jobs,
    worker_rng,
)
from metacpo.samplers.faults import FaultEvent, record_fault
from metacpo.tasks.setup import TaskSetup

DEFAULT_CONNECT_TIMEOUT = 30.0
"""Seconds to wait for a Ray head to answer (``sampler.ray_connect_timeout``)."""


def import_ray() -> Any:
    """``import ray`` with a clear error when the optional extra is missing."""
    try:
        import ray
    except ImportError:
        raise ValueError("the ray sampler needs Ray: pip install 'metacpo[ray]' (ray[default]>=2.40,<2.61)") from None
    return ray


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def resolve_ray_address(address: str, *, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> str:
    """The ``host:port`` (or ``ray://host:port``) of a reachable Ray head for ``address``.

    ``auto`` means ``RAY_ADDRESS`` if set, else the cluster started with ``ray start`` on this
    machine. Raises a one-line ``ValueError`` naming the address when there is no such cluster,
    the address is malformed, or nothing accepts a TCP connection there within ``connect_timeout``
    seconds.
    """
    if connect_timeout <= 0:
        raise ValueError(f"sampler.ray_connect_timeout must be > 0 seconds, got {connect_timeout}")
    given = address
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS", "")
        if not address:
            found = None
            try:
                from ray._private.services import canonicalize_bootstrap_address

                found = canonicalize_bootstrap_address("auto")
            except (ConnectionError, ValueError, OSError):
                found = None
            if not found:
                raise ValueError("--ray-address auto: no running Ray cluster found on this machine (RAY_ADDRESS is "
                                 "unset and no `ray start` cluster is recorded); start one with `ray start --head` "
                                 "or pass --ray-address HOST:PORT")
            address = str(found)
    scheme = "ray://" if address.startswith("ray://") else ""
    hostport = address[len(scheme):]
    host, sep, port_s = hostport.rpartition(":")
    if not sep or not host or not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise ValueError(f"--ray-address {given!r}: expected 'auto', HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port_s)), timeout=connect_timeout).close()
    except OSError as exc:
        why = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or _one_line(exc))
        raise ValueError(f"--ray-address {given}: cannot reach a Ray head at {host}:{port_s} ({why}, waited up to "
                         f"{connect_timeout:g} s; sampler.ray_connect_timeout sets the wait); is the cluster "
                         "running?") from None
    return address


class SamplerActor:
    """Body of one actor (a plain class; :class:`RaySampler` wraps it with ``ray.remote``)."""

    def __init__(self, env_id: str, seed: int, index: int, setup: TaskSetup | None = None) -> None:
        import torch

        torch.set_num_threads(1)
        if setup is not None:
            setup.apply()  # the run's custom families and range overrides, before building the env
        self.index = index
        self.env = make_env_for(env_id, seed=seed)  # our ids: the default task is a function of the seed
        self.rng = worker_rng(seed, index)
        self.policy: Any = None

    def pid(self) -> int:
        return os.getpid()

    def sample(self, snapshots: Sequence[PolicySnapshot], work: Sequence[tuple[Job, Task]]) -> tuple[list[tuple[Job, Batch]], dict[str, Any]]:
        """Run ``work`` in order; returns the parts and the generator state afterwards."""
        self.policy, out = run_jobs(self.env, self.policy, snapshots, work, self.rng, worker=self.index)
        return out, self.rng.bit_generator.state

    def set_state(self, state: Mapping[str, Any], last_reset: tuple[Task, int] | None = None) -> None:
        """Restore the generator and, if given, repeat ``last_reset`` (the driver's record of this env's
        last reset): a fresh env's first reset differs from later ones on Car (see Piece.prev)."""
        self.rng.bit_generator.state = dict(state)
        if last_reset is not None:
            repeat_reset(self.env, self.index, {}, last_reset)

    def get_state(self) -> dict[str, Any]:
        return self.rng.bit_generator.state

    def close(self) -> None:
        self.env.close()


class RaySampler(Sampler):
    """``num_workers`` Ray actors (default: every free CPU of the Ray cluster / ``num_cpus_per_worker``).

    Args:
        env_id: environment id (ours or any Safety-Gymnasium id).
        seed: run seed; actor ``i`` owns ``worker_rng(seed, i)``.
        num_workers: number of actors (None: as many as the cluster's CPUs allow).
        ray_address: None starts a private local Ray instance; ``"auto"`` or an address joins
            a running cluster.
        num_cpus_per_worker: CPUs Ray reserves per actor.
        init_kwargs: extra ``ray.init`` arguments (only used when this sampler starts Ray).
        max_faults_per_call: actor replacements allowed per :meth:`sample` call before
            ``RuntimeError``.
        task_setup: custom families and range overrides every actor applies before building
            its env (see :mod:`metacpo.tasks.setup`).
        connect_timeout: seconds to wait for the head at ``ray_address`` to answer.

    If Ray is not running yet, the sampler starts it (no dashboard, worker logs not forwarded)
    and shuts it down on :meth:`close`; a Ray session started by the caller is left running.
    """

    def __init__(
        self,
        env_id: str,
        *,
        seed: int,
        num_workers: int | None = None,
        ray_address: str | None = None,
        num_cpus_per_worker: float = 1.0,
        init_kwargs: Mapping[str, Any] | None = None,
        max_faults_per_call: int = 3,
        task_setup: TaskSetup | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        if num_workers is not None and num_workers <= 0:
            raise ValueError(f"num_workers must be positive, got {num_workers}")
        if num_cpus_per_worker <= 0:
            raise ValueError(f"num_cpus_per_worker must be positive, got {num_cpus_per_worker}")
        if max_faults_per_call < 0:
            raise ValueError(f"max_faults_per_call must be >= 0, got {max_faults_per_call}")
        ray = import_ray()
        self._ray = None
        self._owns_ray = False
        if not ray.is_initialized():
            address = resolve_ray_address(ray_address, connect_timeout=connect_timeout) if ray_address else "local"
            kwargs: dict[str, Any] = {"address": address, "include_dashboard": False,
                                      "log_to_driver": False, "logging_level": logging.WARNING}
            kwargs.update(init_kwargs or {})
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, TimeoutError) as exc:
                raise ValueError(f"--ray-address {ray_address or 'local'}: ray.init failed: {_one_line(exc)}") from None
            self._owns_ray = True
        self._ray = ray
        self._dead = tuple(getattr(ray.exceptions, n) for n in ("RayActorError", "WorkerCrashedError", "ObjectLostError")
                           if hasattr(ray.exceptions, n))  # every way an actor's reply is lost
        self.task_setup = task_setup
        self.env_id = env_id
        self.episode_steps = episode_limit(env_id)  # work is split in whole episodes (plan_jobs)
        self._seed = seed
        self.max_faults_per_call = max_faults_per_call
        self.fault_events: list[FaultEvent] = []
        self._calls = 0
        self._actors: list[Any] = []
        try:
            cpus = float(ray.cluster_resources().get("CPU", 0.0))
            free = float(ray.available_resources().get("CPU", 0.0))
            n = num_workers if num_workers is not None else max(1, int(free // num_cpus_per_worker))
            if n * num_cpus_per_worker > free:  # fail loudly instead of waiting forever for CPUs
                raise ValueError(f"{n} ray sampler workers x {num_cpus_per_worker} CPU need {n * num_cpus_per_worker:g} "
                                 f"CPUs but the Ray cluster has {free:g} free (of {cpus:g}); lower --workers")
            self._n = n
            self._actor_cls = ray.remote(SamplerActor).options(num_cpus=num_cpus_per_worker, max_restarts=0)
            self._states: list[dict[str, Any]] = [worker_rng(seed, i).bit_generator.state for i in range(n)]
            self._last_resets: list[tuple[Task, int] | None] = [None] * n  # each actor env's last reset
            self._actors = [self._actor_cls.remote(env_id, seed, i, task_setup) for i in range(n)]
            self._pids = self._get_all([a.pid.remote() for a in self._actors], "start")
        except BaseException:
            self.close()
            raise

    def _get_all(self, refs: list[Any], what: str) -> list[Any]:
        try:
            return self._ray.get(refs)
        except self._ray.exceptions.RayActorError as exc:
            raise RuntimeError(f"ray sampler actor failed to {what} ({self.env_id!r}): {exc}") from None

    @property
    def num_workers(self) -> int:
        return self._n

    @property
    def fault_count(self) -> int:
        """Actors replaced so far (each one a :class:`FaultEvent` in ``fault_events``)."""
        return len(self.fault_events)

    def worker_pids(self) -> list[int]:
        """Process ids of the current actors (replacements included)."""
        return list(self._pids)

    def actor(self, i: int) -> Any:
        """The handle of actor ``i`` (e.g. to query it)."""
        return self._actors[i]

    def _replace(self, i: int) -> None:
        """A fresh actor ``i`` in place of a dead one, at the generator state last known."""
        try:
            self._ray.kill(self._actors[i], no_restart=True)
        except Exception:  # already gone
            pass
        actor = self._actor_cls.remote(self.env_id, self._seed, i, self.task_setup)
        self._actors[i] = actor
        self._pids[i] = self._get_all([actor.pid.remote()], "restart")[0]
        self._get_all([actor.set_state.remote(self._states[i], self._last_resets[i])], "restore its generator")

    def _fault(self, w: int, jobs: int, faults: list[int], exc: BaseException) -> None:
        faults[0] += 1
        reason = f"{type(exc).__name__}: " + " ".join(str(exc).split())[:200]
        if faults[0] > self.max_faults_per_call:
            raise RuntimeError(f"ray sampler actors died {faults[0]} times in one sample call "
                               f"(max_faults_per_call={self.max_faults_per_call}); last: worker {w}, {reason}")
        record_fault(self.fault_events, backend="ray", worker=w, call=self._calls - 1, jobs=jobs, reason=reason)
        self._replace(w)

    def sample(
        self,
        *,
        snapshot: PolicySnapshot | Sequence[PolicySnapshot],
        num_steps: int,
        tasks: Sequence[Task] | None = None,
    ) -> list[Batch]:
        ray = self._ray
        task_list, snapshots, jobs = plan_call(snapshot, tasks=tasks, num_steps=num_steps, num_workers=self._n,
                                               episode_steps=self.episode_steps)
        per_worker: dict[int, list[tuple[Job, Task]]] = {}
        for j in jobs:
            per_worker.setdefault(j.worker, []).append((j, task_list[j.task_index]))
        self._calls += 1
        faults = [0]
        snap_ref = ray.put(snapshots)  # once per call (shared snapshots pickled once); actors read it from the store
        refs = {w: self._actors[w].sample.remote(snap_ref, work) for w, work in per_worker.items()}
        outputs: list[tuple[Job, Batch]] = []
        for w, work in per_worker.items():
            while True:
                try:
                    out, state = ray.get(refs[w])
                    break
                except self._dead as exc:  # replace, restore generator, re-run
                    self._fault(w, len(work), faults, exc)
                    refs[w] = self._actors[w].sample.remote(snap_ref, work)
            self._states[w] = state
            note_last_resets(self._last_resets, work, out)
            outputs.extend(out)
        return assemble(task_list, outputs)

    def state_dict(self) -> dict[str, Any]:
        # The driver's copies equal the actors' states (every reply carries the state); the envs'
        # last resets let resumed actors' fresh envs repeat them (exact resume on Car, see Piece.prev).
        return {"worker_rngs": copy.deepcopy(self._states), "last_resets": resets_to_state(self._last_resets)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        rngs = check_rng_states(state, self._n)
        self._last_resets = resets_from_state(self.env_id, state, self._n)  # all None from older checkpoints
        self._states = copy.deepcopy(list(rngs))
        refs = [a.set_state.remote(s, r) for a, s, r in zip(self._actors, self._states, self._last_resets, strict=True)]
        for i, ref in enumerate(refs):
            try:
                self._ray.get(ref)
            except self._dead:  # dead while idle: restart at the new state
                self._replace(i)

    def close(self) -> None:
        ray = getattr(self, "_ray", None)
        if ray is None:
            return
        for a in self._actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # already gone
                pass
        self._actors = []
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        self._owns_ray = False
        self._ray = None

"""The sampler interface, the policy snapshot sent to workers, and the per-worker rollout.

Every backend (local, multiprocess, and later Ray) is a :class:`Sampler` and builds its batches
with the same module-level :func:`rollout`, so a backend only decides *where* rollouts run and
*which worker* does which share of the work (see :func:`plan_jobs`).

Seeding: worker ``i`` of a run with seed ``s`` owns ``numpy.random.default_rng([s, i])``. Every
episode is reset with its own seed drawn from that generator, and the action noise of a rollout
comes from a numpy generator seeded from it, so batches are a deterministic function of
``(run seed, worker index, call number)`` and start states differ across episodes and workers.
"""

from __future__ import annotations

import abc
import itertools
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from metacpo.data.batch import Batch
from metacpo.data.normalizer import NormalizerState
from metacpo.models.policy import GaussianMLPPolicy, PolicySpec

Task = Any  # a small frozen dataclass from metacpo.tasks (or None for the env's own task)
RolloutSteps = Generator[tuple[np.ndarray, np.ndarray | None, float | None], tuple[np.ndarray, float], Batch]
"""A rollout with the policy left out (:func:`_rollout_steps`): yields ``(raw obs, noise, noise . noise)``
(``noise`` and its square norm None when deterministic), is sent ``(action, log pi)``, returns the batch."""


@dataclass(frozen=True)
class PolicySnapshot:
    """What a worker needs to act: parameters as numpy arrays, the normaliser, the net's spec.

    Never a pickled module; workers rebuild (once) a :class:`GaussianMLPPolicy` from ``spec``
    and load ``params`` into it.
    """

    spec: PolicySpec
    params: Mapping[str, np.ndarray]
    obs_norm: NormalizerState
    deterministic: bool = False

    @staticmethod
    def from_policy(
        policy: GaussianMLPPolicy,
        obs_norm: NormalizerState,
        *,
        params: Mapping[str, torch.Tensor] | None = None,
        deterministic: bool = False,
    ) -> "PolicySnapshot":
        """Snapshot ``policy`` (or ``params``, e.g. adapted parameters) for the workers."""
        src = dict(policy.named_parameters()) if params is None else params
        return PolicySnapshot(
            spec=policy.spec,
            params={k: v.detach().cpu().numpy().copy() for k, v in src.items()},
            obs_norm=obs_norm,
            deterministic=deterministic,
        )

    def load_into(self, policy: GaussianMLPPolicy) -> GaussianMLPPolicy:
        """Copy the snapshot's parameters into ``policy`` (a worker's own private module)."""
        if policy.spec != self.spec:
            raise ValueError(f"policy spec {policy.spec} does not match snapshot spec {self.spec}")
        with torch.no_grad():
            for k, p in policy.named_parameters():
                p.copy_(torch.as_tensor(self.params[k], dtype=p.dtype))
        return policy

    def build_policy(self) -> GaussianMLPPolicy:
        return self.load_into(GaussianMLPPolicy(self.spec))


def make_env_for(env_id: str, task: Task = None, *, seed: int | None = None) -> Any:
    """Build the environment ``env_id`` (ours via :mod:`metacpo.tasks`, or any Safety-Gymnasium id).

    The single place where samplers, evaluation and the training loop create environments.
    """
    try:
        from metacpo.tasks import make_env  # type: ignore[attr-defined]
    except ImportError:
        make_env = None
    if make_env is not None:
        return make_env(env_id, task=task, seed=seed)
    from metacpo.compat import import_safety_gymnasium

    sg = import_safety_gymnasium()
    try:
        env = sg.make(env_id)
    except Exception as exc:  # gymnasium raises several error types for unknown ids
        raise ValueError(f"unknown environment id {env_id!r}: {exc}") from None
    if task is not None:
        set_task(env, task)
    return env


def set_task(env: Any, task: Task) -> None:
    """Switch ``env`` to ``task`` (effective at the next reset); ValueError if it has no tasks."""
    target = getattr(env, "unwrapped", env)
    if not hasattr(target, "set_task"):
        raise ValueError(f"environment {type(target).__name__} does not support tasks (no set_task)")
    target.set_task(task)


def env_dims(env: Any) -> tuple[int, int]:
    """(obs_dim, act_dim) of a Box-observation, Box-action environment."""
    obs_shape = env.observation_space.shape
    act_shape = env.action_space.shape
    if obs_shape is None or act_shape is None or len(obs_shape) != 1 or len(act_shape) != 1:
        raise ValueError(
            f"need flat Box observation and action spaces, got {env.observation_space} / {env.action_space}"
        )
    return int(obs_shape[0]), int(act_shape[0])


@dataclass(frozen=True)
class EnvInfo:
    """What the algorithms need to know of an environment before building their modules."""

    obs_dim: int
    act_dim: int
    episode_steps: int | None
    """The env's time limit (``spec.max_episode_steps``); None when it has none."""


def env_info(env_id: str) -> EnvInfo:
    """Build ``env_id`` once, read its dims and time limit, close it (ValueError on unknown ids)."""
    env = make_env_for(env_id)
    try:
        limit = getattr(getattr(env, "spec", None), "max_episode_steps", None)
        return EnvInfo(*env_dims(env), episode_steps=int(limit) if limit else None)
    finally:
        env.close()


_NP_ACTIVATIONS = {
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "elu": lambda x: np.where(x > 0.0, x, np.expm1(np.minimum(x, 0.0))),
}
_NP_ACTIVATIONS_INTO: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "tanh": np.tanh,  # np.tanh(x, out) writes into out and returns it
    "relu": lambda x, out: np.maximum(x, 0.0, out),
    "elu": lambda x, out: _NP_ACTIVATIONS["elu"](x),  # a fresh array (rare; not worth a buffer)
}
"""The activations as ``f(x, out) -> result``, writing into ``out`` where that is cheap: the same
values as :data:`_NP_ACTIVATIONS` (the same elementwise operations)."""
_LOG_SQRT_2PI = 0.5 * float(np.log(2.0 * np.pi))


def row_dots(x: np.ndarray) -> list[float]:
    """``[float(np.dot(r, r)) for r in x]`` in one call: ``matmul`` of ``(N, 1, d) @ (N, d, 1)``
    computes each ``1 x 1`` output with the dtype's ``dot`` kernel (the one ``np.dot`` of two
    vectors uses), so the values are the same (tests/unit/test_rollout_fast.py checks)."""
    return np.matmul(x[:, None, :], x[:, :, None])[:, 0, 0].tolist()


class NumpyActor:
    """The policy's mean network and log-std as numpy arrays, for one action at a time.

    Acting is the hot loop of sampling; a torch forward of these small nets costs ~10x more than
    the same matrix products in numpy (dispatch, autograd bookkeeping, building a
    ``Normal``). Weights are copied from ``policy`` at construction (once per rollout) and the
    arithmetic is done in the policy's dtype, so actions and log-probabilities agree with
    :meth:`GaussianMLPPolicy.log_prob` to rounding (the driver recomputes log-probs in torch and
    checks the gap).
    """

    def __init__(self, policy: GaussianMLPPolicy) -> None:
        linears = [m for m in policy.mu if isinstance(m, torch.nn.Linear)]
        self.dtype = np.dtype(str(policy.log_std.dtype).replace("torch.", ""))
        self.layers = [
            (m.weight.detach().cpu().numpy().T.copy(), m.bias.detach().cpu().numpy().copy()) for m in linears
        ]
        self.log_std = policy.log_std.detach().cpu().numpy().copy()
        self.std = np.exp(self.log_std)
        self.act_dim = int(self.log_std.shape[0])
        self.activation = _NP_ACTIVATIONS[policy.spec.activation]
        self.activation_into = _NP_ACTIVATIONS_INTO[policy.spec.activation]
        self._lp_const = float(-self.log_std.sum() - self.act_dim * _LOG_SQRT_2PI)

    def mean(self, obs: np.ndarray) -> np.ndarray:
        h = np.asarray(obs, dtype=self.dtype)
        last = len(self.layers) - 1
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < last:
                h = self.activation(h)
        return h

    def stepper(
        self, obs_norm: NormalizerState
    ) -> Callable[[np.ndarray, np.ndarray | None, float | None], tuple[np.ndarray, float]]:
        """``(raw obs, noise, noise_sq=None) -> (action, log pi)``: ``act(obs_norm.normalize(obs), noise)``
        in one call; ``noise_sq``, when given, is ``float(np.dot(noise, noise))`` computed ahead
        (:func:`row_dots` over a block of noise).

        The same floating-point operations in the same order (bit-identical), in fewer and cheaper
        numpy calls: the normaliser's denominator ``sqrt(var + eps)`` and its clip bounds (as
        arrays: a Python-float bound costs a conversion per call) are made once; every layer is
        ``np.dot`` (the BLAS ``gemv`` of ``h @ w``) and ``+ b`` into a preallocated buffer,
        activated in place. ``noise`` may already be in the policy dtype (:func:`_rollout_steps`
        converts its noise blocks once). The action is a fresh float64 array; the buffers are
        this stepper's own (one stepper per rollout).
        """
        mean_, den = np.asarray(obs_norm.mean, dtype=np.float64), np.sqrt(obs_norm.var + obs_norm.eps)
        lo, hi = np.full(mean_.shape, -obs_norm.clip), np.full(mean_.shape, obs_norm.clip)
        dtype, std, lp_const, activation = self.dtype, self.std, self._lp_const, self.activation_into
        *hidden, (w_out, b_out) = self.layers
        layers = [(w, b, np.empty(b.shape, dtype)) for w, b in hidden]
        z, h_in, m, f64 = np.empty(mean_.shape), np.empty(mean_.shape, dtype), np.empty(b_out.shape, dtype), np.float64
        subtract, divide, clip, dot, add, multiply = (
            np.subtract, np.divide, np.core.umath.clip, np.dot, np.add, np.multiply)

        def step(obs: np.ndarray, noise: np.ndarray | None, noise_sq: float | None = None) -> tuple[np.ndarray, float]:
            subtract(obs, mean_, z)  # in float64 (obs cast exactly, as np.asarray(obs, float64) does)
            divide(z, den, z)
            h_in[...] = clip(z, lo, hi, z)  # rounded to the policy dtype as astype does
            h = h_in
            for w, b, buf in layers:
                h = activation(add(dot(h, w, buf), b, buf), buf)
            add(dot(h, w_out, m), b_out, m)
            if noise is None:
                return m.astype(f64), lp_const
            e = noise if noise.dtype is dtype else noise.astype(dtype)
            sq = float(dot(e, e)) if noise_sq is None else noise_sq
            return add(m, multiply(std, e)).astype(f64), lp_const - 0.5 * sq

        return step

    def act(self, obs: np.ndarray, noise: np.ndarray | None) -> tuple[np.ndarray, float]:
        """``(action, log pi(action|obs))``: the mean when ``noise`` is None, else mean + std * noise."""
        mean = self.mean(obs)
        if noise is None:
            return mean.astype(np.float64), self._lp_const
        z = noise.astype(self.dtype)
        action = mean + self.std * z
        return action.astype(np.float64), self._lp_const - 0.5 * float(np.dot(z, z))


class StackedActors:
    """Several :meth:`NumpyActor.stepper` s applied at once, one observation row each.

    Row ``k`` gets actor ``k``'s weights and normaliser ``k``'s statistics; every layer is one
    stacked ``matmul`` (``(K, 1, n) @ (K, n, m)``, also when rows share an actor: cheaper here than
    a ``(K, n) @ (n, m)`` product plus broadcasting) and every other operation is elementwise, so
    each row goes through the same floating-point operations as the single stepper. The clip bounds
    are ``(K, n)`` arrays (a Python-float bound costs a conversion per call) and the biases and
    activations work in place on each layer's product.
    tests/unit/test_rollout_fast.py checks that the rows equal the single stepper's results bit for
    bit (a BLAS whose stacked products rounded differently from single ones would fail it).
    """

    def __init__(self, rows: Sequence[tuple[NumpyActor, NormalizerState]]) -> None:
        actors = [a for a, _ in rows]
        first = actors[0]
        if any(a.dtype != first.dtype or a.activation is not first.activation
               or [w.shape for w, _ in a.layers] != [w.shape for w, _ in first.layers] for a in actors):
            raise ValueError("StackedActors needs actors of one architecture, dtype and activation")
        self.dtype, self.activation, self.activation_into = first.dtype, first.activation, first.activation_into
        norms = [n for _, n in rows]
        self.mean = np.stack([np.asarray(n.mean, dtype=np.float64) for n in norms])
        self.den = np.stack([np.sqrt(n.var + n.eps) for n in norms])
        self.lo = np.stack([np.full(self.mean.shape[1:], -n.clip) for n in norms])
        self.hi = np.stack([np.full(self.mean.shape[1:], n.clip) for n in norms])
        self.layers = [(np.stack([a.layers[i][0] for a in actors]),
                        np.stack([a.layers[i][1] for a in actors])[:, None, :]) for i in range(len(first.layers))]
        self.std = np.stack([a.std for a in actors])
        self.lp_const = [a._lp_const for a in actors]  # pylint: disable=protected-access

    def __call__(self, obs: np.ndarray, noise: Sequence[np.ndarray | None],
                 noise_sq: Sequence[float | None] | None = None) -> list[tuple[np.ndarray, float]]:
        """``[(action, log pi)]`` per row of ``obs`` (raw observations), as each row's stepper gives
        (``noise_sq``: each noise row's ``float(np.dot(e, e))`` where known ahead, as the stepper's)."""
        add, matmul = np.add, np.matmul
        z = np.subtract(obs, self.mean)
        np.divide(z, self.den, z)
        h = np.core.umath.clip(z, self.lo, self.hi, z).astype(self.dtype)[:, None, :]
        *hidden, (w_out, b_out) = self.layers
        activation = self.activation_into
        for w, b in hidden:
            h = matmul(h, w)
            h = activation(add(h, b, h), h)
        m = matmul(h, w_out)
        m = add(m, b_out, m)[:, 0, :]
        f64, dot = np.float64, np.dot
        if all(e is not None for e in noise):
            e = np.array(noise, dtype=self.dtype)
            actions = add(m, np.multiply(self.std, e)).astype(f64)
            if noise_sq is None or None in noise_sq:
                noise_sq = row_dots(e)
            return [(a, c - 0.5 * sq) for a, c, sq in zip(actions, self.lp_const, noise_sq)]
        out = []
        for k, (c, nk) in enumerate(zip(self.lp_const, noise)):
            if nk is None:
                out.append((m[k].astype(f64), c))
            else:
                ek = nk.astype(self.dtype)
                out.append(((m[k] + self.std[k] * ek).astype(f64), c - 0.5 * float(dot(ek, ek))))
        return out


def per_task_snapshots(
    snapshot: "PolicySnapshot | Sequence[PolicySnapshot]", num_tasks: int
) -> list["PolicySnapshot"]:
    """One snapshot per task: a single snapshot is shared by all tasks; a sequence must match."""
    if isinstance(snapshot, PolicySnapshot):
        return [snapshot] * num_tasks
    snaps = list(snapshot)
    if len(snaps) != num_tasks or not all(isinstance(s, PolicySnapshot) for s in snaps):
        raise ValueError(
            f"got {len(snaps)} policy snapshots for {num_tasks} tasks: pass one PolicySnapshot, "
            "or one per task"
        )
    return snaps


def run_jobs(
    env: Any,
    policy: GaussianMLPPolicy | None,
    snapshots: Sequence["PolicySnapshot"],
    work: Sequence[tuple["Job", Task]],
    rng: np.random.Generator,
    *,
    worker: int,
) -> tuple[GaussianMLPPolicy | None, list[tuple["Job", Batch]]]:
    """What every worker (local, process, Ray) does with its share of one sample call.

    Runs ``work`` in order, job ``j`` on task ``task`` with ``snapshots[j.task_index]``, and
    returns the (possibly rebuilt) worker policy with the ``(job, batch)`` parts.
    """
    out: list[tuple[Job, Batch]] = []
    loaded: PolicySnapshot | None = None
    for job, task in work:
        snap = snapshots[job.task_index]
        if policy is None or policy.spec != snap.spec:
            policy, loaded = GaussianMLPPolicy(snap.spec), None
        if snap is not loaded:
            snap.load_into(policy)
            loaded = snap
        if task is not None:
            set_task(env, task)
        b = rollout(env, policy, snap.obs_norm, job.num_steps, rng, deterministic=snap.deterministic, task=task)
        b.info["worker"] = worker
        out.append((job, b))
    return policy, out


def run_jobs_lockstep(
    envs: Mapping[int, Any],
    policy: GaussianMLPPolicy | None,
    snapshots: Sequence["PolicySnapshot"],
    work: Sequence[tuple["Job", Task]],
    rngs: Mapping[int, np.random.Generator],
) -> tuple[GaussianMLPPolicy | None, list[tuple["Job", Batch]]]:
    """:func:`run_jobs` for several shares at once, their envs stepped in lockstep.

    Share ``v`` (a key of ``envs`` and ``rngs``) runs its jobs (``job.worker == v``, in order) on
    ``envs[v]`` with ``rngs[v]``, exactly as ``run_jobs(envs[v], ..., rngs[v], worker=v)`` would;
    at every step the actions of all running shares come from one :class:`StackedActors` pass
    instead of one policy call each (a job left running alone gets its own stepper). Each share draws from its own generator in its own order, so
    the batches are those of the shares run one after another (bit for bit, tested).
    """
    shares = list(envs)
    queues = {v: [(job, task) for job, task in work if job.worker == v] for v in shares}
    specs = {snapshots[job.task_index].spec for job, _ in work}
    if len(specs) > 1:  # one architecture per pass; several (never the case in training): one by one
        out_all: list[tuple[Job, Batch]] = []
        for v in shares:
            policy, out = run_jobs(envs[v], policy, snapshots, queues[v], rngs[v], worker=v)
            out_all.extend(out)
        return policy, out_all
    if not specs:
        return policy, []
    (spec,) = specs
    if policy is None or policy.spec != spec:
        policy = GaussianMLPPolicy(spec)
    results = _step_shares_in_lockstep(envs=envs, rngs=rngs, queues=queues, snapshots=snapshots, policy=policy)
    return policy, [item for v in shares for item in results[v]]


def run_pieces(
    envs: Mapping[int, Any],
    policy: GaussianMLPPolicy | None,
    snapshots: Sequence["PolicySnapshot"],
    queues: Mapping[int, list[tuple["Piece", Task]]],
    last_resets: dict[int, tuple[Task, int]],
) -> tuple[GaussianMLPPolicy | None, list[tuple["Piece", Batch]]]:
    """Run the pieces queued for each env (a key of ``envs``), the envs stepped in lockstep as in
    :func:`run_jobs_lockstep`; each piece is its one episode with its own seeds (no generator of
    the worker is used). ``last_resets[v]``: ``(task, seed)`` of env ``v``'s last reset, kept up to
    date; a piece whose ``prev`` is not that reset gets it repeated first. Returns the worker
    policy and ``(piece, batch)`` in no particular order."""
    out: list[tuple[Piece, Batch]] = []
    specs = list(dict.fromkeys(snapshots[p.task_index].spec for q in queues.values() for p, _ in q))
    for spec in specs:  # one architecture per pass (one in training)
        if policy is None or policy.spec != spec:
            policy = GaussianMLPPolicy(spec)
        sub = {v: [(p, t) for p, t in q if snapshots[p.task_index].spec == spec] for v, q in queues.items()}
        results = _step_shares_in_lockstep(envs=envs, rngs={}, queues=sub, snapshots=snapshots, policy=policy,
                                           last_resets=last_resets)
        out.extend(item for items in results.values() for item in items)
    return policy, out


def note_last_resets(last_resets: "dict[int, tuple[Task, int]] | list[tuple[Task, int] | None]",
                     work: Sequence[tuple["Job", Task]], outputs: Sequence[tuple["Job", Batch]]) -> None:
    """After jobs ran as planned (``outputs`` in each share's order): record each share's last
    reset ``(task, seed)`` at ``last_resets[share]`` (for :func:`run_pieces`)."""
    tasks = {job: task for job, task in work}
    for job, b in outputs:
        if b.info["episode_seeds"]:
            last_resets[job.worker] = (tasks[job], b.info["episode_seeds"][-1])


def repeat_reset(env: Any, key: int, last_resets: dict[int, tuple[Task, int]], reset: tuple[Task, int]) -> None:
    """Make ``reset`` (``(task, seed)``) the last reset of ``env`` (``last_resets[key]``), repeating
    it unless it already is (see :attr:`Piece.prev`)."""
    if last_resets.get(key) != reset:
        task, seed = reset
        if task is not None:
            set_task(env, task)
        env.reset(seed=seed)
        last_resets[key] = reset


class _RunningJob:
    """A job in progress in :func:`run_jobs_lockstep`: its :func:`_rollout_steps` generator, the
    ``(raw obs, noise, noise_sq)`` it waits on, and the actor and normaliser that answer it."""

    __slots__ = ("share", "job", "steps", "request", "actor", "obs_norm", "batch")

    def __init__(self, *, share: int, job: Job, steps: RolloutSteps, actor: NumpyActor,
                 obs_norm: NormalizerState) -> None:
        self.share, self.job, self.steps, self.actor, self.obs_norm = share, job, steps, actor, obs_norm
        self.request = next(steps)
        self.batch: Batch | None = None

    def advance(self, answer: tuple[np.ndarray, float]) -> bool:
        """Send ``(action, log pi)``; True when that ended the job (its batch is then in ``batch``)."""
        try:
            self.request = self.steps.send(answer)
        except StopIteration as done:
            self.batch = done.value
            self.batch.info["worker"] = self.share
            return True
        return False


def _step_shares_in_lockstep(
    *,
    envs: Mapping[int, Any],
    rngs: Mapping[int, np.random.Generator],
    queues: Mapping[int, list[tuple["Job | Piece", Task]]],
    snapshots: Sequence["PolicySnapshot"],
    policy: GaussianMLPPolicy,
    last_resets: dict[int, tuple[Task, int]] | None = None,
) -> dict[int, list[tuple[Any, Batch]]]:
    """The loop of :func:`run_jobs_lockstep` (snapshots of ``policy``'s architecture): every share
    runs its queue, a job starting as the previous one ends; the ``(job, batch)`` parts by share."""
    actors: dict[int, NumpyActor] = {}  # by snapshot identity

    def start(v: int) -> _RunningJob:
        job, task = queues[v].pop(0)
        snap = snapshots[job.task_index]
        if id(snap) not in actors:
            actors[id(snap)] = NumpyActor(snap.load_into(policy))
        piece = job if isinstance(job, Piece) else None
        if piece is not None and last_resets is not None:
            repeat_reset(envs[v], v, last_resets, piece.prev)  # the reset before it, as planned
            last_resets[v] = (task, piece.reset_seed)
        if task is not None:
            set_task(envs[v], task)
        steps = _rollout_steps(envs[v], policy.spec.act_dim, job.num_steps, rngs.get(v) if piece else rngs[v],
                               deterministic=snap.deterministic, task=task, max_episodes=None,
                               noise_dtype=actors[id(snap)].dtype, piece=piece)
        return _RunningJob(share=v, job=job, steps=steps, actor=actors[id(snap)], obs_norm=snap.obs_norm)

    queues = {v: list(q) for v, q in queues.items()}  # popped as they start
    results: dict[int, list[tuple[Any, Batch]]] = {v: [] for v in queues}
    running = [start(v) for v in queues if queues[v]]
    stacked: StackedActors | None = None  # rebuilt when the running jobs change
    while running:
        if len(running) == 1:  # one job left: its own stepper to its end (cheaper than a 1-row stack)
            row = running[0]
            act = row.actor.stepper(row.obs_norm)
            while not row.advance(act(*row.request)):
                pass
            ended = [0]
        else:
            if stacked is None:
                stacked = StackedActors([(r.actor, r.obs_norm) for r in running])
            obs, noise, noise_sq = zip(*[r.request for r in running])
            answers = stacked(np.array(obs), noise, noise_sq)
            ended = [i for i, (row, answer) in enumerate(zip(running, answers)) if row.advance(answer)]
        for i in reversed(ended):
            row = running.pop(i)
            results[row.share].append((row.job, row.batch))
            if queues[row.share]:
                running.append(start(row.share))
            stacked = None
    return results


def rollout(
    env: Any,
    policy: GaussianMLPPolicy,
    obs_norm: NormalizerState,
    num_steps: int,
    rng: np.random.Generator,
    *,
    deterministic: bool = False,
    task: Task = None,
    max_episodes: int | None = None,
) -> Batch:
    """Run ``policy`` for ``num_steps`` steps (or ``max_episodes`` episodes) from fresh episodes.

    Every episode is reset with its own seed drawn from ``rng``. Actions are sampled from the
    policy (or its mean when ``deterministic``), stored unclipped and clipped to the action box
    for the env. The batch always ends on an episode boundary: if ``num_steps`` runs out
    mid-episode the last step is marked ``truncated`` (its next state is bootstrapped) and ``cut``,
    and ``info['cut']`` is True. Only episodes that ended by termination or the env's time limit count
    in ``episode_returns/costs/lengths``.

    The per-step work outside the env is kept small (this loop runs once per env step): the
    normaliser's denominator is computed once, the action noise is drawn in blocks (the same
    numbers as one draw per step), the policy's layers are applied by :meth:`NumpyActor.stepper`
    and transitions are written into preallocated arrays. The batch is bit-identical to the one
    a step-by-step loop over ``obs_norm.normalize``, :meth:`NumpyActor.act` and ``np.clip``
    builds (tests/unit/test_rollout_fast.py).
    """
    actor = NumpyActor(policy)
    act = actor.stepper(obs_norm)
    steps = _rollout_steps(env, policy.spec.act_dim, num_steps, rng, deterministic=deterministic, task=task,
                           max_episodes=max_episodes, noise_dtype=actor.dtype)
    request = next(steps)
    try:
        while True:
            request = steps.send(act(*request))
    except StopIteration as done:
        return done.value


def _rollout_steps(
    env: Any,
    act_dim: int,
    num_steps: int,
    rng: np.random.Generator,
    *,
    deterministic: bool,
    task: Task,
    max_episodes: int | None,
    noise_dtype: np.dtype | type = np.float64,
    piece: "Piece | None" = None,
) -> RolloutSteps:
    """The body of :func:`rollout` with the policy left out: yields ``(raw obs, noise, noise_sq)`` at every
    step and is sent ``(action, log pi)`` back; returns the batch. :func:`rollout` answers with one
    policy, :func:`run_jobs_lockstep` with one batched forward for several of these at once.

    ``noise`` is the standard-normal draw in ``noise_dtype`` (the policy's; converted a block at a
    time), with its ``float(np.dot(noise, noise))`` (:func:`row_dots` of the block). The step loop
    keeps its state in local names and writes as little as it can per step (what
    :class:`_RolloutRecord` says); what happens once per rollout or per episode is there.

    ``piece`` (``rng`` unused): run only that one episode of a planned job with its given seeds
    and noise rows (:mod:`metacpo.samplers.episodes`); ``info['early_end']`` says whether it ended
    before ``num_steps`` (then the piece is not what the job would have run).
    """
    if num_steps <= 0:
        raise ValueError(f"num_steps must be positive, got {num_steps}")
    t0 = time.perf_counter()
    capacity = num_steps if max_episodes is None else 1024  # exactly num_steps rows when the budget bounds the batch
    noise_rng, skip, block, seeds = _rollout_draws(rng, piece, capacity)
    low, high = env.action_space.low, env.action_space.high
    clip = np.core.umath.clip
    record = _RolloutRecord(capacity=capacity, obs_shape=tuple(env.observation_space.shape), act_dim=act_dim)
    next_a, act_a, lp_a, term_a, trunc_a, cut_a = record.arrays()
    rew_l, cost_l = record.rewards, record.costs
    stop = num_steps if max_episodes is None else 0  # the step count that cuts the batch (0: never)
    noises = (itertools.repeat((None, None)) if deterministic else
              _noise_stream(noise_rng, block=block, act_dim=act_dim, dtype=noise_dtype, skip=skip))
    steps = 0
    while True:
        obs = record.start_episode(env, draw_reset_seed(rng) if seeds is None else seeds.pop(), row=steps)
        ret = cst = 0.0
        length = 0
        while True:
            noise, sq = next(noises)
            action, lp = yield obs, noise, sq
            obs, r, c, term, trunc, _ = env.step(clip(action, low, high))
            if steps == len(next_a):
                next_a, act_a, lp_a, term_a, trunc_a, cut_a = record.grow()
            next_a[steps] = obs
            act_a[steps] = action
            lp_a[steps] = lp
            r = float(r)
            c = float(c)
            rew_l.append(r)
            cost_l.append(c)
            ret += r
            cst += c
            steps += 1
            length += 1
            if term or trunc:
                term_a[steps - 1] = bool(term)
                trunc_a[steps - 1] = bool(trunc) or (steps == stop and not term)
                record.end_episode(ep_return=ret, ep_cost=cst, length=length)
                break
            if steps == stop:
                trunc_a[steps - 1] = cut_a[steps - 1] = True
                record.was_cut = True
                break
        enough = steps >= num_steps if max_episodes is None else len(record.episode_returns) >= max_episodes
        if enough or seeds is not None:  # a piece is one episode
            break
    batch = record.batch(steps, task=task, seconds=time.perf_counter() - t0)
    if piece is not None:
        batch.info["early_end"] = steps < num_steps
    return batch


def _rollout_draws(rng: np.random.Generator | None, piece: "Piece | None",
                   capacity: int) -> tuple[np.random.Generator, int, int, list[int] | None]:
    """A rollout's noise generator, first noise row, noise block size and reset seeds: from ``rng``
    (its first draw seeds the noise; reset seeds None = one draw per episode, later), or given by
    ``piece`` (one episode of a planned job, :mod:`metacpo.samplers.episodes`)."""
    if piece is None:
        if rng is None:
            raise ValueError("a rollout needs a generator (rng) or a piece with its seeds")
        return np.random.default_rng(draw_noise_seed(rng)), 0, min(capacity, 4096), None
    return np.random.default_rng(piece.noise_seed), piece.row, piece.noise_block, [piece.reset_seed]


def draw_noise_seed(rng: np.random.Generator) -> int:
    """The seed of a rollout's action-noise generator: the first draw of every rollout."""
    return int(rng.integers(2**62))


def draw_reset_seed(rng: np.random.Generator) -> int:
    """An episode's reset seed: one draw per episode, after the noise seed."""
    return int(rng.integers(2**31 - 1))


def _noise_stream(noise_rng: np.random.Generator, *, block: int, act_dim: int,
                  dtype: np.dtype | type, skip: int = 0) -> Iterator[tuple[np.ndarray, float]]:
    """``(noise, float(np.dot(noise, noise)))`` per step, drawn ``block`` steps at a time:
    ``Generator.standard_normal`` fills row after row, so block row k equals the k-th per-step draw
    of ``act_dim`` numbers (the generator is the rollout's own); converting a block to ``dtype``
    converts each row as the policy would. ``skip``: start at row ``skip`` of the stream (the
    blocks before it are drawn as the whole rollout draws them, then dropped)."""
    while True:
        noise = noise_rng.standard_normal((block, act_dim)).astype(dtype)
        if skip >= block:
            skip -= block
            continue
        rows = zip(noise, row_dots(noise))
        if skip:
            rows, skip = itertools.islice(rows, skip, None), 0
        yield from rows


class _RolloutRecord:
    """What one rollout writes down: the transitions (preallocated arrays, doubled when full, and
    two per-step lists), each episode's first observation and reset seed and, once it ends by
    termination or time limit, its return, cost and length.

    Per step the loop writes the next observation, action, log-prob, reward and cost only: the
    flags are preset to False and set at an episode's last step, and each observation row but an
    episode's first is the previous row's next observation, filled in once by :meth:`batch`."""

    def __init__(self, *, capacity: int, obs_shape: tuple[int, ...], act_dim: int) -> None:
        self.next_obs = np.empty((capacity, *obs_shape))
        self.actions = np.empty((capacity, act_dim))
        self.log_probs = np.empty(capacity)
        self.terminated = np.zeros(capacity, dtype=bool)
        self.truncated = np.zeros(capacity, dtype=bool)
        self.cut = np.zeros(capacity, dtype=bool)
        self.rewards: list[float] = []
        self.costs: list[float] = []
        self.first_obs: list[tuple[int, np.ndarray]] = []
        """``(row, observation)`` of every episode's reset."""
        self.episode_seeds: list[int] = []
        self.episode_returns: list[float] = []
        self.episode_costs: list[float] = []
        self.episode_lengths: list[int] = []
        self.was_cut = False
        """Whether the step budget ended the last episode (the batch's ``info['cut']``)."""

    def arrays(self) -> tuple[np.ndarray, ...]:
        """``(next_obs, actions, log_probs, terminated, truncated, cut)``, the arrays the step
        loop writes into (the flags are False until set)."""
        return self.next_obs, self.actions, self.log_probs, self.terminated, self.truncated, self.cut

    def grow(self) -> tuple[np.ndarray, ...]:
        """Double the arrays (the rows written so far kept) and return them as :meth:`arrays`."""
        (self.next_obs, self.actions, self.log_probs, self.terminated, self.truncated, self.cut) = (
            np.concatenate([x, np.zeros_like(x)]) for x in self.arrays())
        return self.arrays()

    def start_episode(self, env: Any, seed: int, *, row: int) -> np.ndarray:
        """Reset ``env`` with ``seed`` (recorded); the first observation (the observation of
        transition ``row``)."""
        self.episode_seeds.append(seed)
        obs, _ = env.reset(seed=seed)
        self.first_obs.append((row, np.array(obs, dtype=np.float64)))
        return obs

    def end_episode(self, *, ep_return: float, ep_cost: float, length: int) -> None:
        """An episode ended by termination or the env's time limit."""
        self.episode_returns.append(ep_return)
        self.episode_costs.append(ep_cost)
        self.episode_lengths.append(length)

    def observations(self, steps: int) -> np.ndarray:
        """The observation of each of the first ``steps`` transitions: the previous transition's
        next observation, or the reset's at an episode's first step."""
        obs = np.empty((steps, *self.next_obs.shape[1:]))
        obs[1:] = self.next_obs[: steps - 1]
        for row, first in self.first_obs:
            if row < steps:
                obs[row] = first
        return obs

    def batch(self, steps: int, *, task: Task, seconds: float) -> Batch:
        """The first ``steps`` transitions as a :class:`Batch` (the arrays themselves when full)."""

        def rows(x: np.ndarray) -> np.ndarray:
            return x[:steps].copy() if steps < len(x) else x

        return Batch(
            obs=self.observations(steps),
            actions=rows(self.actions),
            rewards=np.asarray(self.rewards),
            costs=np.asarray(self.costs),
            terminated=rows(self.terminated),
            truncated=rows(self.truncated),
            cut=rows(self.cut),
            next_obs=rows(self.next_obs),
            log_probs=rows(self.log_probs),
            episode_returns=np.asarray(self.episode_returns, dtype=np.float64),
            episode_costs=np.asarray(self.episode_costs, dtype=np.float64),
            episode_lengths=np.asarray(self.episode_lengths, dtype=np.int64),
            task=task,
            info={"cut": self.was_cut, "episode_seeds": self.episode_seeds, "sample_seconds": seconds},
        )


@dataclass(frozen=True)
class Job:
    """One unit of sampling work: ``num_steps`` steps on ``tasks[task_index]`` by ``worker``."""

    task_index: int
    part: int
    num_steps: int
    worker: int


@dataclass(frozen=True)
class Piece:
    """Episode ``episode`` of ``job``, with what the job's generator would give it: the reset seed,
    the seed of the job's noise generator and the first noise row (``row``, in blocks of
    ``noise_block`` rows); ``num_steps`` steps (the time limit, or fewer for a job's cut last
    episode). Made by :func:`metacpo.samplers.episodes.plan_pieces`."""

    job: Job
    episode: int
    num_steps: int
    reset_seed: int
    noise_seed: int
    noise_block: int
    row: int
    prev: tuple[Task, int]
    """``(task, reset seed)`` of the reset before this episode's on its share's env, as planned. A
    reset's state is a function of its task and seed only once the env has been reset before: the
    first reset of a fresh env builds the world from scratch, and for Car that state differs from
    any later reset's by ~1e-16 (measured on Car Button and Car Goal; reused and rebuilt models are
    equal). So the worker repeats this reset first unless its env's last reset was this one
    (:func:`run_pieces`): exact whenever a reset depends on at most the reset before it."""

    @property
    def task_index(self) -> int:
        return self.job.task_index


def episode_limit(env_id: str) -> int:
    """The time limit (steps per episode) ``env_id`` is registered with (gymnasium's registry).

    ValueError when the id is unknown or registered without a limit: work is split over workers
    in whole episodes (:func:`plan_jobs`), so the sampler must know how long one is.
    """
    from metacpo.compat import import_safety_gymnasium

    import_safety_gymnasium()  # registers Safety-Gymnasium's ids and ours
    import gymnasium.envs.registration as reg

    spec = reg.registry.get(env_id)
    if spec is None:
        raise ValueError(f"unknown environment id {env_id!r}: not registered with Safety-Gymnasium")
    if not spec.max_episode_steps or spec.max_episode_steps <= 0:
        raise ValueError(f"environment {env_id!r} has no time limit (max_episode_steps); "
                         "metacpo needs episodes of bounded length")
    return int(spec.max_episode_steps)


def plan_jobs(*, num_tasks: int, num_steps: int, num_workers: int, episode_steps: int) -> list[Job]:
    """Spread ``num_tasks x num_steps`` steps over workers (deterministic), in whole episodes.

    With at least as many tasks as workers, whole tasks go round-robin to workers. With fewer,
    a task is split over up to ``num_workers // num_tasks`` (or one more) workers, but never
    into more parts than it has whole episodes (``num_steps // episode_steps``): every part is a
    whole number of episodes' worth of steps, and the remainder ``num_steps mod episode_steps``
    goes to the last part. Each part thus completes at least one episode (episodes last at most
    ``episode_steps`` steps), wherever the parts land in the merged batch, and the task's batch
    still has exactly ``num_steps`` steps. With ``num_steps < episode_steps`` the task is not split
    (one fragment); no episode completes, and processing such a batch for an update is an error
    (:class:`metacpo.data.gae.NoCompleteEpisodeError`), never a silent estimate.
    """
    if num_tasks <= 0 or num_steps <= 0 or num_workers <= 0 or episode_steps <= 0:
        raise ValueError(
            f"plan_jobs needs positive sizes, got tasks={num_tasks}, steps={num_steps}, workers={num_workers}, "
            f"episode_steps={episode_steps}"
        )
    jobs: list[Job] = []
    if num_tasks >= num_workers:
        for k in range(num_tasks):
            jobs.append(Job(task_index=k, part=0, num_steps=num_steps, worker=k % num_workers))
        return jobs
    base, extra = divmod(num_workers, num_tasks)
    episodes, remainder = divmod(num_steps, episode_steps)
    w = 0
    for k in range(num_tasks):
        parts = max(1, min(base + (1 if k < extra else 0), episodes))
        q, r = divmod(episodes, parts)
        for p in range(parts):
            steps = (q + (1 if p < r else 0)) * episode_steps + (remainder if p == parts - 1 else 0)
            jobs.append(Job(task_index=k, part=p, num_steps=steps, worker=w))
            w += 1
    return jobs


def plan_call(
    snapshot: "PolicySnapshot | Sequence[PolicySnapshot]",
    *,
    tasks: Sequence[Task] | None,
    num_steps: int,
    num_workers: int,
    episode_steps: int | None,
) -> tuple[list[Task], list["PolicySnapshot"], list[Job]]:
    """What every backend's :meth:`Sampler.sample` starts with: the task list (``[None]``, the
    env's own task, for ``tasks=None``), one snapshot per task (:func:`per_task_snapshots`) and the
    jobs (:func:`plan_jobs`)."""
    task_list: list[Task] = [None] if tasks is None else list(tasks)
    snapshots = per_task_snapshots(snapshot, len(task_list))
    jobs = plan_jobs(num_tasks=len(task_list), num_steps=num_steps, num_workers=num_workers,
                     episode_steps=episode_steps)
    return task_list, snapshots, jobs


def merge_parts(parts: Sequence[Batch], *, task: Task) -> Batch:
    """Concatenate a task's parts (each ends on an episode boundary) into its batch."""
    merged = Batch.concat(list(parts))
    merged.task = task
    merged.info = {
        "cut": any(p.info.get("cut", False) for p in parts),
        "episode_seeds": [s for p in parts for s in p.info.get("episode_seeds", [])],
        "sample_seconds": max(p.info.get("sample_seconds", 0.0) for p in parts),
        "workers": [p.info.get("worker") for p in parts],
        "cut_flags": [p.info.get("cut", False) for p in parts],
    }
    return merged


def assemble(task_list: Sequence[Task], outputs: Sequence[tuple[Job, Batch]]) -> list[Batch]:
    """Per-task batches, in task order, from the ``(job, part)`` outputs of all workers."""
    parts: dict[int, list[tuple[int, Batch]]] = {k: [] for k in range(len(task_list))}
    for job, b in outputs:
        parts[job.task_index].append((job.part, b))
    return [
        merge_parts([b for _, b in sorted(parts[k], key=lambda x: x[0])], task=task_list[k])
        for k in range(len(task_list))
    ]


class Sampler(abc.ABC):
    """Collects batches of experience with a policy snapshot, one batch per task."""

    @abc.abstractmethod
    def sample(
        self,
        *,
        snapshot: PolicySnapshot | Sequence[PolicySnapshot],
        num_steps: int,
        tasks: Sequence[Task] | None = None,
    ) -> list[Batch]:
        """One :class:`Batch` of ``num_steps`` steps per entry of ``tasks`` (in order).

        ``snapshot`` is one policy for every task, or one per task (e.g. each task's adapted
        policy in a meta-iteration); either way all tasks are sampled in this one call, spread
        over the workers. ``tasks=None`` samples the env's own task and returns a one-element list.
        """

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """The workers' generator states (enough to continue a run exactly after ``--resume``)."""

    @abc.abstractmethod
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore generator states saved by :meth:`state_dict`."""

    @property
    @abc.abstractmethod
    def num_workers(self) -> int: ...

    def close(self) -> None:
        """Release workers and environments (idempotent)."""

    def __enter__(self) -> "Sampler":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def worker_rng(seed: int, worker: int) -> np.random.Generator:
    """The generator of worker ``worker`` in a run seeded with ``seed``."""
    return np.random.default_rng([int(seed), int(worker)])


def check_rng_states(state: Mapping[str, Any], num_workers: int) -> list[dict[str, Any]]:
    rngs = state.get("worker_rngs")
    if not isinstance(rngs, list) or len(rngs) != num_workers:
        got = len(rngs) if isinstance(rngs, list) else type(rngs).__name__
        raise ValueError(f"sampler state holds {got} worker generator states; this sampler has {num_workers} workers")
    return rngs


def resets_to_state(last_resets: Sequence[tuple[Task, int] | None]) -> list[dict[str, Any] | None]:
    """Each share's last reset ``(task, seed)`` as plain data for a checkpoint (``None``: unknown):
    ``{"task": task.as_dict() or None, "seed": int}``, numbers as Python numbers."""
    def plain(x: Any) -> Any:
        return x.item() if isinstance(x, np.generic) else x

    return [None if r is None else
            {"task": None if r[0] is None else {k: plain(v) for k, v in r[0].as_dict().items()}, "seed": int(r[1])}
            for r in last_resets]


def resets_from_state(env_id: str, state: Mapping[str, Any], num_shares: int) -> list[tuple[Task, int] | None]:
    """The inverse of :func:`resets_to_state` for a sampler of ``env_id`` (tasks rebuilt as the
    env's family's task type). A state without ``last_resets`` (older checkpoints) gives all
    ``None``: the next call then runs as planned and the envs' first resets are fresh ones."""
    saved = state.get("last_resets")
    if saved is None:
        return [None] * num_shares
    if not isinstance(saved, list) or len(saved) != num_shares:
        got = len(saved) if isinstance(saved, list) else type(saved).__name__
        raise ValueError(f"sampler state holds {got} last resets; this sampler has {num_shares} env shares")
    if any(r is not None and r["task"] is not None for r in saved):
        from metacpo.tasks.spec import get_family, parse_env_id

        task_type = get_family(parse_env_id(env_id)[1]).task_type
    return [None if r is None else (None if r["task"] is None else task_type(**r["task"]), int(r["seed"]))
            for r in saved]

"""The training loop shared by every algorithm: sampling backend, logging, checkpoints, resume.

An algorithm plugs in through the registry (:mod:`metacpo.algorithms.registry`): its builder
``build(config, *, sampler, obs_dim, act_dim)`` returns an object following :class:`Algorithm`;
each ``iterate(i)`` returns a stats record following :class:`IterationStats`. The loop owns
everything else: the run directory, config.yaml, progress.csv and TensorBoard (``log_row()``
keys), the tqdm bar (``summary()``), event messages (``events()``), and atomic checkpoints of
``state_dict()`` after each iteration. ``resume`` continues exactly where a run stopped.

Run directory layout::

    config.yaml       the full config (re-loadable preset)
    progress.csv      one row per iteration: iteration + log_row() columns
    tb/               TensorBoard event files
    checkpoint.pt     latest checkpoint (torch.load(weights_only=True) works)
    events.log        skipped updates, solver fallbacks, rejected line searches
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import yaml

from metacpo.fileio import check_output_dir, write_text_atomic
from metacpo.algorithms.registry import get_algorithm
from metacpo.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    config_from_saved,
    config_mismatch,
    load_checkpoint,
    load_run,
    save_checkpoint,
)
from metacpo.config.schema import TRAIN_SEED_LIMIT, TrainConfig
from metacpo.logging.writers import RunLogger, checked_progress
from metacpo.samplers.base import PolicySnapshot, Sampler, env_info, make_env_for

# Config keys that may differ between a checkpoint and the run resuming it.
RESUMABLE_CHANGES = ("run.iters", "run.run_dir", "sampler.ray_address", "env.fast")


@runtime_checkable
class IterationStats(Protocol):
    def log_row(self) -> dict[str, float | int | str]:
        """``group/name`` -> value; the keys must be the same every iteration."""
        ...

    def summary(self) -> dict[str, str]:
        """A few short figures for the progress bar."""
        ...

    def events(self) -> list[str]:
        """Noteworthy events of the iteration (logged to events.log and TensorBoard)."""
        ...


@runtime_checkable
class Algorithm(Protocol):
    def iterate(self, iteration: int) -> IterationStats: ...

    def state_dict(self) -> dict[str, Any]:
        """Tensors/numbers/strings only. Must contain ``policy`` (GaussianMLPPolicy state_dict)
        and ``obs_norm`` (RunningNormalizer state_dict): ``metacpo evaluate`` reads those."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...

    def policy_snapshot(self, *, deterministic: bool = False) -> PolicySnapshot: ...


def build_sampler(config: TrainConfig) -> Sampler:
    """The sampler named by ``config.sampler`` for ``config.env.env_id``."""
    from metacpo.samplers import make_sampler

    s = config.sampler
    workers = s.num_workers if s.kind == "process" or s.workers else None  # ray: None = the cluster's CPUs
    return make_sampler(s.kind, config.env.env_id, seed=config.run.seed, num_workers=workers,
                        ray_address=s.ray_address or None, task_setup=config.env.task_setup,
                        ray_connect_timeout=s.ray_connect_timeout, envs_per_worker=s.envs_per_worker,
                        spread_episodes=s.spread_episodes)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`train`; the message says what was saved and how to resume."""


def _check_sampling(config: TrainConfig, episode_steps: int | None, echo: Any) -> None:
    """Refuse or explain settings that are accepted by the schema but do not do what they say."""
    steps = config.sampler.steps_per_iter
    if episode_steps and steps < episode_steps:  # checked before any work (sampling would fail later)
        raise ValueError(f"--steps-per-iter {steps} (sampler.steps_per_iter) is shorter than one episode of "
                         f"{config.env.env_id} ({episode_steps} steps): no complete episode per iteration, so J_C "
                         f"cannot be estimated; pass --steps-per-iter >= {episode_steps}")
    meta = config.extra.get("meta")
    if meta is not None and getattr(meta, "inner_steps", 1) == 0:
        echo("warning: meta.inner_steps=0: no inner adaptation step, so the outer update trains the "
             "un-adapted policy on all tasks (multi-task learning, not meta-learning)")


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    iterations: int
    last_row: dict[str, Any]


def load_run_config(run_dir: str | os.PathLike[str]) -> TrainConfig:
    """The config saved in a run directory's checkpoint (falls back to config.yaml)."""
    run_dir = Path(run_dir)
    ck = run_dir / CHECKPOINT_NAME
    if ck.exists():
        return load_run(run_dir).config
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no {CHECKPOINT_NAME} or config.yaml)")
    return config_from_saved(yaml.safe_load(cfg_path.read_text()), source=cfg_path)


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    echo: Any = None,
) -> TrainResult:
    """Run (or, with ``resume``, continue) training in ``config.run.run_dir``.

    With ``resume`` the run dir's checkpoint is loaded; its config must equal ``config`` except
    for ``run.iters``/``run.run_dir``, else :class:`CheckpointError` lists the differences.
    Envs (here and in the sampler's workers) use the fast path unless ``env.fast`` is false.
    """
    from metacpo.tasks.builder import fast_envs

    with fast_envs(config.env.fast):
        return _train(config, resume=resume, progress=progress, echo=echo)


def _train(config: TrainConfig, *, resume: bool, progress: bool, echo: Any) -> TrainResult:
    run_dir = Path(config.run.run_dir or config.default_run_dir)
    echo = echo or (lambda msg: print(msg, file=sys.stderr))
    entry = get_algorithm(config.algo)
    if config.run.seed >= TRAIN_SEED_LIMIT:
        raise ValueError(f"--seed (run.seed) must be in [0, {TRAIN_SEED_LIMIT}) for training, got {config.run.seed}: "
                         "larger seeds are reserved for meta-testing (metacpo adapt refuses such runs)")
    config.env.task_setup.apply()  # custom families and range overrides (the workers apply them too)
    check_output_dir(run_dir)
    ckpt_path = run_dir / CHECKPOINT_NAME
    ckpt = _checkpoint_to_resume(config, run_dir=run_dir, ckpt_path=ckpt_path) if resume else None
    if ckpt is None and ckpt_path.exists():
        raise ValueError(f"{run_dir} already holds a run ({ckpt_path}); use --resume {run_dir} or another --run-dir")
    start = int(ckpt["iteration"]) if ckpt is not None else 0
    info = env_info(config.env.env_id)  # fails early (ValueError) on unknown env ids
    _check_sampling(config, info.episode_steps, echo)
    if config.run.torch_threads:
        torch.set_num_threads(config.run.torch_threads)

    created = not run_dir.exists()
    checkpoints = _Checkpoints(path=ckpt_path, config=config, saved=start)
    try:
        with contextlib.ExitStack() as open_resources:
            sampler = build_sampler(config)  # a Ray address nobody answers fails here, before the run dir exists
            open_resources.callback(sampler.close)
            algo = entry.build(config, sampler=sampler, obs_dim=info.obs_dim, act_dim=info.act_dim)
            if ckpt is not None:
                try:
                    algo.load_state_dict(ckpt["algorithm"])
                except (ValueError, KeyError, RuntimeError) as exc:
                    raise CheckpointError(f"checkpoint {ckpt_path} does not fit this run: {exc}") from None
            init_note = _initialise_from(algo, config, obs_dim=info.obs_dim, act_dim=info.act_dim) if ckpt is None else None
            run_dir.mkdir(parents=True, exist_ok=True)
            if init_note:
                echo(init_note)
                with (run_dir / "events.log").open("a") as f:
                    f.write(f"iteration 0: {init_note}\n")
            write_text_atomic(run_dir / "config.yaml", config.to_yaml())
            logger = RunLogger(run_dir, tensorboard=config.run.tensorboard, start_iteration=start)
            open_resources.callback(logger.close)
            bar = _progress(range(start, config.run.iters), start, config.run.iters, progress)
            last_row = _run_iterations(algo, bar=bar, sampler=sampler, logger=logger, run_dir=run_dir,
                                       checkpoints=checkpoints)
        return TrainResult(run_dir=run_dir, iterations=config.run.iters, last_row=last_row)
    except BaseException as exc:  # sampler and logger are closed by now
        _after_failure(exc, run_dir=run_dir, created=created, checkpoints=checkpoints)
        raise


def _after_failure(exc: BaseException, *, run_dir: Path, created: bool, checkpoints: "_Checkpoints") -> None:
    """Remove a run dir this call created if it holds no checkpoint (nothing in it can be resumed);
    turn Ctrl-C into :class:`TrainingInterrupted` saying what was saved and how to continue."""
    nothing_saved = created and not checkpoints.path.exists()
    if nothing_saved and run_dir.exists():
        shutil.rmtree(run_dir, ignore_errors=True)
    if isinstance(exc, KeyboardInterrupt):
        if nothing_saved:
            raise TrainingInterrupted(f"interrupted before the first checkpoint; nothing to resume "
                                      f"(removed {run_dir})") from None
        raise TrainingInterrupted(f"interrupted; {checkpoints.saved} iterations saved in {run_dir}; continue "
                                  f"with: metacpo train --resume {run_dir}") from None


def _initialise_from(algo: Algorithm, config: TrainConfig, *, obs_dim: int, act_dim: int) -> str | None:
    """Load ``run.init_from``'s trained policy, critics and normaliser into a fresh ``algo``;
    the line saying so (None without ``run.init_from``). ``ValueError`` naming the run when it
    cannot start this one (missing, another observation/action size or network size)."""
    source = config.run.init_from
    if not source:
        return None
    agent = getattr(algo, "agent", None)
    if agent is None:
        raise ValueError(f"run.init_from: algorithm {config.algo!r} cannot start from a saved run")
    try:
        saved = load_run(source)
    except (FileNotFoundError, CheckpointError) as exc:
        raise ValueError(f"run.init_from {source!r}: {exc}") from None
    src = env_info(saved.config.env.env_id)
    if (src.obs_dim, src.act_dim) != (obs_dim, act_dim):
        raise ValueError(f"run.init_from {source!r} was trained on {saved.config.env.env_id} (observation size "
                         f"{src.obs_dim}, action size {src.act_dim}); {config.env.env_id} has {obs_dim}, {act_dim}")
    try:
        agent.load_trained(saved.state, what=f"run.init_from {source!r}")
    except ValueError as exc:
        raise ValueError(f"run.init_from {source!r} does not fit this config: {exc}") from None
    steps = saved.state.get("counters", {}).get("env_steps")
    spent = f", {int(steps)} env steps" if steps is not None else ""
    return (f"initialised from {source} ({saved.config.algo} on {saved.config.env.env_id}, "
            f"{saved.iteration} iterations{spent}): policy, critics and observation normaliser")


def _checkpoint_to_resume(config: TrainConfig, *, run_dir: Path, ckpt_path: Path) -> dict[str, Any]:
    """The run's checkpoint, once its config is checked against ``config`` and its progress.csv
    against its iteration count (refused before any work; nothing rewritten)."""
    ckpt = load_checkpoint(ckpt_path)
    saved = config_from_saved(ckpt["config"], source=ckpt_path)
    diff = config_mismatch(saved.to_dict(), config.to_dict(), ignore=RESUMABLE_CHANGES)
    if diff:
        raise CheckpointError(f"checkpoint {ckpt_path} does not match the config: " + "; ".join(diff))
    start = int(ckpt["iteration"])
    if config.run.iters <= start:
        raise ValueError(f"run {run_dir} already has {start} iterations; pass --iters M > {start} to continue")
    checked_progress(run_dir / "progress.csv", start)
    return ckpt


@dataclass
class _Checkpoints:
    """Saves the algorithm's state every ``run.checkpoint_every`` iterations and after the last."""

    path: Path
    config: TrainConfig
    saved: int
    """Iterations in the newest checkpoint."""

    def after(self, done: int, algo: Algorithm) -> None:
        """Called when ``done`` iterations are done."""
        run = self.config.run
        if done % run.checkpoint_every == 0 or done == run.iters:
            save_checkpoint(self.path, {"iteration": done, "config": self.config.to_dict(),
                                        "algorithm": algo.state_dict(), "saved_at": time.time()})
            self.saved = done


def _run_iterations(algo: Algorithm, *, bar: Iterable[int], sampler: Sampler, logger: RunLogger, run_dir: Path,
                    checkpoints: _Checkpoints) -> dict[str, Any]:
    """The training loop proper: iterate, log the row and the events, checkpoint; the last row."""
    last_row: dict[str, Any] = {}
    faults_seen = 0
    for it in bar:
        stats = algo.iterate(it)
        last_row = stats.log_row()
        logger.log(it, last_row)
        faults = getattr(sampler, "fault_events", [])  # replaced sampler workers (process/ray)
        for ev in list(stats.events()) + [f.message() for f in faults[faults_seen:]]:
            with (run_dir / "events.log").open("a") as f:
                f.write(f"iteration {it}: {ev}\n")
            logger.text("events", ev, it)
        faults_seen = len(faults)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(stats.summary(), refresh=False)
        checkpoints.after(it + 1, algo)
    return last_row


def _progress(it: range, start: int, total: int, enabled: bool) -> Any:
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, initial=start, total=total, unit="iter", dynamic_ncols=True, file=sys.stderr)


@dataclass(frozen=True)
class EvalResult:
    """Deterministic-policy evaluation: per-episode undiscounted returns and costs."""

    returns: np.ndarray
    costs: np.ndarray
    lengths: np.ndarray

    def summary(self) -> str:
        return (
            f"episodes {len(self.returns)}  return {self.returns.mean():.2f} ± {self.returns.std():.2f}  "
            f"cost {self.costs.mean():.2f} ± {self.costs.std():.2f}  length {self.lengths.mean():.0f}"
        )


def evaluate(run_dir: str | os.PathLike[str], *, episodes: int, seed: int = 0, deterministic: bool = True) -> EvalResult:
    """Run the saved policy (its mean action when ``deterministic``) for ``episodes`` episodes.

    Every episode starts from its own seed, drawn from ``default_rng([seed, 1_000_003])`` (a
    stream no training worker uses).
    """
    from metacpo.algorithms.agent import saved_policy
    from metacpo.samplers.base import env_dims, rollout

    if episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {episodes}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"--seed must be an integer >= 0, got {seed!r}")
    run = load_run(run_dir)
    config = run.config
    config.env.task_setup.apply()  # the run's custom families and range overrides
    if "policy" not in run.state or "obs_norm" not in run.state:
        raise CheckpointError(f"checkpoint {run.path} lacks the policy or obs_norm state needed for evaluation")
    # The training run's default task (our stochastic ids draw it from the run seed, as the samplers do).
    env = make_env_for(config.env.env_id, seed=config.run.seed)
    try:
        obs_dim, act_dim = env_dims(env)
        try:
            policy, obs_norm = saved_policy(config, run.state, obs_dim=obs_dim, act_dim=act_dim)
        except ValueError as exc:
            raise CheckpointError(f"checkpoint {run.path} does not match {config.env.env_id}: {exc}") from None
        rng = np.random.default_rng([int(seed), 1_000_003])
        batch = rollout(env, policy, obs_norm, 1, rng, deterministic=deterministic, max_episodes=episodes)
    finally:
        env.close()
    return EvalResult(returns=batch.episode_returns, costs=batch.episode_costs, lengths=batch.episode_lengths)

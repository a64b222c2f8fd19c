"""Meta-testing: adapt trained initialisations to held-out tasks with CPO and record the curves.

For every run (and optionally CPO from scratch), every held-out task drawn from the level-``L``
distribution and every test seed: start from the run's trained policy, critics and observation
normaliser and run ``adapt_iters`` CPO updates on fresh samples. After ``k`` updates
(``k = 0 .. adapt_iters``; ``k = 0`` is the initialisation itself) the batch sampled with the
current policy gives the record: mean episode return, mean episode cost, J_C and whether
``J_C <= d``.

Which CPO step adapts (recorded per curve in adapt.json under ``step_rules``):

* meta runs (meta-cpo, meta-trpo): exactly the inner step they were meta-trained with
  (``meta.inner_delta``, ``meta.metric``, ``meta.normalize_grads``, ``meta.backend``, no line
  search, and the inner target ``d - m`` of ``meta.inner_cost_margin`` /
  ``meta.inner_margin_fraction`` as a fixed cost margin) -- as MAML prescribes; every adaptation step is a CPO step (meta-trpo's curve too: the
  meta-test asks every initialisation to adapt under the constraint);
* cpo / multitask-cpo runs: their own ``update`` section (CPO proper, with its line search);
  CPO from scratch: the default ``update`` section;
* no adaptive cost margin (:mod:`metacpo.algorithms.margin`) unless ``AdaptSettings.margin``
  (``metacpo adapt --margin``) turns CPO's adaptive margin on for every curve alike (added to a
  meta run's fixed inner margin).

Seeds and tasks: tasks come from a dedicated generator ``default_rng([TEST_STREAM, level])``
(the same held-out tasks for every run); test seed ``s`` is ``TEST_SEED_BASE + s`` and the
sampler's worker generators are reset to ``default_rng([test_seed, task_index, worker])`` for
each (task, seed) -- streams no training run uses (training seeds must be < TEST_SEED_BASE,
checked). Every run therefore meets the same tasks and the same episode seeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from metacpo.checkpoint import CheckpointError, load_checkpoint
from metacpo.config.schema import RunConfig, SamplerConfig, TrainConfig, UpdateConfig
from metacpo.meta.summary import AdaptRecord, summarize, write_records_csv, write_summary_json

TEST_STREAM = 7_777_777
"""Generator key of the held-out task draws (no training generator uses it)."""
TEST_SEED_BASE = 1_000_000
"""Test seed s is TEST_SEED_BASE + s; training run seeds must be smaller."""
FROM_SCRATCH = "cpo-from-scratch"
"""Label of the CPO-from-scratch curve."""


@dataclass(frozen=True)
class AdaptSettings:
    """What ``metacpo adapt`` does."""

    level: int = 2
    """Level of the held-out task distribution."""
    tasks: int = 5
    """Number of held-out tasks."""
    adapt_iters: int = 10
    """CPO updates per (task, seed)."""
    seeds: int = 3
    """Test seeds per task."""
    steps_per_iter: int = 0
    """Environment steps per adaptation update (0: the first run's sampler.steps_per_iter)."""
    cost_limit: float | None = None
    """Cost limit d (None: the first run's update.cost_limit); the same d for every curve."""
    sampler: str = "local"
    """Sampler backend: local, process or ray."""
    ray_address: str = ""
    """Ray cluster to join with the ray sampler ('' = start a local Ray)."""
    workers: int = 0
    """Process-sampler workers (0 = CPU count)."""
    from_scratch: bool = False
    """Add CPO from a fresh policy as a baseline curve."""
    margin: bool = False
    """Adapt with CPO's adaptive cost margin (metacpo.algorithms.margin, default gain) on every
    curve; off: plain CPO steps aiming at the cost limit itself."""
    torch_threads: int = 1
    """torch intra-op threads in this process (0 = torch default; 1 is fastest for these small nets)."""

    def __post_init__(self) -> None:
        for name in ("tasks", "adapt_iters", "seeds"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.level < 0:
            raise ValueError(f"--level must be >= 0, got {self.level}")
        if self.steps_per_iter < 0:
            raise ValueError(f"--steps-per-iter must be >= 1 (or 0 for the run's), got {self.steps_per_iter}")
        if self.cost_limit is not None and not (math.isfinite(self.cost_limit) and self.cost_limit >= 0):
            raise ValueError(f"--cost-limit must be a finite number >= 0, got {self.cost_limit}")
        if self.sampler not in ("local", "process", "ray"):
            raise ValueError(f"unknown sampler {self.sampler!r}; allowed: 'local', 'process', 'ray'")


@dataclass(frozen=True)
class Initialisation:
    """A starting point for adaptation: a run's trained state, or nothing (from scratch)."""

    label: str
    config: TrainConfig
    """The config whose policy/critic/advantage sections describe the modules."""
    update: UpdateConfig
    """The CPO step used to adapt."""
    state: dict[str, Any] | None
    """Policy/critic/normaliser state dicts (None: fresh modules)."""
    inner_cost_margin: float = 0.0
    """Fixed part of the cost margin the steps aim below d by (a meta run's meta.inner_cost_margin)."""
    inner_margin_fraction: float = 0.0
    """Part of the margin proportional to d (a meta run's meta.inner_margin_fraction)."""

    def fixed_margin(self, cost_limit: float) -> float:
        """The constant margin ``m`` at cost limit ``d`` (the steps aim at ``d - m``), clipped to d."""
        from metacpo.algorithms.margin import fixed_margin

        return fixed_margin(cost_limit, margin=self.inner_cost_margin, fraction=self.inner_margin_fraction)


def load_initialisation(run_dir: str | Path, *, label: str | None = None) -> Initialisation:
    """The trained state of ``run_dir`` and the CPO step it adapts with."""
    from metacpo.training import CHECKPOINT_NAME, _config_from

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    path = run_dir / CHECKPOINT_NAME
    ckpt = load_checkpoint(path)
    config = _config_from(ckpt["config"], path)
    state = ckpt["algorithm"]
    missing = {"policy", "critic_r", "critic_c", "obs_norm"} - set(state)
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {sorted(missing)} needed for adaptation")
    update = config.update
    margin, fraction = 0.0, 0.0
    if "meta" in config.extra:
        m = config.extra["meta"]
        update = replace(update, delta=m.inner_delta, metric=m.metric, backend=m.backend,
                         normalize_grads=m.normalize_grads, line_search=False)
        margin, fraction = float(m.inner_cost_margin), float(m.inner_margin_fraction)
    return Initialisation(label=label or run_dir.name, config=config, update=update, state=dict(state),
                          inner_cost_margin=margin, inner_margin_fraction=fraction)


def from_scratch(reference: TrainConfig) -> Initialisation:
    """CPO from a fresh policy with the reference run's architecture and default CPO settings."""
    base = TrainConfig(algo="cpo")
    return Initialisation(label=FROM_SCRATCH, config=reference, update=replace(base.update), state=None)


def held_out_tasks(env_id: str, *, level: int, count: int) -> tuple[str, list[Any]]:
    """(the level-``level`` env id of ``env_id``'s family, ``count`` tasks from the test stream)."""
    from metacpo.tasks import env_id as make_id
    from metacpo.tasks import get_distribution, parse_env_id

    try:
        agent, family, _ = parse_env_id(env_id)
    except ValueError as exc:
        raise ValueError(f"meta-testing needs a metacpo task-family env id: {exc}") from None
    dist = get_distribution(family, level)
    rng = np.random.default_rng([TEST_STREAM, level])
    return make_id(agent, family, level), [dist.sample(rng) for _ in range(count)]


def _agent_family(env_id: str) -> tuple[str, str]:
    from metacpo.tasks import parse_env_id

    agent, family, _ = parse_env_id(env_id)
    return agent, family


def _worker_states(test_seed: int, task_index: int, n: int) -> dict[str, Any]:
    return {"worker_rngs": [np.random.default_rng([test_seed, task_index, i]).bit_generator.state for i in range(n)]}


def adaptation_config(init: Initialisation, *, settings: AdaptSettings, test_seed: int, steps_per_iter: int,
                      cost_limit: float) -> TrainConfig:
    """The single-task CPO config that adapts ``init``: its declared step, the margin only on request."""
    from metacpo.algorithms.margin import CostMarginConfig

    cfg = init.config
    return TrainConfig(
        algo="cpo", env=cfg.env, policy=cfg.policy, critic=cfg.critic, advantage=cfg.advantage,
        update=replace(init.update, cost_limit=cost_limit),
        sampler=SamplerConfig(kind=settings.sampler, workers=settings.workers, steps_per_iter=steps_per_iter),
        run=RunConfig(seed=test_seed, iters=settings.adapt_iters + 1, tensorboard=False),
        # the adaptive margin only when asked for (TrainConfig(algo="cpo") would otherwise default it
        # on); a meta run's inner target d - m is the fixed margin m
        extra={"margin": CostMarginConfig(adaptive=settings.margin, fixed=init.fixed_margin(cost_limit))},
    )


def adapt_one(
    init: Initialisation,
    *,
    sampler: Any,
    task: Any,
    task_index: int,
    test_seed: int,
    settings: AdaptSettings,
    steps_per_iter: int,
    cost_limit: float,
    on_policy: Callable[[int, Any], None] | None = None,
) -> list[AdaptRecord]:
    """Adapt ``init`` to ``task`` with ``settings.adapt_iters`` CPO updates; one record per step.

    ``on_policy(k, algo)``, if given, is called with the adapting algorithm when its policy has
    had ``k`` updates (k = 0 .. adapt_iters + 1), e.g. to take ``algo.policy_snapshot()`` for a video.
    """
    from metacpo.algorithms.cpo import TrustRegionAlgorithm
    from metacpo.algorithms.multitask import CurrentTaskSampler

    config = adaptation_config(init, settings=settings, test_seed=test_seed, steps_per_iter=steps_per_iter,
                               cost_limit=cost_limit)
    task_sampler = CurrentTaskSampler(sampler)
    task_sampler.current = task
    sampler.load_state_dict(_worker_states(test_seed, task_index, sampler.num_workers))
    obs_dim, act_dim = _dims_of(init, sampler)
    algo = TrustRegionAlgorithm(config, sampler=task_sampler, constrained=True, obs_dim=obs_dim, act_dim=act_dim)
    if init.state is not None:
        for name in ("policy", "critic_r", "critic_c"):
            try:
                getattr(algo, name).load_state_dict(init.state[name])
            except RuntimeError as exc:
                raise CheckpointError(f"{init.label}: {name} does not match its config: {' '.join(str(exc).split())}") from None
        algo.normalizer.load_state_dict(init.state["obs_norm"])
    records = []
    if on_policy is not None:
        on_policy(0, algo)
    for k in range(settings.adapt_iters + 1):
        # iterate(k) samples with the policy after k updates (k = 0: the initialisation), then updates
        st = algo.iterate(k)
        if on_policy is not None:
            on_policy(k + 1, algo)
        r = st.rollout
        records.append(AdaptRecord(
            label=init.label, task_index=task_index, seed=test_seed, step=k, env_steps=k * steps_per_iter,
            ep_return=r.ep_return_mean, ep_cost=r.ep_cost_mean, j_c=r.j_c, limit_ok=bool(r.j_c <= cost_limit),
        ))
    return records


def _dims_of(init: Initialisation, sampler: Any) -> tuple[int, int]:
    if init.state is not None:
        w = init.state["policy"]
        keys = [k for k in w if k.startswith("mu.") and k.endswith(".weight")]
        first, last = w[keys[0]], w[keys[-1]]
        return int(first.shape[1]), int(last.shape[0])
    from metacpo.samplers.base import env_dims, make_env_for

    env = make_env_for(init.config.env.env_id)
    try:
        return env_dims(env)
    finally:
        env.close()


@dataclass(frozen=True)
class AdaptResult:
    records: list[AdaptRecord]
    summary: dict[str, list[dict[str, float]]]
    out_dir: Path
    cost_limit: float


def meta_test(
    run_dirs: list[str],
    *,
    settings: AdaptSettings,
    out_dir: str | Path | None = None,
    echo: Any = None,
) -> AdaptResult:
    """Adapt every run (and CPO from scratch if asked) on the same held-out tasks and seeds;
    write ``adapt.csv``, ``adapt.json`` and ``adapt.png`` into ``out_dir`` (default: first run)."""
    from metacpo.logging.plots import plot_adaptation

    if not run_dirs:
        raise ValueError("metacpo adapt needs at least one run directory")
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    inits = []
    names: set[str] = set()
    for rd in run_dirs:
        label = Path(rd).resolve().name
        while label in names:
            label += "'"
        names.add(label)
        inits.append(load_initialisation(rd, label=label))
    ref = inits[0].config
    for init in inits:
        if init.config.run.seed >= TEST_SEED_BASE:
            raise ValueError(f"run {init.label} was trained with seed {init.config.run.seed} >= {TEST_SEED_BASE}: "
                             "its seeds could collide with the test seeds")
    if settings.from_scratch:
        inits.append(from_scratch(ref))
    cost_limit = ref.update.cost_limit if settings.cost_limit is None else settings.cost_limit
    steps = settings.steps_per_iter or ref.sampler.steps_per_iter
    test_env, tasks = held_out_tasks(ref.env.env_id, level=settings.level, count=settings.tasks)
    for init in inits:
        if _agent_family(init.config.env.env_id) != _agent_family(ref.env.env_id):
            raise ValueError(f"runs come from different agents/task families: {init.config.env.env_id} "
                             f"vs {ref.env.env_id}")
    out = Path(out_dir) if out_dir else Path(run_dirs[0])
    out.mkdir(parents=True, exist_ok=True)
    sampler = _make_sampler(test_env, settings)
    records: list[AdaptRecord] = []
    try:
        for init in inits:
            for ti, task in enumerate(tasks):
                for s in range(settings.seeds):
                    recs = adapt_one(init, sampler=sampler, task=task, task_index=ti, test_seed=TEST_SEED_BASE + s,
                                     settings=settings, steps_per_iter=steps, cost_limit=cost_limit)
                    records.extend(recs)
                    if echo is not None:
                        last = recs[-1]
                        echo(f"{init.label} task {ti} seed {s}: return {recs[0].ep_return:.1f} -> {last.ep_return:.1f}, "
                             f"cost {recs[0].ep_cost:.1f} -> {last.ep_cost:.1f}")
    finally:
        sampler.close()
    summary = summarize(records)
    write_records_csv(records, out / "adapt.csv")
    meta = {
        "runs": [str(r) for r in run_dirs], "labels": [i.label for i in inits], "level": settings.level,
        "env_id": test_env, "tasks": [dict(t.as_dict()) for t in tasks], "task_count": settings.tasks,
        "seeds": [TEST_SEED_BASE + s for s in range(settings.seeds)], "adapt_iters": settings.adapt_iters,
        "steps_per_iter": steps, "cost_limit": cost_limit,
        "step_rules": {i.label: step_rule(i, settings, cost_limit=cost_limit) for i in inits},
        "ci": "mean +- half-width of the 95% Student-t interval over tasks x seeds",
    }
    write_summary_json(summary, meta=meta, path=out / "adapt.json")
    plot_adaptation(summary, cost_limit=cost_limit, path=out / "adapt.png", records=records,
                    title=f"meta-test on {test_env}: {settings.tasks} tasks x {settings.seeds} seeds")
    return AdaptResult(records=records, summary=summary, out_dir=out, cost_limit=cost_limit)


def step_rule(init: Initialisation, settings: AdaptSettings, *, cost_limit: float) -> dict[str, Any]:
    """The adaptation step a curve uses, as recorded in adapt.json.

    ``margin``: CPO's adaptive margin on/off; ``fixed_margin``: the constant margin ``m`` (a meta
    run's inner target, 0 otherwise) and ``cost_target = d - m``, what every step aims at (before
    any adaptive margin)."""
    u = init.update
    m = init.fixed_margin(cost_limit)
    return {"step": "cpo", "delta": u.delta, "metric": u.metric, "backend": u.backend,
            "normalize_grads": u.normalize_grads, "line_search": u.line_search, "margin": settings.margin,
            "fixed_margin": m, "cost_target": cost_limit - m}


def _make_sampler(env_id: str, settings: AdaptSettings) -> Any:
    from metacpo.samplers import make_sampler

    return make_sampler(settings.sampler, env_id, seed=TEST_SEED_BASE, num_workers=settings.workers or None,
                        ray_address=settings.ray_address or None)

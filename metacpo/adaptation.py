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
* ``AdaptSettings.meta_steps = N`` (``metacpo adapt --meta-steps N``): a meta run adapts with its
  inner step for the first ``N`` updates only, then with its own ``update`` section (CPO proper:
  its metric, delta and line search, aiming at ``d`` itself, as single-task CPO would) -- the
  inner step is meta-trained for ``meta.inner_steps`` updates, not beyond; None (default): the
  inner step for every update. Other curves are unaffected;
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
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from metacpo.choices import SAMPLER_KINDS, SamplerKind, check_choice
from metacpo.fileio import check_output_dir, write_text_atomic
from metacpo.checkpoint import CHECKPOINT_NAME, CheckpointError, load_run
from metacpo.config.schema import (
    TRAIN_SEED_LIMIT,
    ConstraintConfig,
    RunConfig,
    SamplerConfig,
    TrainConfig,
    UpdateConfig,
)
from metacpo.logging.meta_test import AdaptRecord, summarize, write_records_csv, write_summary_json

TEST_STREAM = 7_777_777
"""Generator key of the held-out task draws (no training generator uses it)."""
TEST_SEED_BASE = TRAIN_SEED_LIMIT
"""Test seed s is TEST_SEED_BASE + s; training run seeds must be smaller (checked at train time)."""
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
    """Cost limit d (None: the first run's constraint.cost_limit); the same d for every curve."""
    sampler: SamplerKind = "local"
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
    imports: tuple[str, ...] = ()
    """Extra modules/.py files registering task families (adapt --import), beyond the runs' own."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Task range overrides applied after the runs' own (adapt --overrides FILE, e.g. for the test level)."""
    ray_connect_timeout: float = 30.0
    """Seconds to wait for the Ray head at ray_address to answer."""
    meta_steps: int | None = None
    """A meta run adapts with its meta-trained inner step for the first meta_steps updates, then with
    its own CPO update section (metric, delta, line search; aiming at d); None: the inner step for
    every update. Other runs are unaffected."""

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
        n = self.meta_steps
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
            raise ValueError(f"--meta-steps must be an integer >= 0 (or omitted: the inner step for every update), "
                             f"got {n!r}")
        check_choice("sampler", self.sampler, SAMPLER_KINDS)
        if self.ray_address and self.sampler != "ray":
            raise ValueError(f"--ray-address {self.ray_address} needs --sampler ray (got --sampler {self.sampler}); "
                             "drop --ray-address or pass --sampler ray")


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
    cpo_update: UpdateConfig | None = None
    """A meta run's own ``update`` section: its CPO step after ``AdaptSettings.meta_steps`` inner
    steps (None: not a meta run; ``update`` adapts throughout)."""

    def after_meta_steps(self) -> Initialisation:
        """The initialisation as it adapts after ``AdaptSettings.meta_steps`` updates: a meta run's
        own CPO step (``cpo_update``) aiming at ``d`` itself; ``self`` for any other run."""
        if self.cpo_update is None:
            return self
        return replace(self, update=self.cpo_update, inner_cost_margin=0.0, inner_margin_fraction=0.0,
                       cpo_update=None)

    def fixed_margin(self, cost_limit: float) -> float:
        """The constant margin ``m`` at cost limit ``d`` (the steps aim at ``d - m``), clipped to d."""
        from metacpo.algorithms.margin import fixed_margin

        return fixed_margin(cost_limit, margin=self.inner_cost_margin, fraction=self.inner_margin_fraction)

    def dims(self) -> tuple[int, int]:
        """(obs_dim, act_dim) of the policy: its trained weights', or the env's when from scratch."""
        if self.state is not None:
            w = self.state["policy"]
            keys = [k for k in w if k.startswith("mu.") and k.endswith(".weight")]
            return int(w[keys[0]].shape[1]), int(w[keys[-1]].shape[0])
        from metacpo.samplers.base import env_info

        info = env_info(self.config.env.env_id)
        return info.obs_dim, info.act_dim


def load_initialisation(run_dir: str | Path, *, label: str | None = None) -> Initialisation:
    """The trained state of ``run_dir`` and the CPO step it adapts with."""
    run = load_run(run_dir)
    config, state = run.config, run.state
    missing = {"policy", "critic_r", "critic_c", "obs_norm"} - set(state)
    if missing:
        raise CheckpointError(f"checkpoint {run.path} lacks {sorted(missing)} needed for adaptation")
    update = config.update
    margin, fraction = 0.0, 0.0
    cpo_update = None
    if "meta" in config.extra:
        m = config.extra["meta"]
        cpo_update = update
        update = replace(update, delta=m.inner_delta, metric=m.metric, backend=m.backend,
                         normalize_grads=m.normalize_grads, line_search=False)
        margin, fraction = float(m.inner_cost_margin), float(m.inner_margin_fraction)
    return Initialisation(label=label or Path(run_dir).name, config=config, update=update, state=state,
                          inner_cost_margin=margin, inner_margin_fraction=fraction, cpo_update=cpo_update)


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
        constraint=ConstraintConfig(cost_limit=cost_limit), update=init.update,
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

    With ``settings.meta_steps = N`` a meta run's updates ``N + 1, N + 2, ...`` use
    ``init.after_meta_steps()``: the algorithm is rebuilt with that step's config and takes over
    the whole state (policy, critics, normaliser, generator, cost margin) of the first.

    ``on_policy(k, algo)``, if given, is called with the adapting algorithm when its policy has
    had ``k`` updates (k = 0 .. adapt_iters + 1), e.g. to take ``algo.policy_snapshot()`` for a video.
    """
    from metacpo.algorithms.cpo import TrustRegionAlgorithm
    from metacpo.samplers import CurrentTaskSampler

    config = adaptation_config(init, settings=settings, test_seed=test_seed, steps_per_iter=steps_per_iter,
                               cost_limit=cost_limit)
    sampler.load_state_dict(_worker_states(test_seed, task_index, sampler.num_workers))
    obs_dim, act_dim = init.dims()
    task_sampler = CurrentTaskSampler(sampler, task=task)
    algo = TrustRegionAlgorithm(config, sampler=task_sampler, constrained=True, obs_dim=obs_dim, act_dim=act_dim)
    if init.state is not None:
        try:
            algo.agent.load_trained(init.state, what=init.label)
        except ValueError as exc:
            raise CheckpointError(f"{init.label}: {exc}") from None
    rest = init.after_meta_steps() if settings.meta_steps is not None else init
    records = []
    if on_policy is not None:
        on_policy(0, algo)
    for k in range(settings.adapt_iters + 1):
        if rest is not init and k == settings.meta_steps:  # update k + 1 is the first with the run's own step
            switched = TrustRegionAlgorithm(
                adaptation_config(rest, settings=settings, test_seed=test_seed, steps_per_iter=steps_per_iter,
                                  cost_limit=cost_limit),
                sampler=task_sampler, constrained=True, obs_dim=obs_dim, act_dim=act_dim)
            switched.load_state_dict(algo.state_dict())
            algo = switched
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
    write ``adapt.csv``, ``adapt.json`` and ``adapt.png`` into ``out_dir`` (default: first run).

    Each finished (run, task, seed) curve is written at once (atomically) to
    ``out_dir/adapt_parts/``; a later call with the same settings reuses the curves found there
    whose run checkpoint, task, seed and settings match, so an interrupted meta-test continues
    where it stopped and gives the outputs of an uninterrupted one."""

    if not run_dirs:
        raise ValueError("metacpo adapt needs at least one run directory")
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    inits = _load_runs(run_dirs)
    ref = inits[0].config
    setup = _task_setup(inits, settings)
    setup.apply()  # the runs' custom families and ranges, then adapt's own --import/--overrides
    if settings.from_scratch:
        inits.append(from_scratch(ref))
    test_env, tasks = held_out_tasks(ref.env.env_id, level=settings.level, count=settings.tasks)
    for init in inits:
        if _agent_family(init.config.env.env_id) != _agent_family(ref.env.env_id):
            raise ValueError(f"runs come from different agents/task families: {init.config.env.env_id} "
                             f"vs {ref.env.env_id}")
    out = Path(out_dir) if out_dir else Path(run_dirs[0])
    check_output_dir(out, flag="--out")  # before any work
    plan = _Plan(settings=settings, env_id=test_env, tasks=tasks, parts=out / PARTS_DIR,
                 cost_limit=ref.constraint.cost_limit if settings.cost_limit is None else settings.cost_limit,
                 steps_per_iter=settings.steps_per_iter or ref.sampler.steps_per_iter)
    keys = [_init_key(init, rd) for init, rd in zip(inits, [*run_dirs, None], strict=False)]
    sampler = _make_sampler(test_env, settings, setup)
    try:
        records = _adapt_all(plan, inits=inits, init_keys=keys, sampler=sampler, echo=echo)
    finally:
        sampler.close()
    return _write_results(plan, records=records, inits=inits, run_dirs=run_dirs, out=out)


@dataclass(frozen=True)
class _Plan:
    """What every curve of one meta-test shares."""

    settings: AdaptSettings
    env_id: str
    """The held-out level's env id."""
    tasks: list[Any]
    """The held-out tasks (the same for every run)."""
    cost_limit: float
    """The cost limit d of every curve."""
    steps_per_iter: int
    """Environment steps per adaptation update."""
    parts: Path
    """Where finished curves are kept (:data:`PARTS_DIR` of the output directory)."""


def _load_runs(run_dirs: list[str]) -> list[Initialisation]:
    """The runs' initialisations, labelled by directory name (primed when names repeat)."""
    inits: list[Initialisation] = []
    names: set[str] = set()
    for rd in run_dirs:
        label = Path(rd).resolve().name
        while label in names:
            label += "'"
        names.add(label)
        inits.append(load_initialisation(rd, label=label))
    for init in inits:
        if init.config.run.seed >= TEST_SEED_BASE:
            raise ValueError(f"run {init.label} was trained with seed {init.config.run.seed} >= {TEST_SEED_BASE}: "
                             "its seeds could collide with the test seeds")
    return inits


def _adapt_all(plan: _Plan, *, inits: list[Initialisation], init_keys: list[dict[str, Any]], sampler: Any,
               echo: Any) -> list[AdaptRecord]:
    """Every (run, task, seed) curve in that order, each reused from ``plan.parts`` or adapted
    and saved there at once."""
    records: list[AdaptRecord] = []
    total, reused, done = len(inits) * len(plan.tasks) * plan.settings.seeds, 0, 0
    try:
        for init, init_key in zip(inits, init_keys, strict=True):
            for ti, task in enumerate(plan.tasks):
                for s in range(plan.settings.seeds):
                    recs, was_saved = _curve(plan, init=init, init_key=init_key, task=task, task_index=ti, seed=s,
                                             sampler=sampler)
                    reused += int(was_saved)
                    records.extend(recs)
                    done += 1
                    if echo is not None:
                        last = recs[-1]
                        echo(f"{init.label} task {ti} seed {s}: return {recs[0].ep_return:.1f} -> {last.ep_return:.1f}, "
                             f"cost {recs[0].ep_cost:.1f} -> {last.ep_cost:.1f}")
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"interrupted; {done} of {total} (run, task, seed) curves are kept in {plan.parts}; "
                                "run the same command again to continue from them") from None
    if echo is not None and reused:
        echo(f"reused {reused} finished curve(s) from {plan.parts}")
    return records


def _curve(plan: _Plan, *, init: Initialisation, init_key: dict[str, Any], task: Any, task_index: int, seed: int,
           sampler: Any) -> tuple[list[AdaptRecord], bool]:
    """One (run, task, seed) curve and whether it was a saved one (same key) rather than adapted now."""
    key = {**init_key, "step_rule": step_rule(init, plan.settings, cost_limit=plan.cost_limit), "env_id": plan.env_id,
           "task": dict(task.as_dict()), "task_index": task_index, "seed": TEST_SEED_BASE + seed,
           "adapt_iters": plan.settings.adapt_iters, "steps_per_iter": plan.steps_per_iter,
           "cost_limit": plan.cost_limit}
    path = plan.parts / f"{_slug(init.label)}-task{task_index}-seed{seed}.json"
    recs = _read_part(path, key)
    if recs is not None:
        return recs, True
    recs = adapt_one(init, sampler=sampler, task=task, task_index=task_index, test_seed=TEST_SEED_BASE + seed,
                     settings=plan.settings, steps_per_iter=plan.steps_per_iter, cost_limit=plan.cost_limit)
    _write_part(path, key, recs)
    return recs, False


def _write_results(plan: _Plan, *, records: list[AdaptRecord], inits: list[Initialisation], run_dirs: list[str],
                   out: Path) -> AdaptResult:
    """adapt.csv (every record), adapt.json (summary and settings) and adapt.png in ``out``."""
    from metacpo.logging.plots import plot_adaptation

    settings = plan.settings
    summary = summarize(records)
    out.mkdir(parents=True, exist_ok=True)
    write_records_csv(records, out / "adapt.csv")
    meta = {
        "runs": [str(r) for r in run_dirs], "labels": [i.label for i in inits], "level": settings.level,
        "env_id": plan.env_id, "tasks": [dict(t.as_dict()) for t in plan.tasks], "task_count": settings.tasks,
        "seeds": [TEST_SEED_BASE + s for s in range(settings.seeds)], "adapt_iters": settings.adapt_iters,
        "steps_per_iter": plan.steps_per_iter, "cost_limit": plan.cost_limit,
        "step_rules": {i.label: step_rule(i, settings, cost_limit=plan.cost_limit) for i in inits},
        "ci": "mean +- half-width of the 95% Student-t interval over tasks x seeds",
    }
    write_summary_json(summary, meta=meta, path=out / "adapt.json")
    plot_adaptation(summary, cost_limit=plan.cost_limit, path=out / "adapt.png", records=records,
                    title=f"meta-test on {plan.env_id}: {settings.tasks} tasks x {settings.seeds} seeds")
    return AdaptResult(records=records, summary=summary, out_dir=out, cost_limit=plan.cost_limit)


def step_rule(init: Initialisation, settings: AdaptSettings, *, cost_limit: float) -> dict[str, Any]:
    """The adaptation step a curve uses, as recorded in adapt.json.

    ``margin``: CPO's adaptive margin on/off; ``fixed_margin``: the constant margin ``m`` (a meta
    run's inner target, 0 otherwise) and ``cost_target = d - m``, what every step aims at (before
    any adaptive margin). A meta run with ``settings.meta_steps = N``:
    ``{"meta_steps": N, "first": <rule of updates 1..N>, "rest": <rule of the updates after>}``."""
    rest = init.after_meta_steps()
    if settings.meta_steps is not None and rest is not init:
        return {"meta_steps": settings.meta_steps, "first": _rule(init, settings, cost_limit=cost_limit),
                "rest": _rule(rest, settings, cost_limit=cost_limit)}
    return _rule(init, settings, cost_limit=cost_limit)


def _rule(init: Initialisation, settings: AdaptSettings, *, cost_limit: float) -> dict[str, Any]:
    u = init.update
    m = init.fixed_margin(cost_limit)
    return {"step": "cpo", "delta": u.delta, "metric": u.metric, "backend": u.backend,
            "normalize_grads": u.normalize_grads, "line_search": u.line_search, "margin": settings.margin,
            "fixed_margin": m, "cost_target": cost_limit - m}


def _make_sampler(env_id: str, settings: AdaptSettings, setup: Any = None) -> Any:
    from metacpo.samplers import make_sampler

    return make_sampler(settings.sampler, env_id, seed=TEST_SEED_BASE, num_workers=settings.workers or None,
                        ray_address=settings.ray_address or None, task_setup=setup,
                        ray_connect_timeout=settings.ray_connect_timeout)


# ---- finished (run, task, seed) curves, kept so an interrupted meta-test continues --------------

PARTS_DIR = "adapt_parts"
"""Sub-directory of the output directory holding one JSON file per finished (run, task, seed)."""


def _task_setup(inits: list[Initialisation], settings: AdaptSettings) -> Any:
    """The runs' imports and overrides (in run order), then the settings' own."""
    from metacpo.tasks.setup import TaskSetup, normalize_import, plain_overrides

    imports: list[str] = []
    overrides: dict[str, Any] = {}
    for init in inits:
        imports += [i for i in init.config.env.imports if i not in imports]
        for fam, levels in init.config.env.task_overrides.items():
            overrides.setdefault(fam, {}).update(levels)
    imports += [i for i in (normalize_import(x) for x in settings.imports) if i not in imports]
    TaskSetup(imports=tuple(imports)).apply()  # the families the overrides may name
    for fam, levels in plain_overrides(settings.overrides, source="--overrides").items():
        overrides.setdefault(fam, {}).update(levels)
    return TaskSetup(imports=tuple(imports), overrides=overrides)


def _init_key(init: Initialisation, run_dir: str | None) -> dict[str, Any]:
    """What identifies a curve's starting point: the checkpoint's content and the adaptation step."""
    digest = ""
    if init.state is not None and run_dir is not None:
        digest = hashlib.sha256((Path(run_dir) / CHECKPOINT_NAME).read_bytes()).hexdigest()
    return {"label": init.label, "checkpoint_sha256": digest, "update": asdict(init.update),
            "env": asdict(init.config.env)}


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)


def _read_part(path: Path, key: dict[str, Any]) -> list[AdaptRecord] | None:
    """The records of a finished curve saved with the same ``key``, else None (it is re-run)."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if data.get("key") != json.loads(json.dumps(key)):
            return None
        return [AdaptRecord(**r) for r in data["records"]]
    except (ValueError, TypeError, KeyError):
        return None  # torn or foreign file: computed again and overwritten


def _write_part(path: Path, key: dict[str, Any], records: list[AdaptRecord]) -> None:
    write_text_atomic(path, json.dumps({"key": key, "records": [asdict(r) for r in records]}))

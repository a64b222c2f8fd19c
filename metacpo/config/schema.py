"""Typed configuration: nested dataclasses, one docstring per field, checked YAML presets.

``TrainConfig`` holds the sections every algorithm uses plus ``extra``: sections that an
algorithm registers for itself (e.g. ``meta`` for Meta-CPO) via
:func:`metacpo.algorithms.registry.register_algorithm`. Presets and ``--set section.key=value``
overrides are checked against the dataclasses: unknown sections or keys and ill-typed values
raise ``ValueError`` naming the key and what is allowed.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import os
import textwrap
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from metacpo.choices import (
    ACTIVATIONS,
    CRITIC_OPTIMIZERS,
    METRICS,
    SAMPLER_KINDS,
    SOLVER_BACKENDS,
    Activation,
    CriticOptimizer,
    MetricKind,
    SamplerKind,
    SolverBackend,
    check_choice,
)

PRESET_DIR = Path(__file__).parent / "presets"
TRAIN_SEED_LIMIT = 1_000_000
"""Training run seeds must be below this; metacpo adapt's test seeds start here."""

def _rate(what: str, value: float, *, low_open: bool = False) -> None:
    ok = (0.0 < value <= 1.0) if low_open else (0.0 <= value <= 1.0)
    if not ok:
        raise ValueError(f"{what} must lie in {'(0, 1]' if low_open else '[0, 1]'}, got {value}")


@dataclass(frozen=True)
class EnvConfig:
    """Which environment to train on."""

    env_id: str = "SafetyPointCircle1-v0"
    """Environment id: any Safety-Gymnasium id (e.g. SafetyPointCircle1-v0) or one of metacpo's
    stochastic task families (e.g. SafetyPointStcircle1-v0)."""
    fast: bool = True
    """Run our ids and the standard navigation ids (Safety{Agent}{Circle,Button,Goal,Push}{0,1,2}-v0)
    on metacpo's fast path (same physics, observations, rewards and costs); false: Safety-Gymnasium's
    own untouched envs (sets METACPO_FAST_ENVS=0 for the run's worker processes)."""

    imports: tuple[str, ...] = ()
    """Modules or .py files (absolute paths) that register custom task families (train --import);
    imported by the driver and every sampler worker before an env is built."""
    task_overrides: dict[str, Any] = field(default_factory=dict)
    """Task range overrides {family: {level: {parameter: range}}} (the content of train --overrides
    FILE), installed in the driver and every sampler worker."""

    def __post_init__(self) -> None:
        if not self.env_id:
            raise ValueError("env.env_id must be a non-empty environment id")
        if not isinstance(self.fast, bool):
            raise ValueError(f"env.fast={self.fast!r} is not allowed; allowed: true or false")
        if not all(isinstance(s, str) and s for s in self.imports):
            raise ValueError(f"env.imports must be a list of module names or .py files, got {list(self.imports)!r}")
        if not isinstance(self.task_overrides, dict):
            raise ValueError(f"env.task_overrides must be a mapping family -> level -> ranges, "
                             f"got {self.task_overrides!r}")

    @property
    def task_setup(self) -> Any:
        """The :class:`metacpo.tasks.setup.TaskSetup` every process of the run applies."""
        from metacpo.tasks.setup import TaskSetup

        return TaskSetup(imports=tuple(self.imports), overrides=dict(self.task_overrides))


@dataclass(frozen=True)
class PolicyConfig:
    """The Gaussian MLP policy (state-independent log-std)."""

    hidden: tuple[int, ...] = (64, 64)
    """Hidden layer sizes of the mean network (the seed used (24, 12); (64, 64) is the common CPO
    size on Safety-Gym; preset seed_identity restores the seed's)."""
    activation: Activation = "tanh"
    """Activation between hidden layers."""
    log_std_init: float = -0.5
    """Initial log standard deviation of every action dimension."""

    def __post_init__(self) -> None:
        if not self.hidden or any(int(h) <= 0 for h in self.hidden):
            raise ValueError(f"policy.hidden must be non-empty positive sizes, got {self.hidden}")
        check_choice("policy.activation", self.activation, ACTIVATIONS)


@dataclass(frozen=True)
class CriticConfig:
    """Reward and cost value critics V_r(s), V_c(s) (same architecture, fitted separately)."""

    hidden: tuple[int, ...] = (64, 64)
    """Hidden layer sizes of each critic."""
    activation: Activation = "tanh"
    """Activation between hidden layers."""
    optimizer: CriticOptimizer = "adam"
    """Critic optimiser: adam (minibatch epochs) or lbfgs (full-batch L-BFGS)."""
    lr: float = 1e-3
    """Learning rate (Adam step size, or the L-BFGS initial step)."""
    iters: int = 10
    """Adam: epochs over the batch per iteration; L-BFGS: maximum iterations per iteration."""
    minibatch_size: int = 128
    """Adam minibatch size."""
    l2: float = 0.0
    """L2 penalty coefficient on critic weights."""
    fused: bool = True
    """Adam: fit the reward and cost critics in one pass (their layers stacked into one batched
    network, one optimiser, one minibatch order for both; each critic gets the updates it would
    get alone on that order, at about half the cost, see bench/critic_fit.py). false: each critic
    on its own, one after the other (the behaviour before; runs written then resume with it)."""
    time_aware_cost: bool = True
    """The cost critic also sees the fraction of the episode left: J_C is a finite-horizon
    episode cost, whose cost-to-go depends on the time left (off: V(s) only)."""

    def __post_init__(self) -> None:
        if not self.hidden or any(int(h) <= 0 for h in self.hidden):
            raise ValueError(f"critic.hidden must be non-empty positive sizes, got {self.hidden}")
        check_choice("critic.activation", self.activation, ACTIVATIONS)
        check_choice("critic.optimizer", self.optimizer, CRITIC_OPTIMIZERS)
        if not self.lr > 0:
            raise ValueError(f"critic.lr must be > 0, got {self.lr}")
        if self.iters < 1 or self.minibatch_size < 1:
            raise ValueError(f"critic.iters and critic.minibatch_size must be >= 1, got {self.iters}, {self.minibatch_size}")
        if self.l2 < 0:
            raise ValueError(f"critic.l2 must be >= 0, got {self.l2}")


@dataclass(frozen=True)
class AdvantageConfig:
    """Advantage estimation, the cost estimate J_C and observation normalisation."""

    gamma: float = 0.99
    """Discount gamma of the reward GAE."""
    lam: float = 0.95
    """GAE lambda of the reward advantages."""
    cost_gamma: float = 1.0
    """Discount of the per-episode cost estimate J_C and of the cost GAE (the cost advantage must
    use the discount J_C uses for b + a^T x to predict J_C's change). 1.0 = undiscounted episode
    cost, the scale on which Safety-Gymnasium cost limits (e.g. 25 per episode) are stated."""
    cost_lam: float = 0.95
    """GAE lambda of the cost advantages."""
    cost_adv_gamma: float | None = None
    """Discount of the cost GAE. None: cost_gamma, the discount J_C uses, so that b + a^T x is a
    first-order estimate of J_C(new) - d (exact in expectation with an exact critic). A value
    below cost_gamma treats the discount as a variance-reduction parameter (as GAE does for
    undiscounted objectives): lower-variance cost gradients, but a cost arriving k steps after
    a decision is under-weighted by cost_adv_gamma^k (docs/results.md measures both)."""
    normalize_adv_r: bool = True
    """Normalise reward advantages to zero mean and unit std per batch."""
    center_adv_c: bool = True
    """Subtract the batch mean from cost advantages (their scale is kept: it carries the
    constraint's units)."""
    obs_normalize: bool = True
    """Normalise observations with running statistics (saved with the model)."""
    obs_clip: float = 10.0
    """Clip normalised observations to [-obs_clip, obs_clip]."""

    def __post_init__(self) -> None:
        _rate("advantage.gamma", self.gamma)
        _rate("advantage.lam", self.lam)
        _rate("advantage.cost_gamma", self.cost_gamma)
        _rate("advantage.cost_lam", self.cost_lam)
        if self.cost_adv_gamma is not None:
            if isinstance(self.cost_adv_gamma, bool) or not isinstance(self.cost_adv_gamma, (int, float)):
                raise ValueError(f"advantage.cost_adv_gamma must be a number in [0, 1] or null, got {self.cost_adv_gamma!r}")
            _rate("advantage.cost_adv_gamma", float(self.cost_adv_gamma))
        if not self.obs_clip > 0:
            raise ValueError(f"advantage.obs_clip must be > 0, got {self.obs_clip}")


@dataclass(frozen=True)
class ConstraintConfig:
    """The CMDP's constraint J_C <= d: what every constrained algorithm keeps its cost under.

    How a step aims below d is the algorithm's own setting (single-task CPO's adaptive margin:
    the ``margin`` section; Meta-CPO's inner target and cost-limit annealing: ``meta``)."""

    cost_limit: float = 25.0
    """Cost limit d: the constraint is J_C <= d (episode cost, see advantage.cost_gamma). Written
    update.cost_limit before it had this section; that key still works."""

    def __post_init__(self) -> None:
        if not self.cost_limit >= 0:
            raise ValueError(f"constraint.cost_limit must be >= 0, got {self.cost_limit}")


@dataclass(frozen=True)
class StepConfig:
    """How a trust-region step is solved and line-searched: the settings the single-task step
    (``update``) and Meta-CPO's meta-step (``meta``, which also takes the solver settings for
    its inner steps) share. Declared once here; a section inherits them as flat keys
    (``update.max_backtracks``, ``meta.max_backtracks``) and may change a default (the
    meta-step's), never a meaning or a check."""

    SECTION: ClassVar[str] = "update"
    """The config section name used in error messages."""

    metric: MetricKind = "fisher"
    """Trust-region metric H: fisher (KL Hessian via CG, CPO proper) or identity (the seed)."""
    backend: SolverBackend = "analytic"
    """CPO sub-problem solver: analytic (closed form) or dco (cvxpylayers; identity metric;
    falls back to analytic on solver failure, logged)."""
    normalize_grads: bool = False
    """Scale g and a (the meta-step: G and A) to unit norm before solving, as the seed does. Off
    by default (CPO proper): b is not rescaled with a, so after normalisation the linearised
    constraint b + a^T x <= 0 no longer predicts the cost change and is almost never active."""
    line_search: bool = True
    """Backtracking line search on the surrogates (off: take the solver's step as it is, the way
    Meta-CPO's inner steps adapt)."""
    backtrack_coef: float = 0.8
    """Line-search shrink factor per backtrack."""
    max_backtracks: int = 15
    """Maximum number of line-search backtracks before the step is rejected."""
    accept_ratio: float = 0.1
    """Accept a step only if actual reward-surrogate improvement >= accept_ratio x expected."""

    def __post_init__(self) -> None:
        sec = self.SECTION
        check_choice(f"{sec}.metric", self.metric, METRICS)
        check_choice(f"{sec}.backend", self.backend, SOLVER_BACKENDS)
        if self.backend == "dco" and self.metric != "identity":
            raise ValueError(f"{sec}.backend 'dco' needs {sec}.metric 'identity' (got {self.metric!r})")
        if not 0 < self.backtrack_coef < 1:
            raise ValueError(f"{sec}.backtrack_coef must lie in (0, 1), got {self.backtrack_coef}")
        if self.max_backtracks < 0:
            raise ValueError(f"{sec}.max_backtracks must be >= 0, got {self.max_backtracks}")
        if not 0 <= self.accept_ratio < 1:
            raise ValueError(f"{sec}.accept_ratio must lie in [0, 1), got {self.accept_ratio}")


@dataclass(frozen=True)
class UpdateConfig(StepConfig):
    """The trust-region policy step (CPO and TRPO): its size, the Fisher-metric solve, plus the
    solver and line-search settings of :class:`StepConfig`. The cost limit it steps under is
    ``constraint.cost_limit``."""

    delta: float = 0.01
    """Trust-region size delta: 1/2 x^T H x <= delta (mean KL for the Fisher metric)."""
    cg_iters: int = 10
    """Conjugate-gradient iterations for H^-1 g, H^-1 a (Fisher metric)."""
    damping: float = 0.1
    """Damping added to the Fisher matrix: H = F + damping I."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.delta > 0:
            raise ValueError(f"update.delta must be > 0, got {self.delta}")
        if self.cg_iters < 1:
            raise ValueError(f"update.cg_iters must be >= 1, got {self.cg_iters}")
        if self.damping < 0:
            raise ValueError(f"update.damping must be >= 0, got {self.damping}")


@dataclass(frozen=True)
class SamplerConfig:
    """Experience collection."""

    kind: SamplerKind = "process"
    """Sampler backend: local (in-process), process (persistent worker processes) or ray (Ray actors)."""
    workers: int = 0
    """Number of sampler workers (0 = os.cpu_count(); with ray: the Ray cluster's CPUs)."""
    steps_per_iter: int = 4000
    """Environment steps collected per iteration (per task)."""
    envs_per_worker: int = 1
    """Shares of each sample call per worker process (process sampler; local: shares of its one
    worker), each with its own env and generator: work is planned in workers x envs_per_worker
    whole-episode parts, which balances e.g. 3 tasks over 2 workers (4,500 steps each, not 6,000 and 3,000).
    Batches equal those of workers x envs_per_worker workers, so a value > 1 changes them (same
    distribution: whole episodes, own reset seeds). 1 = off (the batches of earlier versions)."""
    spread_episodes: bool = True
    """Process sampler: deal a call's episodes out to the workers in equal numbers of steps, each
    with the reset seed and action noise its planned share gives it: the batches of false bit for
    bit, without a worker waiting for one that got more (3 tasks on 2 workers: 4,500 steps each,
    not 6,000 and 3,000). Off by itself, with a warning, once an episode ends before the env's
    time limit. The local and ray samplers run every share's work as planned."""
    ray_address: str = ""
    """Ray cluster to join with the ray sampler ('' = start Ray on this machine; 'auto' = the running cluster)."""
    ray_connect_timeout: float = 30.0
    """Seconds to wait for the Ray head at ray_address to answer before failing with an error."""

    def __post_init__(self) -> None:
        check_choice("sampler.kind", self.kind, SAMPLER_KINDS)
        if self.ray_address and self.kind != "ray":
            raise ValueError(f"--ray-address {self.ray_address} needs --sampler ray (sampler.kind is "
                             f"{self.kind!r}); drop --ray-address or pass --sampler ray")
        if not self.ray_connect_timeout > 0:
            raise ValueError(f"sampler.ray_connect_timeout must be > 0 seconds, got {self.ray_connect_timeout}")
        if self.workers < 0:
            raise ValueError(f"sampler.workers must be >= 0, got {self.workers}")
        if self.steps_per_iter < 1:
            raise ValueError(f"sampler.steps_per_iter must be >= 1, got {self.steps_per_iter}")
        if self.envs_per_worker < 1:
            raise ValueError(f"sampler.envs_per_worker must be >= 1, got {self.envs_per_worker}")
        if self.envs_per_worker > 1 and self.kind == "ray":
            raise ValueError(f"sampler.envs_per_worker={self.envs_per_worker} is not supported by the ray "
                             "sampler; use --sampler process or sampler.envs_per_worker=1")

    @property
    def num_workers(self) -> int:
        """Workers actually used (``workers``, or the number of CPU cores when 0)."""
        return self.workers or (os.cpu_count() or 1)


@dataclass(frozen=True)
class RunConfig:
    """Run length, seeding and outputs."""

    seed: int = 0
    """Run seed: every generator (workers, critics' minibatches, initial weights) derives from it.
    Training runs need seed < 1000000 (larger seeds are metacpo adapt's test seeds)."""
    iters: int = 100
    """Number of training iterations."""
    run_dir: str = ""
    """Output directory ('' = runs/<algo>-<env>-<time>)."""
    checkpoint_every: int = 1
    """Write a checkpoint every this many iterations (and always after the last)."""
    tensorboard: bool = True
    """Write TensorBoard event files."""
    torch_threads: int = 1
    """torch intra-op threads in the learner (0 = torch default)."""
    init_from: str = ""
    """A finished or partial run directory whose trained policy, critics and observation normaliser
    start this run ('' = fresh weights from the run seed), e.g. Meta-CPO meta-trained from a CPO
    policy. Its env must have this env's observation and action sizes and its networks this
    config's sizes; its env steps are not counted in this run's env_steps. Ignored on --resume."""

    def __post_init__(self) -> None:
        if self.iters < 1:
            raise ValueError(f"run.iters must be >= 1, got {self.iters}")
        if self.checkpoint_every < 1:
            raise ValueError(f"run.checkpoint_every must be >= 1, got {self.checkpoint_every}")
        if self.seed < 0:
            raise ValueError(f"run.seed must be >= 0, got {self.seed}")
        if self.torch_threads < 0:
            raise ValueError(f"run.torch_threads must be >= 0, got {self.torch_threads}")


# Common sections: name -> dataclass. Algorithm-specific sections live in TrainConfig.extra.
SECTIONS: dict[str, type] = {
    "env": EnvConfig,
    "policy": PolicyConfig,
    "critic": CriticConfig,
    "advantage": AdvantageConfig,
    "constraint": ConstraintConfig,
    "update": UpdateConfig,
    "sampler": SamplerConfig,
    "run": RunConfig,
}


MOVED_KEYS: dict[tuple[str, str], tuple[str, str]] = {
    ("update", "cost_limit"): ("constraint", "cost_limit"),
}
"""Config keys that moved: (old section, key) -> (new section, key). Presets, ``--set``, config.yaml
files, checkpoints, cell.json files and grid files written with the old key load (and compare)
as if written with the new one."""

ADDED_KEYS: dict[tuple[str, str], Any] = {
    ("sampler", "envs_per_worker"): 1,
    ("sampler", "spread_episodes"): True,  # the same batches either way
    ("run", "init_from"): "",
}
"""Config keys added after configs were written, with the value that reproduces such a config's
run (its default): a config.yaml, checkpoint or cell.json written without the key compares equal
to one that sets it to this value."""


def migrate_keys(data: Any) -> dict[str, Any]:
    """A copy of config dict ``data`` with every :data:`MOVED_KEYS` key under its new name
    (ValueError if a config gives both names different values) and every :data:`ADDED_KEYS` key
    its value where a section it belongs to is present without it."""
    if not isinstance(data, dict):
        raise ValueError(f"a config must be a mapping of sections, got {type(data).__name__}")
    out = dict(data)
    for (old_sec, old_key), (new_sec, new_key) in MOVED_KEYS.items():
        old = out.get(old_sec)
        if not isinstance(old, dict) or old_key not in old:
            continue
        old = dict(old)
        value = old.pop(old_key)
        new = out.get(new_sec) or {}
        if not isinstance(new, dict):
            continue  # build_section names the malformed section
        if new_key in new and new[new_key] != value:
            raise ValueError(f"{old_sec}.{old_key} (the old name of {new_sec}.{new_key}) is {value!r} but "
                             f"{new_sec}.{new_key} is {new[new_key]!r}; give one of them")
        out[old_sec], out[new_sec] = old, {**new, new_key: value}
    for (sec, key), value in ADDED_KEYS.items():
        section = out.get(sec)
        if isinstance(section, dict) and key not in section:
            out[sec] = {**section, key: value}
    return out


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs (written to the run dir as config.yaml)."""

    algo: str = "cpo"
    """Algorithm name (see metacpo.algorithms.registry; e.g. cpo, trpo)."""
    env: EnvConfig = field(default_factory=EnvConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    advantage: AdvantageConfig = field(default_factory=AdvantageConfig)
    constraint: ConstraintConfig = field(default_factory=ConstraintConfig)
    update: UpdateConfig = field(default_factory=UpdateConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    run: RunConfig = field(default_factory=RunConfig)
    extra: dict[str, Any] = field(default_factory=dict)
    """Algorithm-specific sections (name -> dataclass instance), registered with the algorithm."""

    def __post_init__(self) -> None:
        from metacpo.algorithms.registry import get_algorithm

        entry = get_algorithm(self.algo)  # ValueError naming the allowed algorithms
        extra = dict(self.extra)
        for name, cls in entry.sections.items():
            if name not in extra:
                extra[name] = cls()
            elif not isinstance(extra[name], cls):
                raise ValueError(f"config section {name!r} must be a {cls.__name__}, got {type(extra[name]).__name__}")
        unknown = set(extra) - set(entry.sections)
        if unknown:
            raise ValueError(
                f"config sections {sorted(unknown)} are not used by algo {self.algo!r} "
                f"(its extra sections: {sorted(entry.sections)})"
            )
        object.__setattr__(self, "extra", extra)

    def section(self, name: str) -> Any:
        """A common or algorithm-specific section by name."""
        if name in SECTIONS:
            return getattr(self, name)
        if name in self.extra:
            return self.extra[name]
        raise ValueError(f"unknown config section {name!r}; allowed: {sorted([*SECTIONS, *self.extra])}")

    @property
    def default_run_dir(self) -> str:
        import time

        env = self.env.env_id.replace("/", "_")
        return os.path.join("runs", f"{self.algo}-{env}-{time.strftime('%Y%m%d-%H%M%S')}")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/checkpoint safe: lists, numbers, strings, bools)."""
        out: dict[str, Any] = {"algo": self.algo}
        for name in SECTIONS:
            out[name] = _plain(dataclasses.asdict(getattr(self, name)))
        for name, sec in self.extra.items():
            out[name] = _plain(dataclasses.asdict(sec))
        return out

    @staticmethod
    def from_dict(data: dict[str, Any]) -> "TrainConfig":
        """Build and validate a config from a nested dict (e.g. a parsed YAML preset)."""
        from metacpo.algorithms.registry import get_algorithm

        data = migrate_keys(data)
        algo = data.get("algo", "cpo")
        if not isinstance(algo, str):
            raise ValueError(f"algo must be a string, got {algo!r}")
        entry = get_algorithm(algo)
        allowed = {"algo", *SECTIONS, *entry.sections}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown config section(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
        kwargs: dict[str, Any] = {"algo": algo}
        for name, cls in SECTIONS.items():
            section = data.get(name) or {}
            if name == "env" and entry.default_env_id is not None and isinstance(section, dict) \
                    and "env_id" not in section:
                section = {**section, "env_id": entry.default_env_id}
            kwargs[name] = build_section(cls, section, name)
        kwargs["extra"] = {
            name: build_section(cls, data.get(name) or {}, name) for name, cls in entry.sections.items()
        }
        return TrainConfig(**kwargs)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def choices_of(hint: Any) -> tuple[str, ...] | None:
    """The allowed values of a ``Literal`` field type (see :mod:`metacpo.choices`), else None."""
    return typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else None


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    allowed = choices_of(hint)
    if allowed is not None:
        check_choice(where, value, allowed)
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"config key {where} expects a list, got {value!r}")
        (inner, *_rest) = typing.get_args(hint) or (Any,)
        return tuple(_coerce(v, inner, where) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"config key {where} expects true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"config key {where} expects an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"config key {where} expects a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"config key {where} expects a string, got {value!r}")
        return value
    return value


def value_from_text(text: str, hint: Any, where: str) -> Any:
    """A command-line flag's text as the value of a scalar config field of type ``hint``
    (int, float, bool, str or a ``Literal`` of choices); one-line ``ValueError`` naming ``where``."""
    allowed = choices_of(hint)
    if allowed is not None:
        check_choice(where, text, allowed)
        return text
    if hint is str:
        return text
    if hint is bool:
        if text.lower() not in ("true", "false"):
            raise ValueError(f"{where} expects true or false, got {text!r}")
        return text.lower() == "true"
    kinds: dict[Any, tuple[Callable[[str], Any], str]] = {int: (int, "an integer"), float: (float, "a number")}
    if hint not in kinds:
        raise TypeError(f"{where}: a flag cannot set a field of type {hint!r}")
    convert, what = kinds[hint]
    try:
        return convert(text)
    except ValueError:
        raise ValueError(f"{where} expects {what}, got {text!r}") from None


def field_type(cls: type, name: str) -> Any:
    """The resolved type of field ``name`` of dataclass ``cls``."""
    return typing.get_type_hints(cls)[name]


def build_section(cls: type, data: Any, name: str) -> Any:
    """Instantiate dataclass ``cls`` from a mapping, rejecting unknown keys and bad types."""
    if not isinstance(data, dict):
        raise ValueError(f"config section {name!r} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = set(data) - set(names)
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)} in config section {name!r}; allowed: {names}")
    return cls(**{k: _coerce(v, hints[k], f"{name}.{k}") for k, v in data.items()})


@functools.lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass (the string literal after each field), parsed with ast."""
    docs: dict[str, str] = {}
    for base in reversed(cls.__mro__[1:]):  # inherited fields (e.g. StepConfig's); the class's own win
        if dataclasses.is_dataclass(base):
            docs.update(field_docs(base))
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    for prev, node in zip(body, body[1:]):
        if (
            isinstance(prev, ast.AnnAssign)
            and isinstance(prev.target, ast.Name)
            and isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            docs[prev.target.id] = " ".join(node.value.value.split())
    return docs


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a YAML preset file into a dict (ValueError naming the file on any problem)."""
    p = Path(path)
    if not p.is_file():
        cand = PRESET_DIR / (str(path) if str(path).endswith(".yaml") else f"{path}.yaml")
        if not cand.is_file():
            available = sorted(f.stem for f in PRESET_DIR.glob("*.yaml"))
            raise ValueError(f"preset {str(path)!r} not found (neither a file nor a bundled preset; bundled: {available})")
        p = cand
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"preset {p}: invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"preset {p}: expected a mapping of sections, got {type(data).__name__}")
    try:
        return migrate_keys(data)
    except ValueError as exc:
        raise ValueError(f"preset {p}: {exc}") from None


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply ``section.key=value`` (value parsed as YAML) to a nested config dict in place."""
    if "=" not in assignment:
        raise ValueError(f"--set expects section.key=value, got {assignment!r}")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"--set key must be section.key (e.g. update.delta), got {key!r}")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    set_key(data, parts[0], parts[1], value)


def set_key(data: dict[str, Any], section: str, key: str, value: Any) -> None:
    """``data[section][key] = value`` in a nested config dict; a moved key (:data:`MOVED_KEYS`)
    sets its new name, so a later layer overrides an earlier one whichever name each uses."""
    section, key = MOVED_KEYS.get((section, key), (section, key))
    target = data.setdefault(section, {})
    if not isinstance(target, dict):
        raise ValueError(f"config section {section!r} is not a mapping")
    target[key] = value

"""Task parameters, parameter ranges, task distributions and the task-family registry.

Vocabulary:

- a :class:`Task` is a small frozen dataclass of the parameters of one concrete task
  (e.g. :class:`~metacpo.tasks.families.CircleTask`);
- a *family* (:class:`TaskFamily`) groups the task type, the parameters it is drawn from,
  the Safety-Gymnasium task class that realises it, and one :class:`TaskDistribution` per level;
- a :class:`TaskDistribution` samples tasks of one (family, level) from an explicit
  :class:`numpy.random.Generator`.

Env ids are ``Safety{Agent}St{family}{Level}-v0`` (e.g. ``SafetyPointStcircle1-v0``).
Nothing in this module imports Safety-Gymnasium.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np

AGENTS: tuple[str, ...] = ("Point", "Car", "Doggo", "Racecar")
"""Agents every family is registered for."""

ENV_VERSION = "v0"

_ID_RE = re.compile(r"^Safety(?P<agent>[A-Z][a-z]*)St(?P<family>[a-z]+)(?P<level>\d+)-(?P<version>v\d+)$")
_FAMILY_NAME_RE = re.compile(r"^[a-z]+$")


# --------------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """Base class of the parameters of one concrete task (subclasses are frozen dataclasses).

    Subclasses set the class attribute ``family`` to the name of their family.
    """

    family: ClassVar[str] = ""

    def as_dict(self) -> dict[str, Any]:
        """The parameters as a plain dict (field name -> value)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


# --------------------------------------------------------------------------------------------
# Parameter domains and ranges
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParamDomain:
    """What values one sampled parameter of a family may take (used to validate ranges)."""

    name: str
    """Parameter name, as used in level tables and override files."""
    doc: str
    """One-line description shown by ``metacpo envs``."""
    integer: bool = False
    """Whether the parameter is an integer (ranges are then inclusive integer ranges)."""
    minimum: float = -math.inf
    """Smallest allowed value."""
    maximum: float = math.inf
    """Largest allowed value."""
    min_inclusive: bool = True
    """Whether ``minimum`` itself is allowed."""

    def allowed(self) -> str:
        """Human-readable description of the allowed values."""
        kind = "integer" if self.integer else "number"
        lo = ("" if self.minimum == -math.inf else
              (f">= {_fmt(self.minimum)}" if self.min_inclusive else f"> {_fmt(self.minimum)}"))
        hi = "" if self.maximum == math.inf else f"<= {_fmt(self.maximum)}"
        bounds = " and ".join(b for b in (lo, hi) if b)
        return f"{kind} {bounds}".strip()

    def check_value(self, value: Any, *, where: str) -> float | int:
        """Return ``value`` as a number if allowed, else raise a ValueError naming it."""
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"{where}: {self.name} must be a {self.allowed()}, got {value!r}")
        if self.integer and float(value) != int(value):
            raise ValueError(f"{where}: {self.name} must be an integer, got {value!r}")
        v = int(value) if self.integer else float(value)
        too_low = v < self.minimum or (not self.min_inclusive and v == self.minimum)
        if too_low or v > self.maximum or (isinstance(v, float) and not math.isfinite(v)):
            raise ValueError(f"{where}: {self.name}={value!r} is not allowed; allowed: {self.allowed()}")
        return v


def _fmt(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True)
class Fixed:
    """A parameter that always takes one value."""

    value: float
    """The value."""

    def sample(self, rng: np.random.Generator) -> float:  # noqa: ARG002 - uniform interface
        """Return the fixed value (draws nothing from ``rng``)."""
        return self.value

    def contains(self, x: float) -> bool:
        """Whether ``x`` is the fixed value."""
        return x == self.value

    def describe(self) -> str:
        """E.g. ``1.25``."""
        return _fmt(self.value)


@dataclass(frozen=True)
class Uniform:
    """A continuous uniform range ``U(low, high)``."""

    low: float
    """Lower end."""
    high: float
    """Upper end (>= low)."""

    def sample(self, rng: np.random.Generator) -> float:
        """One draw from ``rng``."""
        return float(rng.uniform(self.low, self.high))

    def contains(self, x: float) -> bool:
        """Whether ``low <= x <= high``."""
        return self.low <= x <= self.high

    def describe(self) -> str:
        """E.g. ``U(1, 1.5)``."""
        return f"U({_fmt(self.low)}, {_fmt(self.high)})"


@dataclass(frozen=True)
class IntUniform:
    """A uniform integer range ``U{low..high}`` (both ends included)."""

    low: int
    """Smallest value."""
    high: int
    """Largest value (>= low)."""

    def sample(self, rng: np.random.Generator) -> int:
        """One draw from ``rng``."""
        return int(rng.integers(self.low, self.high, endpoint=True))

    def contains(self, x: float) -> bool:
        """Whether ``x`` is an integer in ``[low, high]``."""
        return float(x) == int(x) and self.low <= x <= self.high

    def describe(self) -> str:
        """E.g. ``U{3..6}``."""
        return f"U{{{self.low}..{self.high}}}"


ParamRange = Fixed | Uniform | IntUniform


def make_range(domain: ParamDomain, spec: Any, *, where: str) -> ParamRange:
    """Build and validate a range for ``domain`` from a config value.

    ``spec`` is a number (fixed value), a ``[low, high]`` pair, or a mapping ``{low:, high:}``
    (or ``{value:}``). Raises a ValueError naming the bad value and what is allowed.
    """
    if isinstance(spec, (Fixed, Uniform, IntUniform)):
        spec = ({"value": spec.value} if isinstance(spec, Fixed)
                else {"low": spec.low, "high": spec.high})
    if isinstance(spec, Mapping):
        keys = set(spec)
        if keys == {"value"}:
            spec = spec["value"]
        elif keys == {"low", "high"}:
            spec = [spec["low"], spec["high"]]
        else:
            raise ValueError(f"{where}: {domain.name} must be a number, [low, high] or "
                             f"{{low: .., high: ..}}; got keys {sorted(keys)}")
    if isinstance(spec, (list, tuple)):
        if len(spec) != 2:
            raise ValueError(f"{where}: {domain.name} range must be [low, high], got {list(spec)!r}")
        low = domain.check_value(spec[0], where=where)
        high = domain.check_value(spec[1], where=where)
        if low > high:
            raise ValueError(f"{where}: {domain.name} range has low {_fmt(low)} > high {_fmt(high)}; "
                             "expected low <= high")
        if low == high:
            return Fixed(low)
        return IntUniform(int(low), int(high)) if domain.integer else Uniform(float(low), float(high))
    return Fixed(domain.check_value(spec, where=where))


# --------------------------------------------------------------------------------------------
# Families and distributions
# --------------------------------------------------------------------------------------------


def _load_class(ref: type | str, what: str) -> type:
    if isinstance(ref, type):
        return ref
    module, sep, qualname = str(ref).partition(":")
    if not sep or not module or not qualname:
        raise ValueError(f"{what}={ref!r} is not allowed; allowed: a class or 'module:QualName'")
    import importlib

    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, type):
        raise ValueError(f"{what}={ref!r} names {obj!r}, not a class")
    return obj


@dataclass(frozen=True)
class TaskFamily:
    """A parameterised task family: how tasks are drawn and how they are simulated."""

    name: str
    """Lower-case letters; env ids read ``Safety{Agent}St{name}{level}-v0``."""
    task_type: type[Task]
    """The frozen dataclass of one task of this family."""
    params: tuple[ParamDomain, ...]
    """The sampled parameters, in sampling order."""
    build_task: Callable[[Mapping[str, Any]], Task]
    """Turns one set of sampled parameters into a task (derives dependent parameters)."""
    levels: Mapping[int, Mapping[str, Any]]
    """Level -> parameter name -> range spec (see :func:`make_range`)."""
    task_class: type | str
    """The Safety-Gymnasium task class (a ``BaseTask`` subclass taking ``config=`` and ``task=``,
    with an ``apply_task(task)`` method that reconfigures it for the next reset), or its
    ``"module:QualName"`` so that defining the family does not import Safety-Gymnasium
    (:meth:`load_task_class` imports it)."""
    max_episode_steps: int
    """Episode length registered with Safety-Gymnasium."""
    derived: Mapping[str, str] = field(default_factory=dict)
    """Task fields computed from parameters -> formula text shown by ``metacpo envs``."""
    description: str = ""
    """One line describing the family."""
    fast_task_class: type | str | None = None
    """Optional faster drop-in for ``task_class`` (same physics, observations, rewards, costs;
    a class or ``"module:QualName"``); used when not rendering."""

    def __post_init__(self) -> None:
        if not _FAMILY_NAME_RE.match(self.name):
            raise ValueError(f"family name {self.name!r} must be lower-case letters only (a-z)")
        if self.task_type.family != self.name:
            raise ValueError(f"family {self.name!r}: task type {self.task_type.__name__}.family is "
                             f"{self.task_type.family!r}; expected {self.name!r}")
        if not self.levels:
            raise ValueError(f"family {self.name!r} defines no levels")
        if self.max_episode_steps <= 0:
            raise ValueError(f"family {self.name!r}: max_episode_steps must be > 0, "
                             f"got {self.max_episode_steps}")

    def load_task_class(self) -> type:
        """``task_class``, imported if given as ``"module:QualName"``."""
        return _load_class(self.task_class, f"family {self.name!r} task_class")

    def load_fast_task_class(self) -> type | None:
        """``fast_task_class`` (None if unset), imported if given as ``"module:QualName"``."""
        if self.fast_task_class is None:
            return None
        return _load_class(self.fast_task_class, f"family {self.name!r} fast_task_class")

    def distribution(self, level: int) -> TaskDistribution:
        """The validated distribution of one level."""
        if level not in self.levels:
            raise ValueError(f"unknown level {level!r} for family {self.name!r}; "
                             f"allowed: {', '.join(str(lv) for lv in sorted(self.levels))}")
        return TaskDistribution.from_specs(self, level, self.levels[level])


@dataclass(frozen=True)
class TaskDistribution:
    """The distribution of tasks of one (family, level)."""

    family: TaskFamily
    """The family."""
    level: int
    """The level."""
    ranges: tuple[tuple[str, ParamRange], ...]
    """Parameter name -> range, in the family's sampling order."""

    @classmethod
    def from_specs(cls, family: TaskFamily, level: int, specs: Mapping[str, Any]) -> TaskDistribution:
        """Validate ``specs`` (parameter name -> range spec) against the family's domains."""
        where = f"{family.name} level {level}"
        known = {d.name: d for d in family.params}
        unknown = sorted(set(specs) - set(known))
        if unknown:
            raise ValueError(f"{where}: unknown parameter(s) {', '.join(map(repr, unknown))}; "
                             f"allowed: {', '.join(known)}")
        missing = [n for n in known if n not in specs]
        if missing:
            raise ValueError(f"{where}: missing parameter(s) {', '.join(map(repr, missing))}")
        ranges = tuple((d.name, make_range(d, specs[d.name], where=where)) for d in family.params)
        dist = cls(family=family, level=level, ranges=ranges)
        # The extreme corners must build valid tasks (e.g. derived counts stay allowed).
        dist._check_corners()
        return dist

    def _check_corners(self) -> None:
        lows = {n: (r.value if isinstance(r, Fixed) else r.low) for n, r in self.ranges}
        highs = {n: (r.value if isinstance(r, Fixed) else r.high) for n, r in self.ranges}
        for corner in (lows, highs):
            try:
                self.family.build_task(corner)
            except ValueError as exc:
                raise ValueError(f"{self.family.name} level {self.level}: {exc}") from None

    @property
    def is_fixed(self) -> bool:
        """Whether every parameter is fixed (the level is one task)."""
        return all(isinstance(r, Fixed) for _, r in self.ranges)

    def range_of(self, name: str) -> ParamRange:
        """The range of one parameter."""
        for n, r in self.ranges:
            if n == name:
                return r
        raise ValueError(f"unknown parameter {name!r} of family {self.family.name!r}; "
                         f"allowed: {', '.join(n for n, _ in self.ranges)}")

    def sample_params(self, rng: np.random.Generator) -> dict[str, Any]:
        """Draw the raw parameters (in declaration order) from ``rng``."""
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        return {n: r.sample(rng) for n, r in self.ranges}

    def sample(self, rng: np.random.Generator) -> Task:
        """Draw one task."""
        return self.family.build_task(self.sample_params(rng))

    def sample_n(self, rng: np.random.Generator, n: int) -> list[Task]:
        """Draw ``n`` tasks (the same as ``n`` calls of :meth:`sample`)."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        return [self.sample(rng) for _ in range(int(n))]

    def describe(self) -> dict[str, str]:
        """Parameter name (and derived field) -> text, e.g. ``{'radius': 'U(1, 1.5)'}``."""
        out = {n: r.describe() for n, r in self.ranges}
        out.update(self.family.derived)
        return out

    def describe_line(self) -> str:
        """One line: ``radius=U(1, 1.5), wall_ratio=U(0.55, 0.75), wall_distance=radius*wall_ratio``."""
        return ", ".join(f"{k}={v}" for k, v in self.describe().items())


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

_FAMILIES: dict[str, TaskFamily] = {}
_OVERRIDES: dict[tuple[str, int], TaskDistribution] = {}


def add_family(family: TaskFamily, *, replace: bool = False) -> TaskFamily:
    """Add ``family`` to the registry (validating every level); returns it.

    Env-id registration with Safety-Gymnasium is done by :func:`metacpo.tasks.register_family`.
    """
    if family.name in _FAMILIES and _FAMILIES[family.name] is not family and not replace:
        raise ValueError(f"a task family named {family.name!r} is already registered; "
                         "pass replace=True to replace it")
    for level in family.levels:
        if isinstance(level, bool) or not isinstance(level, int) or level < 0:
            raise ValueError(f"family {family.name!r}: levels must be non-negative integers, got {level!r}")
        family.distribution(level)
    _FAMILIES[family.name] = family
    for key in [k for k in _OVERRIDES if k[0] == family.name]:
        del _OVERRIDES[key]
    return family


def families() -> dict[str, TaskFamily]:
    """Registered families by name (a copy)."""
    return dict(_FAMILIES)


def get_family(name: str) -> TaskFamily:
    """A registered family by name; ValueError naming the allowed names otherwise."""
    try:
        return _FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown task family {name!r}; allowed: {', '.join(sorted(_FAMILIES))}") from None


def parse_env_id(env_id: str) -> tuple[str, str, int]:
    """Split ``Safety{Agent}St{family}{Level}-v0`` into ``(agent, family, level)``.

    Raises a ValueError naming the bad part and the allowed values.
    """
    if not isinstance(env_id, str):
        raise ValueError(f"env id must be a string, got {env_id!r}")
    m = _ID_RE.match(env_id)
    if m is None:
        raise ValueError(
            f"malformed env id {env_id!r}; expected Safety{{Agent}}St{{family}}{{Level}}-{ENV_VERSION} "
            f"with Agent in {', '.join(AGENTS)}, family in {', '.join(sorted(_FAMILIES))} "
            "(e.g. SafetyPointStcircle1-v0)")
    agent, family, level_s, version = m["agent"], m["family"], m["level"], m["version"]
    if agent not in AGENTS:
        raise ValueError(f"unknown agent {agent!r} in env id {env_id!r}; allowed: {', '.join(AGENTS)}")
    fam = _FAMILIES.get(family)
    if fam is None:
        raise ValueError(f"unknown task family {family!r} in env id {env_id!r}; "
                         f"allowed: {', '.join(sorted(_FAMILIES))}")
    level = int(level_s)
    if level not in fam.levels:
        raise ValueError(f"unknown level {level} in env id {env_id!r}; family {family!r} has levels "
                         f"{', '.join(str(lv) for lv in sorted(fam.levels))}")
    if version != ENV_VERSION:
        raise ValueError(f"unknown version {version!r} in env id {env_id!r}; allowed: {ENV_VERSION}")
    return agent, family, level


def env_id(agent: str, family: str, level: int) -> str:
    """The env id of (agent, family, level)."""
    return f"Safety{agent}St{family}{level}-{ENV_VERSION}"


def get_distribution(env_id_or_family: str, level: int | None = None) -> TaskDistribution:
    """The task distribution of an env id, or of a family name and level.

    Honors overrides installed by :func:`load_distribution_overrides` / :func:`set_distribution`.
    """
    if isinstance(env_id_or_family, str) and env_id_or_family.startswith("Safety"):
        _, name, id_level = parse_env_id(env_id_or_family)
        if level is not None and level != id_level:
            raise ValueError(f"level {level} contradicts env id {env_id_or_family!r} (level {id_level})")
        level = id_level
    else:
        name = env_id_or_family
        if level is None:
            raise ValueError(f"level is required with a family name ({name!r}); "
                             "pass level=0, 1 or 2 or an env id")
    fam = get_family(name)
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)):
        raise ValueError(f"level must be an integer, got {level!r}")
    level = int(level)
    if (name, level) in _OVERRIDES:
        return _OVERRIDES[(name, level)]
    return fam.distribution(level)


def set_distribution(dist: TaskDistribution) -> None:
    """Install ``dist`` as the distribution of its (family, level) in this process."""
    fam = get_family(dist.family.name)
    if dist.level not in fam.levels:
        raise ValueError(f"unknown level {dist.level} for family {fam.name!r}; "
                         f"allowed: {', '.join(str(lv) for lv in sorted(fam.levels))}")
    _OVERRIDES[(fam.name, dist.level)] = dist


def clear_overrides() -> None:
    """Forget every installed override (back to the families' own level tables)."""
    _OVERRIDES.clear()


def parse_overrides(data: Mapping[str, Any], *, source: str = "overrides") -> list[TaskDistribution]:
    """Validate an override mapping ``{family: {level: {param: range}}}``.

    Parameters not mentioned keep the family's own range for that level.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: expected a mapping of family -> level -> parameter ranges, "
                         f"got {type(data).__name__}")
    out: list[TaskDistribution] = []
    for fam_name, levels in data.items():
        fam = get_family(str(fam_name))
        if not isinstance(levels, Mapping):
            raise ValueError(f"{source}: {fam_name} must map levels to parameter ranges, "
                             f"got {type(levels).__name__}")
        for level_key, params in levels.items():
            level = _parse_level_key(level_key, fam, source)
            if not isinstance(params, Mapping):
                raise ValueError(f"{source}: {fam_name} level {level} must map parameter names to "
                                 f"ranges, got {type(params).__name__}")
            specs: dict[str, Any] = dict(fam.levels[level])
            known = {d.name for d in fam.params}
            for k in params:
                if k not in known:
                    raise ValueError(f"{source}: unknown parameter {k!r} for family {fam.name!r}; "
                                     f"allowed: {', '.join(d.name for d in fam.params)}")
            specs.update(params)
            out.append(TaskDistribution.from_specs(fam, level, specs))
    return out


def _parse_level_key(key: Any, fam: TaskFamily, source: str) -> int:
    text = str(key)
    if text.startswith("level"):
        text = text[len("level"):]
    try:
        level = int(text)
    except ValueError:
        raise ValueError(f"{source}: bad level {key!r} for family {fam.name!r}; allowed: "
                         f"{', '.join(str(lv) for lv in sorted(fam.levels))}") from None
    if level not in fam.levels:
        raise ValueError(f"{source}: unknown level {key!r} for family {fam.name!r}; allowed: "
                         f"{', '.join(str(lv) for lv in sorted(fam.levels))}")
    return level


def read_config_file(path: str) -> Any:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) file."""
    import os

    if not os.path.exists(path):
        raise FileNotFoundError(f"override file not found: {path}")
    ext = os.path.splitext(path)[1].lower()
    if ext in (".yaml", ".yml"):
        import yaml

        with open(path, encoding="utf-8") as fh:
            try:
                return yaml.safe_load(fh) or {}
            except yaml.YAMLError as exc:
                raise ValueError(f"{path}: invalid YAML: {exc}") from None
    if ext == ".toml":
        import tomllib

        with open(path, "rb") as fh:
            try:
                return tomllib.load(fh)
            except tomllib.TOMLDecodeError as exc:
                raise ValueError(f"{path}: invalid TOML: {exc}") from None
    raise ValueError(f"unsupported override file type {ext!r} ({path}); allowed: .yaml, .yml, .toml")


def load_distribution_overrides(path: str, *, apply: bool = True) -> list[TaskDistribution]:
    """Read range overrides for registered families from a YAML/TOML file.

    File layout (YAML)::

        circle:
          1: {radius: [1.0, 1.4], wall_ratio: [0.6, 0.7]}
        button:
          2: {num_buttons: [6, 8]}

    or TOML ``[circle.1]`` tables. With ``apply`` (default) the new distributions are installed
    for this process, so ``safety_gymnasium.make`` / :func:`get_distribution` use them.
    """
    dists = parse_overrides(read_config_file(path), source=str(path))
    if apply:
        for d in dists:
            set_distribution(d)
    return dists

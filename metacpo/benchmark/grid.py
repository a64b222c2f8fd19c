"""Benchmark grid files: algorithms x environments x seeds, plus an optional meta-test stage.

A grid file (YAML, see ``benchmarks/`` and ``docs/benchmark.md``)::

    name: smoke
    description: one line saying what the grid measures
    train:                    # dotted config keys, exactly as `metacpo train --set`, for every cell
      sampler.steps_per_iter: 2000
      run.iters: 3
    algorithms:               # label -> algo name, optional preset, own dotted overrides, train flag
      meta-cpo: {algo: meta-cpo, set: {meta.inner_steps: 1}}
      cpo: {algo: cpo, preset: cpo_point_circle}
      cpo-scratch: {algo: cpo, train: false}
      cpo-level0: {algo: cpo, level: 0}    # trained on SafetyPointStcircle0-v0, meta-tested as the others
      mcpo-warm: {algo: meta-cpo, init: cpo-level0}   # starts from cpo-level0's cell of the same env and seed
    envs: [SafetyPointStcircle1-v0]
    seeds: [0, 1, 2]
    adapt:                    # optional: `metacpo adapt` settings (AdaptSettings field names)
      level: 2
      tasks: 5
      seeds: 3
      adapt_iters: 10
      steps_per_iter: 4000

Each cell's config is resolved as defaults < the algorithm's ``preset`` < ``train`` < the
algorithm's ``set`` < what the grid fixes (``algo``, ``env.env_id``, ``run.seed``,
``run.run_dir``). ``env.env_id`` is the grid env, or with the entry's ``level: L`` the level-``L``
env of the grid env's family and agent (the cell still lives under, and is meta-tested as, the
grid env). With ``init: LABEL`` the cell starts from the trained state of entry ``LABEL``'s cell
of the same env and seed (``run.init_from``; that entry must come earlier and train, and the
runner starts the cell only once that one is done). Everything is validated by :func:`load_grid` before any work: an unknown key,
algorithm, env id or config key, a bad seed list, ... is a ``ValueError`` naming the file, the
bad value and what is allowed.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from metacpo.adaptation import TEST_SEED_BASE, AdaptSettings
from metacpo.config.schema import TrainConfig, build_section, load_yaml, set_key

TOP_KEYS: tuple[str, ...] = ("name", "description", "train", "algorithms", "envs", "seeds", "adapt")
"""Keys of a grid file (``name``, ``algorithms``, ``envs``, ``seeds`` are required)."""
ALGORITHM_KEYS: tuple[str, ...] = ("algo", "preset", "set", "train", "level", "init")
"""Keys of one ``algorithms`` entry (``algo`` is required)."""
ADAPT_KEYS: tuple[str, ...] = tuple(f.name for f in fields(AdaptSettings) if f.name not in ("ray_address", "from_scratch"))
"""Keys of the ``adapt`` stage: the :class:`~metacpo.adaptation.AdaptSettings` fields, but ``ray_address``
(cells sample locally or in processes) and ``from_scratch`` (use a ``train: false`` algorithm)."""
GRID_OWNED: tuple[str, ...] = ("env.env_id", "run.seed", "run.run_dir")
"""Config keys the grid sets per cell (from ``envs``, ``seeds`` and ``--out``)."""
CELL_SAMPLERS: tuple[str, ...] = ("local", "process")
"""Sampler kinds a cell may use (on a Ray cluster each cell is itself a Ray task)."""

_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class AlgorithmSpec:
    """One entry of a grid's ``algorithms`` mapping."""

    label: str
    """Name of the row in reports and of the first directory level under ``--out``."""
    algo: str
    """Registered algorithm name (metacpo.algorithms.registry)."""
    preset: str = ""
    """YAML preset (a file, relative to the grid file, or a bundled preset name); '' = none."""
    overrides: Mapping[str, Any] = field(default_factory=dict)
    """Dotted config key -> value (the entry's ``set``), applied after the grid's ``train``."""
    train: bool = True
    """False: no training; the cell's initial (untrained, seeded) policy is meta-tested only."""
    level: int | None = None
    """Train on this level of the grid env's task family (same agent), e.g. 0 for "CPO pre-trained
    on the level-0 task"; None: train on the grid env itself. The cell still lives under the grid
    env's directory and is meta-tested like every other cell of that env."""
    init: str | None = None
    """Label of an earlier, trained entry: each cell starts from that entry's cell of the same env
    and seed (``run.init_from``); None: fresh weights."""

    def train_env_id(self, env_id: str) -> str:
        """The env this entry trains on in the column of grid env ``env_id`` (ValueError if
        ``level`` is set and ``env_id`` is not a task-family id or lacks that level)."""
        if self.level is None:
            return env_id
        from metacpo.tasks import env_id as make_id
        from metacpo.tasks import get_family, parse_env_id

        try:
            agent, family, _ = parse_env_id(env_id)
        except ValueError:
            raise ValueError(f"level {self.level} needs a metacpo task-family env id (e.g. SafetyPointStcircle1-v0), "
                             f"got {env_id!r}") from None
        levels = sorted(get_family(family).levels)
        if self.level not in levels:
            raise ValueError(f"level {self.level} is not a level of the {family!r} task family; allowed: {levels}")
        return make_id(agent, family, self.level)


@dataclass(frozen=True)
class Cell:
    """One (algorithm, env, seed) cell of a grid, with its resolved configs."""

    label: str
    algo: str
    env_id: str
    seed: int
    train: bool
    """Whether the cell trains (False: meta-test of the initial policy only)."""
    config: TrainConfig
    """The full training config (``run.run_dir`` is set by :meth:`Grid.cells`)."""
    adapt: AdaptSettings | None
    """The meta-test stage (same tasks, test seeds, cost limit and batch size for every cell of an env)."""

    @property
    def key(self) -> str:
        """``label/env_id/seed<k>``: the cell's path under the output directory."""
        return f"{self.label}/{self.env_id}/seed{self.seed}"

    @property
    def train_env_id(self) -> str:
        """The env the cell trains on (``config.env.env_id``): ``env_id`` or, for an entry with
        ``level``, that level of ``env_id``'s family."""
        return self.config.env.env_id

    @property
    def cpus(self) -> int:
        """CPUs the cell needs: its sampler workers (process sampler) or 1 (local sampler)."""
        need = 1
        if self.train and self.config.sampler.kind == "process":
            need = self.config.sampler.num_workers
        if self.adapt is not None and self.adapt.sampler == "process":
            need = max(need, self.adapt.workers or (os.cpu_count() or 1))
        return need


@dataclass(frozen=True)
class Grid:
    """A validated grid file."""

    name: str
    description: str
    path: Path
    train: Mapping[str, Any]
    """Dotted config keys shared by every training cell."""
    algorithms: tuple[AlgorithmSpec, ...]
    envs: tuple[str, ...]
    seeds: tuple[int, ...]
    adapt: AdaptSettings | None
    """The meta-test stage as written (``cost_limit`` None: each env's common constraint.cost_limit)."""

    def cells(self, out: str | os.PathLike[str]) -> list[Cell]:
        """Every cell, algorithm-major, with ``run.run_dir = out/label/env/seed<k>`` (absolute)."""
        root = Path(out).resolve()
        cells = []
        for spec in self.algorithms:
            for env_id in self.envs:
                for seed in self.seeds:
                    config = _resolve_config(self, spec, env_id, seed, run_dir=str(root / spec.label / env_id / f"seed{seed}"))
                    cells.append(Cell(label=spec.label, algo=spec.algo, env_id=env_id, seed=seed,
                                      train=spec.train, config=config, adapt=None))
        if self.adapt is None:
            return cells
        out_cells = []
        for env_id in self.envs:
            limits = {c.config.constraint.cost_limit for c in cells if c.env_id == env_id}
            limit = self.adapt.cost_limit
            if limit is None:
                if len(limits) > 1:
                    raise ValueError(f"grid {self.path}: the cells of {env_id} have different constraint.cost_limit "
                                     f"{sorted(limits)}; set adapt.cost_limit so they are meta-tested against one limit")
                limit = limits.pop()
            for c in cells:
                if c.env_id == env_id:
                    out_cells.append(replace(c, adapt=replace(self.adapt, cost_limit=float(limit))))
        order = {c.key: i for i, c in enumerate(cells)}
        return sorted(out_cells, key=lambda c: order[c.key])


def load_grid(path: str | os.PathLike[str]) -> Grid:
    """Read and validate a grid file (every cell's config is built once, so any bad key fails here)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"grid file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"grid {p}: invalid YAML: {' '.join(str(exc).split())}") from None
    return parse_grid(data, path=p)


def parse_grid(data: Any, *, path: Path) -> Grid:
    """Validate a parsed grid mapping (see the module docstring); ``path`` names it in errors."""
    where = f"grid {path}"
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping with keys {list(TOP_KEYS)}, got {type(data).__name__}")
    unknown = sorted(set(data) - set(TOP_KEYS), key=str)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}; allowed: {list(TOP_KEYS)}")
    for key in ("name", "algorithms", "envs", "seeds"):
        if key not in data:
            raise ValueError(f"{where}: missing required key {key!r}")
    name = data["name"]
    if not isinstance(name, str) or not _LABEL_RE.match(name):
        raise ValueError(f"{where}: name must be a word of letters, digits, '.', '_', '-', got {name!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ValueError(f"{where}: description must be a string, got {description!r}")
    train = _dotted(data.get("train") or {}, f"{where}: train")
    algorithms = _algorithms(data["algorithms"], where, base=path.parent)
    envs = _envs(data["envs"], where)
    seeds = _seeds(data["seeds"], where)
    adapt = _adapt(data.get("adapt"), where) if data.get("adapt") is not None else None
    if adapt is None:
        no_train = [a.label for a in algorithms if not a.train]
        if no_train:
            raise ValueError(f"{where}: algorithm {no_train[0]!r} has train: false but the grid has no adapt stage "
                             "(an untrained cell is only meta-tested)")
    else:
        from metacpo.tasks import parse_env_id

        for env_id in envs:
            try:
                parse_env_id(env_id)
            except ValueError as exc:
                raise ValueError(f"{where}: the adapt stage needs metacpo task-family env ids "
                                 f"(e.g. SafetyPointStcircle1-v0): {exc}") from None
    grid = Grid(name=name, description=description, path=path, train=train, algorithms=algorithms,
                envs=envs, seeds=seeds, adapt=adapt)
    for spec in algorithms:
        for env_id in envs:
            _resolve_config(grid, spec, env_id, seeds[0], run_dir="")
    grid.cells(path.parent)  # checks the adapt stage's common cost limit
    return grid


def _dotted(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be a mapping of dotted config keys (section.key: value), got {raw!r}")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        parts = str(key).split(".")
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"{where}: key {key!r} must be section.key as for `metacpo train --set` (e.g. run.iters)")
        if key in GRID_OWNED or key == "algo":
            raise ValueError(f"{where}: key {key!r} is set by the grid per cell (from envs, seeds and --out); "
                             f"remove it")
        if key == "sampler.kind" and value not in CELL_SAMPLERS:
            raise ValueError(f"{where}: sampler.kind {value!r} is not allowed in a grid; allowed: {list(CELL_SAMPLERS)} "
                             "(on a Ray cluster each cell is already a Ray task: use --ray-address)")
        out[str(key)] = value
    return out


def _algorithms(raw: Any, where: str, *, base: Path) -> tuple[AlgorithmSpec, ...]:
    from metacpo.algorithms.registry import algorithm_names

    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{where}: algorithms must be a non-empty mapping label -> {{algo: NAME, ...}}, got {raw!r}")
    specs = []
    for label, entry in raw.items():
        if not isinstance(label, str) or not _LABEL_RE.match(label) or label == "adapt":
            raise ValueError(f"{where}: algorithm label {label!r} must be letters, digits, '.', '_', '-' (a directory name)")
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: algorithms.{label} must be a mapping with keys {list(ALGORITHM_KEYS)}, got {entry!r}")
        unknown = sorted(set(entry) - set(ALGORITHM_KEYS), key=str)
        if unknown:
            raise ValueError(f"{where}: unknown key {unknown[0]!r} in algorithms.{label}; allowed: {list(ALGORITHM_KEYS)}")
        algo = entry.get("algo")
        if algo not in algorithm_names():
            raise ValueError(f"{where}: unknown algo {algo!r} in algorithms.{label}; allowed: {algorithm_names()}")
        preset = entry.get("preset") or ""
        if not isinstance(preset, str):
            raise ValueError(f"{where}: algorithms.{label}.preset must be a file or bundled preset name, got {preset!r}")
        if preset and (base / preset).is_file():
            preset = str((base / preset).resolve())
        train = entry.get("train", True)
        if not isinstance(train, bool):
            raise ValueError(f"{where}: algorithms.{label}.train must be true or false, got {train!r}")
        level = entry.get("level")
        if level is not None and (isinstance(level, bool) or not isinstance(level, int) or level < 0):
            raise ValueError(f"{where}: algorithms.{label}.level must be an integer >= 0 (a level of the env's task "
                             f"family), got {level!r}")
        overrides = _dotted(entry.get("set") or {}, f"{where}: algorithms.{label}.set")
        init = entry.get("init")
        if init is not None:
            earlier = [s.label for s in specs if s.train]
            if init not in earlier:
                raise ValueError(f"{where}: algorithms.{label}.init {init!r} must name an earlier entry that trains; "
                                 f"allowed: {earlier}")
            if not train:
                raise ValueError(f"{where}: algorithms.{label} has init {init!r} and train: false; a cell that does "
                                 "not train would only meta-test the other entry's policy again")
            if "run.init_from" in overrides:
                raise ValueError(f"{where}: algorithms.{label} gives both init and set run.init_from; use one")
        specs.append(AlgorithmSpec(label=label, algo=algo, preset=preset, overrides=overrides, train=train,
                                   level=level, init=init))
    return tuple(specs)


def _envs(raw: Any, where: str) -> tuple[str, ...]:
    import metacpo.tasks  # noqa: F401  (registers our ids)
    from safety_gymnasium.utils.registration import safe_registry

    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{where}: envs must be a non-empty list of env ids, got {raw!r}")
    for env_id in raw:
        if not isinstance(env_id, str) or env_id not in safe_registry:
            raise ValueError(f"{where}: unknown env id {env_id!r}; allowed: Safety-Gymnasium ids and metacpo's "
                             "(`metacpo envs` lists them)")
    if len(set(raw)) != len(raw):
        raise ValueError(f"{where}: envs lists an id twice: {raw}")
    return tuple(raw)


def _seeds(raw: Any, where: str) -> tuple[int, ...]:
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{where}: seeds must be a non-empty list of distinct integers in [0, {TEST_SEED_BASE}), got {raw!r}")
    for s in raw:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < TEST_SEED_BASE:
            raise ValueError(f"{where}: bad seed {s!r}; seeds must be distinct integers in [0, {TEST_SEED_BASE}) "
                             "(larger ones are reserved for meta-test seeds)")
    if len(set(raw)) != len(raw):
        raise ValueError(f"{where}: seeds lists a seed twice: {raw}")
    return tuple(raw)


def _adapt(raw: Any, where: str) -> AdaptSettings:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: adapt must be a mapping with keys {list(ADAPT_KEYS)}, got {raw!r}")
    unknown = sorted(set(raw) - set(ADAPT_KEYS), key=str)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r} in adapt; allowed: {list(ADAPT_KEYS)}")
    if not raw.get("steps_per_iter"):
        raise ValueError(f"{where}: adapt.steps_per_iter is required (one batch size for every cell), got "
                         f"{raw.get('steps_per_iter')!r}")
    limit = raw.get("cost_limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float)) or not math.isfinite(limit)):
        raise ValueError(f"{where}: adapt.cost_limit must be a finite number >= 0, got {limit!r}")
    if raw.get("sampler", "local") not in CELL_SAMPLERS:
        raise ValueError(f"{where}: adapt.sampler {raw.get('sampler')!r} is not allowed in a grid; allowed: {list(CELL_SAMPLERS)}")
    try:
        return build_section(AdaptSettings, dict(raw), "adapt")
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _resolve_config(grid: Grid, spec: AlgorithmSpec, env_id: str, seed: int, *, run_dir: str) -> TrainConfig:
    """defaults < preset < grid train < algorithm set < (algo, env, seed, run_dir); env is the
    entry's training env for grid env ``env_id`` (:meth:`AlgorithmSpec.train_env_id`)."""
    data: dict[str, Any] = {}
    try:
        train_env = spec.train_env_id(env_id)
        if spec.preset:
            data = load_yaml(spec.preset)
        for key, value in [*grid.train.items(), *spec.overrides.items()]:
            section, name = key.split(".")
            set_key(data, section, name, value)  # an old key (update.cost_limit) sets its new name
        data["algo"] = spec.algo
        data.setdefault("env", {})["env_id"] = train_env
        run = data.setdefault("run", {})
        run["seed"], run["run_dir"] = seed, run_dir
        if spec.init is not None and run_dir:  # the sibling cell: out/<init>/<env>/seed<k>
            run["init_from"] = str(Path(run_dir).parents[2] / spec.init / env_id / f"seed{seed}")
        return TrainConfig.from_dict(data)
    except ValueError as exc:
        raise ValueError(f"grid {grid.path}: algorithms.{spec.label} on {env_id}: {exc}") from None


def adapt_settings_dict(settings: AdaptSettings | None) -> dict[str, Any] | None:
    """Plain JSON-shaped dict of the meta-test settings (for cell.json): tuples become lists, so
    the settings read back from cell.json compare equal to freshly resolved ones. Settings added
    later are left out at their default (``meta_steps: None``), so cells meta-tested before they
    existed still count as meta-tested with the same settings."""
    if settings is None:
        return None

    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return {f.name: plain(getattr(settings, f.name)) for f in fields(settings)
            if not (f.name in _LATER_SETTINGS and getattr(settings, f.name) == f.default)}


_LATER_SETTINGS: tuple[str, ...] = ("meta_steps",)
"""AdaptSettings fields added after grids had run: omitted from cell.json at their default."""

"""Statistics of a benchmark output directory and its tables (``metacpo report``).

Only finished cells (``cell.json`` status ``done``) enter the tables; the others are listed.

* Training, per (algorithm label, env), over training seeds: the final iteration's mean episode
  return and cost, their means over the late window (the last ``late_fraction`` of the
  iterations, at least one), and the fraction of iterations whose cost estimate ``J_C`` was
  within the cell's limit ``d`` (``rollout/j_c <= constraint.cost_limit``). Iterations without
  figures (NaN: a skipped meta-iteration) are left out of each. Each is the mean over seeds
  with a 95% percentile-bootstrap confidence interval over seeds.
* Meta-test, per (algorithm label, env, adaptation step): the mean episode return and cost with a
  95% percentile-bootstrap CI over the (task, test seed) pairs of every training seed pooled, and
  the share of those pairs within the limit (``J_C <= d``).
* Aggregate, per algorithm label: the interquartile mean (IQM, the 25%-trimmed mean) across envs
  of the per-seed late-window return and cost (training) and of the final-step return and cost
  of every (task, test seed, training seed) (meta-test), with a stratified bootstrap CI
  (resampling within each env).

Bootstraps are :func:`scipy.stats.bootstrap` (percentile method, 10,000 resamples, a fixed
generator so a report is reproducible); the IQM is :func:`scipy.stats.trim_mean` with 0.25. With
fewer than two values the CI is undefined (NaN, shown as "n/a"). Every row names the commit(s)
of the code that produced its cells; a table built from several commits says so.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sps

from metacpo.benchmark.cell import ADAPT_DIR, CELL_FILE, CellState, read_state
from metacpo.benchmark.provenance import Provenance
from metacpo.config.schema import migrate_keys

CONFIDENCE = 0.95
N_RESAMPLES = 10_000
BOOTSTRAP_SEED = 20_240_512
"""Seed of the bootstrap generator (reports are reproducible)."""
FORMATS: tuple[str, ...] = ("md", "csv", "json")


@dataclass(frozen=True)
class Estimate:
    """A statistic with its 95% bootstrap confidence interval."""

    value: float
    """The statistic (mean, or IQM for aggregates)."""
    low: float
    """Lower end of the 95% CI (NaN when fewer than two values)."""
    high: float
    """Upper end of the 95% CI."""
    n: int
    """Number of values it is computed from."""

    def fmt(self, digits: int = 2) -> str:
        if not math.isfinite(self.low):
            return f"{self.value:.{digits}f} [n/a]"
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def bootstrap_mean(values: Sequence[float]) -> Estimate:
    """Mean of ``values`` and its 95% percentile-bootstrap CI (scipy.stats.bootstrap)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("bootstrap_mean needs at least one value")
    mean = float(np.mean(x))
    if x.size < 2:
        return Estimate(mean, math.nan, math.nan, int(x.size))
    if np.all(x == x[0]):  # every resample has the same mean
        return Estimate(mean, mean, mean, int(x.size))
    res = sps.bootstrap((x,), np.mean, confidence_level=CONFIDENCE, n_resamples=N_RESAMPLES, method="percentile",
                        random_state=np.random.default_rng(BOOTSTRAP_SEED))
    return Estimate(mean, float(res.confidence_interval.low), float(res.confidence_interval.high), int(x.size))


def _iqm(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
    return sps.trim_mean(np.concatenate(samples, axis=axis), 0.25, axis=axis)


def bootstrap_iqm(strata: Sequence[Sequence[float]]) -> Estimate:
    """IQM of all values pooled, with a 95% percentile-bootstrap CI resampling within each stratum (env)."""
    groups = [np.asarray(s, dtype=np.float64) for s in strata if len(s)]
    if not groups:
        raise ValueError("bootstrap_iqm needs at least one value")
    pooled = np.concatenate(groups)
    value = float(sps.trim_mean(pooled, 0.25))
    if any(g.size < 2 for g in groups):
        return Estimate(value, math.nan, math.nan, int(pooled.size))
    if np.all(pooled == pooled[0]):
        return Estimate(value, value, value, int(pooled.size))
    res = sps.bootstrap(tuple(groups), _iqm, confidence_level=CONFIDENCE, n_resamples=N_RESAMPLES,
                        method="percentile", paired=False, vectorized=True,
                        random_state=np.random.default_rng(BOOTSTRAP_SEED))
    return Estimate(value, float(res.confidence_interval.low), float(res.confidence_interval.high), int(pooled.size))


@dataclass(frozen=True)
class CellData:
    """A finished cell's files."""

    dir: Path
    state: CellState
    progress: list[dict[str, str]]
    """progress.csv rows ([] for an untrained cell)."""
    adapt_rows: list[dict[str, str]]
    """adapt/adapt.csv rows ([] without a meta-test stage)."""
    adapt_env: str
    """The meta-test env id (adapt.json), '' without a meta-test stage."""
    commits: tuple[str, ...]
    """Short commits (``abc1234`` / ``abc1234+dirty``) of every attempt that worked on the cell."""

    @property
    def cost_limit(self) -> float:
        return float(migrate_keys(self.state.config)["constraint"]["cost_limit"])


@dataclass(frozen=True)
class TrainingRow:
    """Training statistics of one (algorithm, env) over seeds."""

    algorithm: str
    env: str
    train_env: str
    """The env(s) the cells trained on (``config.env.env_id``; another level of ``env``'s family
    for a grid entry with ``level``), comma-separated if they differ."""
    seeds: int
    iterations: int
    env_steps: float
    """Environment steps of the final iteration (mean over seeds)."""
    cost_limit: float
    final_return: Estimate
    final_cost: Estimate
    late_return: Estimate
    late_cost: Estimate
    late_iterations: int
    """Length of the late window (iterations)."""
    within_limit: Estimate
    """Fraction of iterations with J_C <= d."""
    train_wall_s: float
    """Mean training wall time per seed."""
    commits: tuple[str, ...]
    started_from: str = ""
    """For cells that started from another cell's run (grid ``init``, ``run.init_from``): that
    cell's entry label(s), comma-separated; its env steps are not in ``env_steps``."""


@dataclass(frozen=True)
class AdaptStepRow:
    """Meta-test statistics of one (algorithm, env) after ``step`` adaptation updates."""

    algorithm: str
    env: str
    test_env: str
    step: int
    pairs: int
    """(task, test seed, training seed) triples pooled."""
    cost_limit: float
    ret: Estimate
    cost: Estimate
    within_limit: float
    """Share of the pairs with J_C <= d."""
    commits: tuple[str, ...]


@dataclass(frozen=True)
class AggregateRow:
    """IQM across envs of one statistic of one algorithm."""

    algorithm: str
    stage: str
    """``training`` (late-window per seed) or ``meta-test`` (final adaptation step per pair)."""
    metric: str
    """``return`` or ``cost``."""
    envs: int
    iqm: Estimate
    commits: tuple[str, ...]


@dataclass(frozen=True)
class Report:
    out: Path
    grids: tuple[str, ...]
    cells_done: int
    not_done: tuple[str, ...]
    """``key (status: error)`` of the cells left out."""
    late_fraction: float
    training: tuple[TrainingRow, ...]
    adaptation: tuple[AdaptStepRow, ...]
    aggregate: tuple[AggregateRow, ...]

    @property
    def commits(self) -> tuple[str, ...]:
        return _commits_of([*self.training, *self.adaptation, *self.aggregate])


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def load_cells(out: str | Path) -> tuple[list[CellData], list[str]]:
    """The finished cells under ``out`` and ``key (status)`` of the others."""
    root = Path(out)
    if not root.is_dir():
        raise FileNotFoundError(f"benchmark directory {root} does not exist")
    done, other = [], []
    for path in sorted(root.glob(f"*/*/seed*/{CELL_FILE}")):
        d = path.parent
        state = read_state(d)
        assert state is not None
        key = f"{state.label}/{state.env_id}/seed{state.seed}"
        if state.status != "done":
            other.append(f"{key} ({state.status}{': ' + state.error if state.error else ''})")
            continue
        progress = _read_csv(d / "progress.csv") if state.train else []
        adapt_rows, adapt_env = [], ""
        if state.adapt is not None:
            adapt_rows = _read_csv(d / ADAPT_DIR / "adapt.csv")
            adapt_env = json.loads((d / ADAPT_DIR / "adapt.json").read_text())["settings"]["env_id"]
        commits = tuple(sorted({Provenance.from_dict(a.provenance).short for a in state.attempts}))
        done.append(CellData(dir=d, state=state, progress=progress, adapt_rows=adapt_rows, adapt_env=adapt_env,
                             commits=commits))
    if not done and not other:
        raise ValueError(f"{root} holds no benchmark cells (no */*/seed*/{CELL_FILE}); run `metacpo benchmark` first")
    return done, other


def _col(rows: list[dict[str, str]], key: str) -> np.ndarray:
    return np.array([float(r[key]) if r[key] not in ("", "nan") else math.nan for r in rows])


def _last_finite(x: np.ndarray) -> float:
    """The last finite entry (a skipped meta-iteration logs NaN post-adaptation figures)."""
    finite = x[np.isfinite(x)]
    return float(finite[-1]) if finite.size else math.nan


def _commits_of(rows: Sequence[Any]) -> tuple[str, ...]:
    """The commits of ``rows`` (cells or report rows: anything with ``commits``), sorted, once each."""
    return tuple(sorted({c for r in rows for c in r.commits}))


def _late_window(n: int, late_fraction: float) -> int:
    """Iterations in the late window of an ``n``-iteration run (at least one)."""
    return max(1, math.ceil(late_fraction * n))


def _late_mean(progress: list[dict[str, str]], key: str, late_fraction: float) -> float:
    """Mean of column ``key`` over the late window (NaN rows left out)."""
    return float(np.nanmean(_col(progress, key)[-_late_window(len(progress), late_fraction):]))


def build_report(out: str | Path, *, late_fraction: float = 0.25) -> Report:
    """All statistics of the benchmark directory ``out`` (see the module docstring)."""
    if not 0 < late_fraction <= 1:
        raise ValueError(f"--late-fraction must lie in (0, 1], got {late_fraction}")
    cells, not_done = load_cells(out)
    groups: dict[tuple[str, str], list[CellData]] = defaultdict(list)
    for c in cells:
        groups[(c.state.label, c.state.env_id)].append(c)
    training, adaptation = [], []
    late_by_algo: dict[str, dict[str, dict[str, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    final_by_algo: dict[str, dict[str, dict[str, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for (label, env), group in groups.items():
        group = sorted(group, key=lambda c: c.state.seed)
        trained = [c for c in group if c.state.train and c.progress]
        if trained:
            row = _training_row(label, env, trained, late_fraction)
            training.append(row)
            for c in trained:
                late_by_algo[label]["return"][env].append(_late_mean(c.progress, "rollout/ep_return_mean", late_fraction))
                late_by_algo[label]["cost"][env].append(_late_mean(c.progress, "rollout/ep_cost_mean", late_fraction))
        tested = [c for c in group if c.adapt_rows]
        if tested:
            rows = _adapt_rows(label, env, tested)
            adaptation.extend(rows)
            last = max(int(r["step"]) for c in tested for r in c.adapt_rows)
            for c in tested:
                final = [r for r in c.adapt_rows if int(r["step"]) == last]
                final_by_algo[label]["return"][env].extend(float(r["ep_return"]) for r in final)
                final_by_algo[label]["cost"][env].extend(float(r["ep_cost"]) for r in final)
    aggregate = []
    for stage, table in (("training", late_by_algo), ("meta-test", final_by_algo)):
        for label, metrics in table.items():
            commits = _commits_of([c for c in cells if c.state.label == label])
            for metric in ("return", "cost"):
                per_env = metrics[metric]
                aggregate.append(AggregateRow(algorithm=label, stage=stage, metric=metric, envs=len(per_env),
                                              iqm=bootstrap_iqm([per_env[e] for e in sorted(per_env)]), commits=commits))
    return Report(out=Path(out).resolve(), grids=tuple(sorted({c.state.grid for c in cells})), cells_done=len(cells),
                  not_done=tuple(not_done), late_fraction=late_fraction, training=tuple(training),
                  adaptation=tuple(adaptation), aggregate=tuple(aggregate))


def _training_row(label: str, env: str, cells: list[CellData], late_fraction: float) -> TrainingRow:
    final_r, final_c, late_r, late_c, within, steps, iters, late_ns = [], [], [], [], [], [], [], []
    limits = {c.cost_limit for c in cells}
    for c in cells:
        ret, cost = _col(c.progress, "rollout/ep_return_mean"), _col(c.progress, "rollout/ep_cost_mean")
        jc = _col(c.progress, "rollout/j_c")
        final_r.append(_last_finite(ret))
        final_c.append(_last_finite(cost))
        late_r.append(_late_mean(c.progress, "rollout/ep_return_mean", late_fraction))
        late_c.append(_late_mean(c.progress, "rollout/ep_cost_mean", late_fraction))
        within.append(float(np.mean(jc[np.isfinite(jc)] <= c.cost_limit)))
        steps.append(float(c.progress[-1]["rollout/env_steps"]))
        iters.append(len(c.progress))
        late_ns.append(_late_window(len(c.progress), late_fraction))
    inits = {c.state.config.get("run", {}).get("init_from", "") for c in cells}
    started = ",".join(sorted({Path(i).parts[-3] if len(Path(i).parts) >= 3 else i for i in inits if i}))
    return TrainingRow(
        algorithm=label, env=env, train_env=",".join(sorted({c.state.config["env"]["env_id"] for c in cells})),
        started_from=started,
        seeds=len(cells), iterations=min(iters), env_steps=float(np.mean(steps)),
        cost_limit=limits.pop() if len(limits) == 1 else math.nan,
        final_return=bootstrap_mean(final_r), final_cost=bootstrap_mean(final_c),
        late_return=bootstrap_mean(late_r), late_cost=bootstrap_mean(late_c), late_iterations=min(late_ns),
        within_limit=bootstrap_mean(within), train_wall_s=float(np.mean([c.state.train_wall_s for c in cells])),
        commits=_commits_of(cells),
    )


def _adapt_rows(label: str, env: str, cells: list[CellData]) -> list[AdaptStepRow]:
    limits = {float(c.state.adapt["cost_limit"]) for c in cells if c.state.adapt}
    limit = next(iter(limits)) if len(limits) == 1 else math.nan
    test_envs = {c.adapt_env for c in cells}
    by_step: dict[int, list[dict[str, str]]] = defaultdict(list)
    for c in cells:
        for r in c.adapt_rows:
            by_step[int(r["step"])].append(r)
    rows = []
    for step in sorted(by_step):
        rs = by_step[step]
        rows.append(AdaptStepRow(
            algorithm=label, env=env, test_env=",".join(sorted(test_envs)), step=step, pairs=len(rs),
            cost_limit=limit,
            ret=bootstrap_mean([float(r["ep_return"]) for r in rs]),
            cost=bootstrap_mean([float(r["ep_cost"]) for r in rs]),
            within_limit=float(np.mean([r["limit_ok"] == "True" for r in rs])),
            commits=_commits_of(cells),
        ))
    return rows


# --------------------------------------------------------------------------------------------
# Formats
# --------------------------------------------------------------------------------------------
def _commit_note(commits: Sequence[str]) -> str:
    if len(commits) == 1:
        return f"All rows from commit `{commits[0]}`."
    if not commits:
        return "No rows."
    return f"**Mixed commits**: rows come from {len(commits)} commits ({', '.join(f'`{c}`' for c in commits)}); see the commit column."


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def to_markdown(rep: Report) -> str:
    """The report as Markdown tables (statistics described under each heading)."""
    out = io.StringIO()
    w = out.write
    w(f"# Benchmark report: {rep.out}\n\n")
    w(f"Grid(s): {', '.join(rep.grids) or '-'}; {rep.cells_done} finished cells. {_commit_note(rep.commits)}\n")
    if rep.not_done:
        w(f"Left out ({len(rep.not_done)} cells not finished): " + "; ".join(rep.not_done) + "\n")
    w(f"\nIntervals: 95% percentile bootstrap ({N_RESAMPLES:,} resamples, scipy.stats.bootstrap); "
      "[n/a] with fewer than two values.\n")
    if rep.training:
        w("\n## Training\n\n")
        w(f"Mean over training seeds [95% CI over seeds]. Final: the last iteration; late: mean over the last "
          f"{_pct(rep.late_fraction)} of the iterations; within limit: fraction of iterations with J_C <= d. "
          f"{_commit_note(_commits_of(rep.training))}\n\n")
        w("| algorithm | env | seeds | iterations | env steps | d | final return | final cost | late return | "
          "late cost | iterations within limit | train time per seed | commit |\n")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
        for r in rep.training:
            env = r.env if r.train_env == r.env else f"{r.env} (trained on {r.train_env})"
            if r.started_from:
                env += f" (started from {r.started_from}'s run; its env steps not counted)"
            w(f"| {r.algorithm} | {env} | {r.seeds} | {r.iterations} (late {r.late_iterations}) | {r.env_steps:,.0f} | "
              f"{r.cost_limit:g} | {r.final_return.fmt()} | {r.final_cost.fmt()} | {r.late_return.fmt()} | "
              f"{r.late_cost.fmt()} | {r.within_limit.fmt()} | {r.train_wall_s:.0f} s | {', '.join(r.commits)} |\n")
    if rep.adaptation:
        w("\n## Meta-test: adaptation curves\n\n")
        w("Mean [95% CI] over every (task, test seed, training seed) pooled; within limit: share of those with "
          f"J_C <= d. Step 0 is the initialisation. {_commit_note(_commits_of(rep.adaptation))}\n")
        envs = sorted({(r.env, r.test_env) for r in rep.adaptation})
        for env, test_env in envs:
            rows = [r for r in rep.adaptation if r.env == env and r.test_env == test_env]
            w(f"\n### {env} -> meta-test on {test_env} (d = {rows[0].cost_limit:g})\n\n")
            w("| algorithm | step | pairs | return | cost | within limit | commit |\n|---|---|---|---|---|---|---|\n")
            for r in rows:
                w(f"| {r.algorithm} | {r.step} | {r.pairs} | {r.ret.fmt()} | {r.cost.fmt()} | {_pct(r.within_limit)} | "
                  f"{', '.join(r.commits)} |\n")
    if rep.aggregate:
        w("\n## Aggregate: IQM across envs\n\n")
        w("Interquartile mean (scipy.stats.trim_mean, 25%) of the per-seed late-window figures (training) and of "
          "the final adaptation step's per-pair figures (meta-test), pooled across envs; 95% CI from a bootstrap "
          f"stratified by env. {_commit_note(_commits_of(rep.aggregate))}\n\n")
        w("| algorithm | stage | metric | envs | values | IQM [95% CI] | commit |\n|---|---|---|---|---|---|---|\n")
        for a in rep.aggregate:
            w(f"| {a.algorithm} | {a.stage} | {a.metric} | {a.envs} | {a.iqm.n} | {a.iqm.fmt()} | {', '.join(a.commits)} |\n")
    return out.getvalue()


def _est(prefix: str, e: Estimate) -> dict[str, float]:
    return {f"{prefix}": e.value, f"{prefix}_ci_low": e.low, f"{prefix}_ci_high": e.high, f"{prefix}_n": e.n}


def _flat(row: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in asdict(row).items():
        if isinstance(v, dict) and set(v) == {"value", "low", "high", "n"}:
            out.update(_est(k, Estimate(**v)))
        elif isinstance(v, (list, tuple)):
            out[k] = list(v)
        else:
            out[k] = v
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


def to_json(rep: Report) -> str:
    """The report as JSON: settings, commits, and one list of flat rows per table (an undefined CI is null)."""
    data = {
        "out": str(rep.out), "grids": list(rep.grids), "cells_done": rep.cells_done, "not_done": list(rep.not_done),
        "commits": list(rep.commits), "mixed_commits": len(rep.commits) > 1,
        "statistics": {"confidence": CONFIDENCE, "bootstrap": "percentile, scipy.stats.bootstrap",
                       "n_resamples": N_RESAMPLES, "seed": BOOTSTRAP_SEED, "late_fraction": rep.late_fraction,
                       "iqm": "scipy.stats.trim_mean(x, 0.25), bootstrap stratified by env"},
        "training": [_flat(r) for r in rep.training],
        "adaptation": [_flat(r) for r in rep.adaptation],
        "aggregate": [_flat(r) for r in rep.aggregate],
    }
    return json.dumps(data, indent=2, allow_nan=False) + "\n"


def to_csv(rep: Report) -> str:
    """The report as one long CSV: table, algorithm, env, step, metric, n, value, ci_low, ci_high, commit."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["table", "algorithm", "env", "step", "metric", "n", "value", "ci_low", "ci_high", "commit"])
    for r in rep.training:
        for name in ("final_return", "final_cost", "late_return", "late_cost", "within_limit"):
            e = getattr(r, name)
            w.writerow(["training", r.algorithm, r.env, "", name, e.n, e.value, e.low, e.high, " ".join(r.commits)])
    for a in rep.adaptation:
        for name, e in (("return", a.ret), ("cost", a.cost)):
            w.writerow(["adaptation", a.algorithm, a.env, a.step, name, e.n, e.value, e.low, e.high, " ".join(a.commits)])
        w.writerow(["adaptation", a.algorithm, a.env, a.step, "within_limit", a.pairs, a.within_limit, "", "",
                    " ".join(a.commits)])
    for g in rep.aggregate:
        w.writerow(["aggregate", g.algorithm, "", "", f"{g.stage} {g.metric} iqm", g.iqm.n, g.iqm.value, g.iqm.low,
                    g.iqm.high, " ".join(g.commits)])
    return out.getvalue()


RENDERERS: dict[str, Callable[[Report], str]] = {"md": to_markdown, "csv": to_csv, "json": to_json}

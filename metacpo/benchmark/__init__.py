"""Benchmark grids (``metacpo benchmark``) and their report tables (``metacpo report``).

* :mod:`metacpo.benchmark.grid` -- the grid file: algorithms x envs x seeds (+ a meta-test stage),
  validated into one resolved :class:`~metacpo.config.TrainConfig` per cell.
* :mod:`metacpo.benchmark.cell` -- runs one cell (train or resume, then meta-test) and keeps its
  ``cell.json`` (status, provenance, wall time).
* :mod:`metacpo.benchmark.runner` -- runs the cells of a grid, ``--jobs`` at a time, as local
  subprocesses or Ray tasks; skips finished cells, resumes interrupted ones.
* :mod:`metacpo.benchmark.report` -- per (algorithm, env) statistics over seeds with bootstrap
  confidence intervals, and their md/csv/json tables; :mod:`metacpo.benchmark.plots` draws them.

See ``docs/benchmark.md``.
"""

from metacpo.benchmark.grid import AlgorithmSpec, Cell, Grid, load_grid

__all__ = ["AlgorithmSpec", "Cell", "Grid", "load_grid"]

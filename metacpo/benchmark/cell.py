"""One benchmark cell: train (or resume) one (algorithm, env, seed), then meta-test it.

A cell directory ``OUT/<label>/<env id>/seed<k>/`` is a normal ``metacpo train`` run directory
plus ``cell.json`` (:class:`CellState`: the resolved config, the meta-test settings, status,
error, wall times and one :class:`Attempt` per process that worked on it, each with its
provenance) and, with a meta-test stage, ``adapt/`` (``adapt.csv``, ``adapt.json``,
``adapt.png`` as ``metacpo adapt`` writes them).

The runner (:mod:`metacpo.benchmark.runner`) writes ``cell.json`` with status ``pending`` and
starts ``python -m metacpo.benchmark.cell CELL_DIR`` (a subprocess or a Ray task). This process
then works out where the cell stands from its files alone:

* training: no checkpoint -> train from scratch (leftovers of an attempt that died before its
  first checkpoint are removed); a checkpoint before ``run.iters`` -> resume it
  (:func:`metacpo.training.train` with ``resume``, bit-identical to an uninterrupted run); a
  checkpoint at ``run.iters`` -> nothing to do. ``train: false`` cells save the seeded initial
  state of the algorithm as an iteration-0 checkpoint instead.
* meta-test: :func:`metacpo.adaptation.meta_test` writes into ``adapt.partial/``, which replaces
  ``adapt/`` only when complete, so ``adapt/`` is always a finished meta-test of the settings
  recorded in ``adapt_done``.

``cell.json`` is always replaced atomically (write to a temporary file, fsync, rename).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from metacpo.fileio import write_text_atomic

CELL_FILE = "cell.json"
FORMAT = "metacpo-cell/1"
ADAPT_DIR = "adapt"
STATUSES: tuple[str, ...] = ("pending", "running", "done", "failed", "interrupted")
"""``running`` in a file whose process is gone means the cell was killed (it is resumed)."""


@dataclass(frozen=True)
class Attempt:
    """One process that worked on the cell."""

    started: float
    """Unix time the attempt started."""
    wall_s: float
    """Seconds it ran (0 while running, or if it was killed without a chance to record it)."""
    status: str
    """How it ended (``running`` if it was killed hard)."""
    resumed_from: int
    """Checkpoint iteration the attempt found (0: training started from scratch or was not needed)."""
    provenance: dict[str, Any]
    """:class:`metacpo.benchmark.provenance.Provenance` of the code that ran."""
    pid: int
    error: str = ""


@dataclass(frozen=True)
class CellState:
    """The content of ``cell.json``."""

    grid: str
    """Grid name."""
    grid_file: str
    label: str
    algo: str
    env_id: str
    seed: int
    train: bool
    config: dict[str, Any]
    """The full resolved training config (TrainConfig.to_dict())."""
    adapt: dict[str, Any] | None
    """The meta-test settings (AdaptSettings fields), None without a meta-test stage."""
    cpus: int
    """CPUs the cell asks for (its sampler workers)."""
    status: str = "pending"
    error: str = ""
    """One line: why the last attempt failed."""
    attempts: tuple[Attempt, ...] = field(default_factory=tuple)
    train_wall_s: float = 0.0
    """Seconds spent training, summed over attempts."""
    adapt_wall_s: float = 0.0
    """Seconds spent meta-testing, summed over attempts."""
    adapt_done: dict[str, Any] | None = None
    """The meta-test settings that ``adapt/`` holds the results of (None: none yet)."""
    train_env_id: str = ""
    """The env the cell trains on (``config.env.env_id``): ``env_id`` itself, or another level of its
    family for a grid entry with ``level`` ('' in files written before the field existed: ``env_id``)."""

    @property
    def wall_s(self) -> float:
        return self.train_wall_s + self.adapt_wall_s

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["attempts"] = [asdict(a) for a in self.attempts]
        return {"format": FORMAT, **d, "wall_s": self.wall_s}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "CellState":
        d = dict(d)
        if d.pop("format", None) != FORMAT:
            raise ValueError(f"not a {FORMAT} file")
        d.pop("wall_s", None)
        d["attempts"] = tuple(Attempt(**a) for a in d.get("attempts", ()))
        return CellState(**d)


def write_state(cell_dir: str | os.PathLike[str], state: CellState) -> None:
    """Write ``cell.json`` atomically."""
    write_text_atomic(Path(cell_dir) / CELL_FILE, json.dumps(state.to_dict(), indent=2) + "\n")


def read_state(cell_dir: str | os.PathLike[str]) -> CellState | None:
    """``cell.json`` of ``cell_dir`` (None if there is none); ValueError naming the file if unreadable."""
    path = Path(cell_dir) / CELL_FILE
    if not path.exists():
        return None
    try:
        return CellState.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path} is not a readable {FORMAT} file: {exc}") from None


def checkpoint_iteration(run_dir: str | os.PathLike[str]) -> int | None:
    """Iteration of the run's checkpoint (None: no checkpoint)."""
    from metacpo.checkpoint import load_checkpoint
    from metacpo.training import CHECKPOINT_NAME

    path = Path(run_dir) / CHECKPOINT_NAME
    return int(load_checkpoint(path)["iteration"]) if path.exists() else None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _train_stage(state: CellState, run_dir: Path, resumed_from: int | None) -> None:
    from metacpo.config.schema import TrainConfig
    from metacpo.training import train

    config = TrainConfig.from_dict(state.config)
    if not state.train:
        if resumed_from is None:
            _save_initial_state(config, run_dir)
        return
    if resumed_from is None:
        for leftover in ("progress.csv", "events.log"):  # from an attempt killed before its first checkpoint
            (run_dir / leftover).unlink(missing_ok=True)
        shutil.rmtree(run_dir / "tb", ignore_errors=True)
        train(config, progress=False)
    elif resumed_from < config.run.iters:
        train(config, resume=True, progress=False)


def _save_initial_state(config: Any, run_dir: Path) -> None:
    """The algorithm's seeded initial state as an iteration-0 checkpoint (``train: false`` cells)."""
    from metacpo.algorithms.registry import get_algorithm
    from metacpo.checkpoint import save_checkpoint
    from metacpo.samplers import LocalSampler, env_dims, make_env_for
    from metacpo.training import CHECKPOINT_NAME

    env = make_env_for(config.env.env_id)
    try:
        obs_dim, act_dim = env_dims(env)
    finally:
        env.close()
    sampler = LocalSampler(config.env.env_id, seed=config.run.seed)  # building only: nothing is sampled
    try:
        algo = get_algorithm(config.algo).build(config, sampler=sampler, obs_dim=obs_dim, act_dim=act_dim)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(config.to_yaml())
        save_checkpoint(run_dir / CHECKPOINT_NAME, {"iteration": 0, "config": config.to_dict(),
                                                    "algorithm": algo.state_dict(), "saved_at": time.time()})
    finally:
        sampler.close()


def _adapt_stage(state: CellState, run_dir: Path) -> None:
    from metacpo.adaptation import AdaptSettings, meta_test

    partial = run_dir / f"{ADAPT_DIR}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    assert state.adapt is not None
    meta_test([str(run_dir)], settings=AdaptSettings(**state.adapt), out_dir=partial)
    final = run_dir / ADAPT_DIR
    if final.exists():
        shutil.rmtree(final)
    os.replace(partial, final)


def run_cell(cell_dir: str | os.PathLike[str]) -> CellState:
    """Bring the cell in ``cell_dir`` to ``done`` (or ``failed``/``interrupted``); returns the final state."""
    from metacpo.benchmark.provenance import collect

    run_dir = Path(cell_dir).resolve()
    state = read_state(run_dir)
    if state is None:
        raise FileNotFoundError(f"{run_dir / CELL_FILE} does not exist: the runner writes it before starting a cell")
    t0 = time.time()
    attempt = Attempt(started=t0, wall_s=0.0, status="running", resumed_from=0,
                      provenance=collect().to_dict(), pid=os.getpid())
    previous = state.attempts

    def save(**changes: Any) -> None:
        nonlocal state
        state = replace(state, **changes, attempts=(*previous, attempt))
        write_state(run_dir, state)

    save(status="running", error="")
    stage = "train"
    try:
        resumed_from = checkpoint_iteration(run_dir)
        attempt = replace(attempt, resumed_from=resumed_from or 0)
        save()
        t = time.time()
        _train_stage(state, run_dir, resumed_from)
        save(train_wall_s=state.train_wall_s + time.time() - t)
        stage = "adapt"
        if state.adapt is not None and state.adapt_done != state.adapt:
            t = time.time()
            _adapt_stage(state, run_dir)
            save(adapt_wall_s=state.adapt_wall_s + time.time() - t, adapt_done=state.adapt)
        attempt = replace(attempt, wall_s=time.time() - t0, status="done")
        save(status="done")
    except (KeyboardInterrupt, SystemExit) as exc:
        attempt = replace(attempt, wall_s=time.time() - t0, status="interrupted", error=f"{stage}: {_one_line(exc)}")
        save(status="interrupted", error=attempt.error)
    except Exception as exc:
        traceback.print_exc()
        attempt = replace(attempt, wall_s=time.time() - t0, status="failed", error=f"{stage}: {_one_line(exc)}")
        save(status="failed", error=attempt.error)
    return state


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """``python -m metacpo.benchmark.cell CELL_DIR``: exit 0 when done, 1 when failed, 130 when interrupted."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m metacpo.benchmark.cell CELL_DIR", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    state = run_cell(args[0])
    if state.status == "done":
        return 0
    print(f"cell {state.label}/{state.env_id}/seed{state.seed} {state.status}: {state.error}", file=sys.stderr)
    return 1 if state.status == "failed" else 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

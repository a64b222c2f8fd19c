"""Run every cell of a grid: ``jobs`` at a time as local subprocesses, or as Ray tasks on a cluster.

Each cell runs in its own process (``python -m metacpo.benchmark.cell CELL_DIR``, see
:mod:`metacpo.benchmark.cell`), with its output in ``CELL_DIR/cell.log``; on a Ray cluster that
process is started by a Ray task that asks for the cell's CPUs (its sampler workers), so Ray
packs cells onto nodes by CPU count. Before starting anything :func:`plan` compares each cell
directory with the grid: finished cells with the same config are skipped, unfinished ones are
started again (and resume from their checkpoints), and a directory holding a different run is
reported as a failure instead of being overwritten. One failing cell never stops the others.
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from metacpo.benchmark.cell import (
    CELL_FILE,
    CellState,
    checkpoint_iteration,
    read_state,
    write_state,
)
from metacpo.benchmark.grid import Cell, Grid, adapt_settings_dict
from metacpo.checkpoint import config_mismatch
from metacpo.config.schema import migrate_keys

LOG_FILE = "cell.log"
LOCK_FILE = ".benchmark.lock"
# Config keys a finished cell may differ in from the grid (run.iters: training continues).
_IGNORED = ("run.run_dir", "run.iters")


@dataclass(frozen=True)
class CellOutcome:
    """What happened to one cell in one ``metacpo benchmark`` call."""

    key: str
    """``label/env/seed<k>``."""
    status: str
    """``done`` (ran to the end now), ``skipped`` (finished before), ``failed`` or ``interrupted``."""
    error: str = ""
    wall_s: float = 0.0
    """Seconds this call spent on the cell."""


@dataclass(frozen=True)
class GridRunResult:
    out: Path
    outcomes: tuple[CellOutcome, ...]

    @property
    def failed(self) -> list[CellOutcome]:
        return [o for o in self.outcomes if o.status in ("failed", "interrupted")]


@dataclass(frozen=True)
class PlannedCell:
    cell: Cell
    dir: Path
    action: str
    """``skip``, ``run`` or ``reject`` (the directory holds something else; ``reason`` says what)."""
    reason: str = ""
    resume_from: int | None = None


def cell_state_for(grid: Grid, cell: Cell) -> CellState:
    """The ``pending`` cell.json of a new cell."""
    return CellState(grid=grid.name, grid_file=str(grid.path.resolve()), label=cell.label, algo=cell.algo,
                     env_id=cell.env_id, seed=cell.seed, train=cell.train, config=cell.config.to_dict(),
                     adapt=adapt_settings_dict(cell.adapt), cpus=cell.cpus, train_env_id=cell.train_env_id)


def _same_config(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal but for ``run.run_dir`` (an output directory may be moved)."""
    return not config_mismatch(a, b, ignore=("run.run_dir",))


def _pid_running_cell(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"metacpo.benchmark.cell" in cmdline


def plan(grid: Grid, out: Path) -> list[PlannedCell]:
    """Decide per cell: skip (finished, same config), run (new or unfinished), or reject."""
    planned = []
    for cell in grid.cells(out):
        d = Path(cell.config.run.run_dir)
        try:
            state = read_state(d)
        except ValueError as exc:
            planned.append(PlannedCell(cell, d, "reject", str(exc)))
            continue
        want = cell_state_for(grid, cell)
        if state is None:
            if (d / "checkpoint.pt").exists() or (d / "progress.csv").exists():
                planned.append(PlannedCell(cell, d, "reject", f"{d} holds a run without {CELL_FILE} (not started by "
                                           "metacpo benchmark); remove it or use another --out"))
            else:
                planned.append(PlannedCell(cell, d, "run"))
            continue
        diff = config_mismatch(migrate_keys(state.config), want.config, ignore=_IGNORED)
        diff += [f"{k}: cell {getattr(state, k)!r} vs grid {getattr(want, k)!r}"
                 for k in ("label", "algo", "env_id", "seed", "train") if getattr(state, k) != getattr(want, k)]
        if diff:
            planned.append(PlannedCell(cell, d, "reject", f"{d} holds a cell with another config ({'; '.join(diff[:3])}); "
                                       "use another --out or remove it"))
            continue
        last = state.attempts[-1] if state.attempts else None
        if (state.status == "running" and last is not None and last.provenance.get("host") == socket.gethostname()
                and _pid_running_cell(last.pid)):
            planned.append(PlannedCell(cell, d, "reject", f"still running in process {state.attempts[-1].pid} "
                                       "(started by an earlier metacpo benchmark); wait for it or stop it"))
            continue
        try:
            it = checkpoint_iteration(d)
        except ValueError as exc:
            planned.append(PlannedCell(cell, d, "reject", str(exc)))
            continue
        if cell.train and it is not None and it > cell.config.run.iters:
            planned.append(PlannedCell(cell, d, "reject", f"{d} was trained for {it} iterations but the grid asks for "
                                       f"run.iters = {cell.config.run.iters}; use another --out"))
            continue
        trained = (not cell.train and it is not None) or (it is not None and it >= cell.config.run.iters)
        adapted = cell.adapt is None or state.adapt_done == want.adapt
        if state.status == "done" and trained and adapted and _same_config(migrate_keys(state.config), want.config):
            planned.append(PlannedCell(cell, d, "skip"))
        else:
            planned.append(PlannedCell(cell, d, "run", resume_from=it))
    return planned


def _die_with_parent() -> None:  # pragma: no cover (runs in the child between fork and exec)
    """Linux: the cell process gets SIGTERM if the benchmark process dies (it records 'interrupted')."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def cell_command(cell_dir: Path) -> list[str]:
    return [sys.executable, "-m", "metacpo.benchmark.cell", str(cell_dir)]


def run_cell_process(cell_dir: str) -> int:
    """Run one cell in a child process, its output appended to ``cell.log``; returns the exit code.

    Also the body of the Ray task (it runs where Ray placed it; ``cell_dir`` must be on a shared
    filesystem when the cluster has several nodes).
    """
    proc = _start_cell(Path(cell_dir))
    try:
        return proc.wait()
    except BaseException:
        proc.terminate()
        proc.wait()
        raise


def _start_cell(d: Path) -> subprocess.Popen:
    """Start the cell process of ``d``, its output appended to ``cell.log`` after a header line."""
    with open(d / LOG_FILE, "ab") as log:
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} on {socket.gethostname()}: "
                  f"{' '.join(cell_command(d))}\n".encode())
        log.flush()
        return subprocess.Popen(cell_command(d), stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)


def _finish(d: Path, code: int) -> CellState:
    """The cell's final state; a process that died without recording its end is marked failed."""
    state = read_state(d)
    assert state is not None
    if state.status in ("running", "pending"):
        tail = ""
        log = d / LOG_FILE
        if log.exists():
            lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
            tail = lines[-1][:200] if lines else ""
        error = f"cell process exited with status {code}" + (f" ({tail})" if tail else "")
        state = replace(state, status="failed", error=error)
        write_state(d, state)
    return state


class _Progress:
    def __init__(self, total: int, echo: Callable[[str], None], *, running_word: str = "running") -> None:
        self.total, self.echo, self.running_word = total, echo, running_word
        self.done = self.failed = self.running = 0

    def line(self, msg: str) -> None:
        self.echo(f"[{self.done}/{self.total} done, {self.running} {self.running_word}, {self.failed} failed] {msg}")


def _iterations_done(d: Path) -> int:
    try:
        with open(d / "progress.csv") as fh:
            return max(0, sum(1 for _ in fh) - 1)
    except OSError:
        return 0


def run_grid(
    grid: Grid,
    *,
    out: str | os.PathLike[str],
    jobs: int = 0,
    ray_address: str = "",
    echo: Callable[[str], None] | None = None,
    heartbeat_s: float = 60.0,
) -> GridRunResult:
    """Run the grid's cells into ``out``; see the module docstring.

    ``jobs``: cells at once (0: 1 locally, no limit on Ray, where the cluster's CPUs limit them).
    ``heartbeat_s``: also print the iterations of running cells this often.
    """
    echo = echo or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if jobs < 0:
        raise ValueError(f"--jobs must be >= 0, got {jobs}")
    root = Path(out).resolve()
    root.mkdir(parents=True, exist_ok=True)
    lock = open(root / LOCK_FILE, "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise ValueError(f"another metacpo benchmark is running on {root}; wait for it or use another --out") from None
    try:
        return _run(grid, root, jobs, ray_address, echo, heartbeat_s)
    finally:
        lock.close()


def _run(grid: Grid, root: Path, jobs: int, ray_address: str, echo: Callable[[str], None], heartbeat_s: float) -> GridRunResult:
    planned = plan(grid, root)
    outcomes: dict[str, CellOutcome] = {}
    # on Ray a submitted cell may wait for free CPUs
    prog = _Progress(len(planned), echo, running_word="submitted" if ray_address else "running")
    todo = []
    for p in planned:
        if p.action == "skip":
            outcomes[p.cell.key] = CellOutcome(p.cell.key, "skipped")
            prog.done += 1
        elif p.action == "reject":
            outcomes[p.cell.key] = CellOutcome(p.cell.key, "failed", p.reason)
            prog.failed += 1
        else:
            todo.append(p)
    where = f"Ray cluster {ray_address}" if ray_address else "this machine"
    limit = jobs or (len(todo) if ray_address else 1)
    echo(f"grid {grid.name}: {len(planned)} cells, {prog.done} finished before (skipped), {prog.failed} rejected, "
         f"{len(todo)} to run on {where}, {min(limit, max(len(todo), 1))} at a time; output {root}")
    for p in planned:
        if p.action == "reject":
            prog.line(f"failed {p.cell.key}: {p.reason}")
    _write_pending_states(grid, todo)
    launcher = _RayLauncher(ray_address) if ray_address and todo else _LocalLauncher()
    running: dict[str, tuple[PlannedCell, Any, float]] = {}
    pending = list(todo)
    last_beat = time.time()
    init_of = _init_cells(planned)
    try:
        while pending or running:
            _fail_cells_without_init(pending, init_of, outcomes, prog)
            while len(running) < limit:
                p = next((p for p in pending if _init_ready(p, init_of, outcomes)), None)
                if p is None:
                    break
                pending.remove(p)
                handle = launcher.start(p)
                running[p.cell.key] = (p, handle, time.time())
                prog.running += 1
                how = "start" if not p.resume_from else f"resume from iteration {p.resume_from}"
                prog.line(f"{how} {p.cell.key} ({p.cell.cpus} CPU)")
            for key, code in launcher.poll([h for _, h, _ in running.values()], running):
                p, _, started = running.pop(key)
                prog.running -= 1
                state = _finish(p.dir, code)
                took = time.time() - started
                if state.status == "done":
                    prog.done += 1
                    outcomes[key] = CellOutcome(key, "done", wall_s=took)
                    prog.line(f"done {key} in {took:.1f} s")
                else:
                    prog.failed += 1
                    outcomes[key] = CellOutcome(key, state.status, state.error, wall_s=took)
                    prog.line(f"{state.status} {key}: {state.error} (log: {p.dir / LOG_FILE})")
            if running and time.time() - last_beat >= heartbeat_s:
                last_beat = time.time()
                parts = [f"{k} {_iterations_done(p.dir)}/{p.cell.config.run.iters if p.cell.train else 0} it"
                         for k, (p, _, _) in running.items()]
                prog.line(f"{prog.running_word}: " + ", ".join(parts))
    except BaseException:
        launcher.stop([h for _, h, _ in running.values()])
        for key, (p, _, _) in running.items():
            state = read_state(p.dir)
            if state is not None and state.status in ("running", "pending"):
                write_state(p.dir, replace(state, status="interrupted", error="benchmark interrupted"))
        raise
    finally:
        launcher.close()
    ordered = tuple(outcomes[c.cell.key] for c in planned)
    return GridRunResult(out=root, outcomes=ordered)


def _write_pending_states(grid: Grid, todo: list[PlannedCell]) -> None:
    """(Re)write the state of the cells about to run: the grid's config and meta-test settings
    now, keeping a cell's attempts, wall times and (if it is not retrained) its finished meta-test."""
    for p in todo:
        state = read_state(p.dir)
        want = cell_state_for(grid, p.cell)
        if state is not None:
            adapt_done = state.adapt_done if _same_config(migrate_keys(state.config), want.config) else None  # retrained -> re-test
            want = replace(want, attempts=state.attempts, train_wall_s=state.train_wall_s,
                           adapt_wall_s=state.adapt_wall_s, adapt_done=adapt_done, error=state.error)
        write_state(p.dir, want)


def _fail_cells_without_init(pending: list[PlannedCell], init_of: Mapping[str, str],
                             outcomes: dict[str, CellOutcome], prog: _Progress) -> None:
    """Take the pending cells whose init cell ended without a trained run out of ``pending``,
    as failed (outcome, cell.json, progress line)."""
    for p in [p for p in pending if _init_failed(p, init_of, outcomes)]:
        pending.remove(p)
        dep = init_of[p.cell.key]
        why = f"its init cell {dep} {outcomes[dep].status}: nothing to start from"
        outcomes[p.cell.key] = CellOutcome(p.cell.key, "failed", why)
        state = read_state(p.dir)
        if state is not None:
            write_state(p.dir, replace(state, status="failed", error=why))
        prog.failed += 1
        prog.line(f"failed {p.cell.key}: {why}")


def _init_cells(planned: list[PlannedCell]) -> dict[str, str]:
    """Cell key -> key of the grid cell whose run it starts from (``run.init_from``), for cells
    that start from another cell of this grid."""
    by_dir = {p.dir.resolve(): p.cell.key for p in planned}
    out = {}
    for p in planned:
        src = p.cell.config.run.init_from
        if src and Path(src).resolve() in by_dir:
            out[p.cell.key] = by_dir[Path(src).resolve()]
    return out


def _init_ready(p: PlannedCell, init_of: Mapping[str, str], outcomes: Mapping[str, CellOutcome]) -> bool:
    """Whether ``p`` may start: it has no init cell, or that cell is done (now or before)."""
    dep = init_of.get(p.cell.key)
    return dep is None or (dep in outcomes and outcomes[dep].status in ("done", "skipped"))


def _init_failed(p: PlannedCell, init_of: Mapping[str, str], outcomes: Mapping[str, CellOutcome]) -> bool:
    """Whether ``p`` can no longer start: its init cell ended (or was rejected) without a trained run."""
    dep = init_of.get(p.cell.key)
    return dep is not None and dep in outcomes and not _init_ready(p, init_of, outcomes)


class _LocalLauncher:
    """Cells as child processes of this one."""

    def start(self, p: PlannedCell) -> subprocess.Popen:
        return _start_cell(p.dir)

    def poll(self, handles: list[Any], running: dict[str, tuple[PlannedCell, Any, float]]) -> list[tuple[str, int]]:
        finished = [(k, h.returncode) for k, (_, h, _) in running.items() if h.poll() is not None]
        if not finished:
            time.sleep(0.2)
        return finished

    def stop(self, handles: list[Any]) -> None:
        for h in handles:
            if h.poll() is None:
                h.terminate()
        deadline = time.time() + 30
        for h in handles:
            try:
                h.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                h.kill()
                h.wait()

    def close(self) -> None:
        pass


class _RayLauncher:
    """Cells as Ray tasks asking for the cell's CPUs; each runs the cell process where Ray put it."""

    def __init__(self, address: str) -> None:
        try:
            import ray
        except ImportError:
            raise ValueError("--ray-address needs Ray: pip install -e '.[ray]'") from None
        self.ray = ray
        # Ray workers get this process's PYTHONPATH, so they import the same metacpo source.
        import metacpo

        src = str(Path(metacpo.__file__).resolve().parent.parent)
        paths = [src] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != src]
        try:
            ray.init(address=address, runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}},
                     log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ValueError(f"cannot join the Ray cluster at --ray-address {address!r}: "
                             f"{' '.join(str(exc).split())[:200]} (a cluster started by `ray start` (Ray >= 2.59) "
                             "wants its token: export RAY_AUTH_MODE=token, and RAY_AUTH_TOKEN or ~/.ray/auth_token "
                             "on other machines; docs/benchmark.md)") from None
        self.task = ray.remote(max_retries=0)(run_cell_process)

    def start(self, p: PlannedCell) -> Any:
        return self.task.options(num_cpus=p.cell.cpus).remote(str(p.dir))

    def poll(self, handles: list[Any], running: dict[str, tuple[PlannedCell, Any, float]]) -> list[tuple[str, int]]:
        if not handles:
            return []
        ready, _ = self.ray.wait(handles, num_returns=len(handles), timeout=0.5)
        out = []
        for k, (_, h, _) in running.items():
            if h in ready:
                try:
                    code = int(self.ray.get(h))
                except Exception as exc:  # the Ray task itself died (node lost, ...)
                    print(f"Ray task of {k} failed: {' '.join(str(exc).split())[:200]}", file=sys.stderr)
                    code = -1
                out.append((k, code))
        return out

    def stop(self, handles: list[Any]) -> None:
        for h in handles:
            self.ray.cancel(h, force=True)

    def close(self) -> None:
        self.ray.shutdown()

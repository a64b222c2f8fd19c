"""ProcessSampler worker faults: a worker SIGKILLed mid-call (or while idle) is replaced, its jobs
re-run from the generator state the parent knew, and the batch is the one without the fault.
Also: one call with several tasks runs them in parallel on all workers, batches in task order."""

import logging
import os
import signal
import threading

import numpy as np
import pytest
import torch

from metacpo.data.normalizer import NormalizerState
from metacpo.models.policy import GaussianMLPPolicy, PolicySpec
from metacpo.samplers import LocalSampler, PolicySnapshot
from metacpo.samplers.process import ProcessSampler
from metacpo.tasks import get_distribution
from tests.conftest import cpu_seconds

ENV = "SafetyPointStcircle1-v0"  # ~1.5k steps/s with the policy: a 2000-step job lasts > 1 s
TASKS = get_distribution(ENV).sample_n(np.random.default_rng(0), 2)


def _snapshot():
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(PolicySpec(obs_dim=28, act_dim=2, hidden=(8,)))
    return PolicySnapshot.from_policy(policy, NormalizerState.identity(28))


def test_tasks_run_in_parallel_and_a_worker_killed_mid_sample_is_replaced(caplog, kill_when_busy, same_batch):
    snap = _snapshot()
    steps = 8000  # per task, one job per worker (~0.3-0.6 CPU-s each); the worker is killed mid-job
    with LocalSampler(ENV, seed=11, num_virtual_workers=2) as loc:
        expected = loc.sample(snapshot=snap, num_steps=steps, tasks=TASKS)
        expected_next = loc.sample(snapshot=snap, num_steps=1000, tasks=TASKS[:1])[0]  # 2 episodes: split over both workers
        expected_state = loc.state_dict()
    with ProcessSampler(ENV, seed=11, num_workers=2) as proc:
        pids = proc.worker_pids()
        killer = kill_when_busy(pids[1])
        with caplog.at_level(logging.WARNING, logger="metacpo.samplers"):
            got = proc.sample(snapshot=snap, num_steps=steps, tasks=TASKS)
        killer.stop()
        assert killer.killed, "the job finished before the worker was killed"
        assert proc.fault_count == 1
        ev = proc.fault_events[0]
        assert (ev.backend, ev.worker, ev.call, ev.jobs) == ("process", 1, 0, 1)
        assert any("sampler worker 1 (process) died" in r.getMessage() for r in caplog.records)
        new_pids = proc.worker_pids()
        assert new_pids[0] == pids[0] and new_pids[1] != pids[1]
        # Per-task batches in task order, each from its own worker: all workers used by one call.
        assert [b.task for b in got] == TASKS
        assert [b.info["workers"] for b in got] == [[0], [1]]
        # The full batch, and exactly the one an undisturbed run gives.
        for g, e in zip(got, expected, strict=True):
            assert len(g) == steps
            same_batch(g, e)
        # The replacement continues the dead worker's generator stream.
        (nxt,) = proc.sample(snapshot=snap, num_steps=1000, tasks=TASKS[:1])
        assert nxt.info["workers"] == [0, 1]
        same_batch(nxt, expected_next)
        assert proc.state_dict() == expected_state
        assert proc.fault_count == 1


def test_worker_dead_while_idle_is_replaced_at_next_call(same_batch):
    snap = _snapshot()
    with LocalSampler(ENV, seed=4, num_virtual_workers=2) as loc:
        expected = loc.sample(snapshot=snap, num_steps=200)  # the env's own task (drawn from the seed)
    with ProcessSampler(ENV, seed=4, num_workers=2) as proc:
        pid = proc.worker_pids()[0]
        os.kill(pid, signal.SIGKILL)
        proc._procs[0].join(timeout=10)  # it is gone before the call starts
        got = proc.sample(snapshot=snap, num_steps=200)  # the replacement draws the same own task
        assert proc.fault_count == 1 and proc.fault_events[0].worker == 0
        assert proc.worker_pids()[0] != pid
    same_batch(got[0], expected[0])


def test_worker_that_keeps_dying_fails_loudly():
    snap = _snapshot()
    with ProcessSampler(ENV, seed=4, num_workers=1, max_faults_per_call=0) as proc:
        os.kill(proc.worker_pids()[0], signal.SIGKILL)
        proc._procs[0].join(timeout=10)
        with pytest.raises(RuntimeError, match=r"died 1 times .*max_faults_per_call=0"):
            proc.sample(snapshot=snap, num_steps=50)
        assert proc.fault_count == 0


def test_training_survives_a_killed_worker_and_logs_the_event(tmp_path):
    import multiprocessing as mp

    from metacpo.config.schema import TrainConfig
    from metacpo.training import train

    run_dir = tmp_path / "run"
    config = TrainConfig.from_dict({
        "algo": "cpo", "env": {"env_id": "SafetyPointStcircle0-v0"},
        "policy": {"hidden": [8]}, "critic": {"hidden": [8]},
        "sampler": {"kind": "process", "workers": 2, "steps_per_iter": 1000},
        "run": {"iters": 3, "seed": 2, "run_dir": str(run_dir), "tensorboard": False},
    })
    killed: list[int] = []

    def kill_once_iteration_0_is_logged():
        while not (run_dir / "progress.csv").exists():
            threading.Event().wait(0.01)
        workers = [p for p in mp.active_children() if p.name.startswith("metacpo-sampler-")]
        os.kill(workers[0].pid, signal.SIGKILL)
        killed.append(workers[0].pid)

    killer = threading.Thread(target=kill_once_iteration_0_is_logged, daemon=True)
    killer.start()
    result = train(config, progress=False)
    killer.join(timeout=5)
    assert killed and result.iterations == 3
    rows = (run_dir / "progress.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 3
    log = (run_dir / "events.log").read_text()
    assert log.count("(process) died") == 1 and "replaced it and re-ran its jobs" in log


TASKS3 = get_distribution(ENV).sample_n(np.random.default_rng(1), 3)  # worker 0: tasks 0, 2; worker 1: task 1


class MidSendKiller:
    """SIGKILLs worker ``index`` once part of its reply sits unread in its pipe (the parent is
    still reading worker 0, which holds twice the work): the reply (~1.5 MB) is far larger than
    the socket buffer, so the worker is blocked inside ``send`` and the parent later reads a
    truncated message ("got end of file during message")."""

    def __init__(self, proc: ProcessSampler, index: int) -> None:
        import fcntl
        import termios

        self.pending = 0
        self.killed = False
        self._stop = threading.Event()
        conn, pid = proc._conns[index], proc.worker_pids()[index]

        def run() -> None:
            buf = bytearray(4)
            while not self._stop.is_set():
                fcntl.ioctl(conn.fileno(), termios.FIONREAD, buf)
                n = int.from_bytes(buf, "little")
                if n > 0:
                    threading.Event().wait(0.02)  # let it fill the buffer and block
                    fcntl.ioctl(conn.fileno(), termios.FIONREAD, buf)
                    self.pending = int.from_bytes(buf, "little")
                    os.kill(pid, signal.SIGKILL)
                    self.killed = True
                    return
                self._stop.wait(0.002)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def test_worker_killed_at_any_moment_gives_the_no_fault_batches(kill_when_busy, same_batch):
    """Kill points: both idle, mid-rollout early and late, both mid-rollout at once, and
    mid-send (reply half written). Every call's batches equal the undisturbed ones."""
    import pickle

    snap = _snapshot()
    steps = 3000
    points = ["none (a share's first call runs its jobs as planned)", "none (measures worker 0's CPU per call)",
              "idle, both workers", "rollout, worker 0 early", "rollout, worker 0 late", "rollout, both workers",
              "none, as planned from here", "mid-send, worker 1"]  # calls 2-6: episodes spread over the workers
    with LocalSampler(ENV, seed=5, num_virtual_workers=2) as loc:
        expected = [loc.sample(snapshot=snap, num_steps=steps, tasks=TASKS3) for _ in points]
        final_state = loc.state_dict()
    reply_bytes = len(pickle.dumps(expected[0][1]))
    faults = 0
    call_cpu = 0.0
    with ProcessSampler(ENV, seed=5, num_workers=2) as proc:
        for k, point in enumerate(points):
            pids = proc.worker_pids()
            killers: list = []
            cpu0 = cpu_seconds(pids[0])
            died = 0
            if point.startswith("none"):  # the first planned call after spread ones also syncs the workers
                proc.spread_episodes = not point.endswith("as planned from here")
            elif point.startswith("idle"):
                for i, pid in enumerate(pids):
                    os.kill(pid, signal.SIGKILL)
                    proc._procs[i].join(timeout=10)
                died = 2
            elif point == "rollout, worker 0 early":
                killers, died = [kill_when_busy(pids[0], cpu=0.02)], 1
            elif point == "rollout, worker 0 late":  # after half its CPU in a call (at 75% the killer's
                # thread, polling every 2 ms, missed the last quarter once on a loaded 2-core machine)
                killers, died = [kill_when_busy(pids[0], cpu=0.5 * call_cpu)], 1
            elif point == "rollout, both workers":
                killers, died = [kill_when_busy(pids[0], cpu=0.05), kill_when_busy(pids[1], cpu=0.05)], 2
            else:  # needs worker 1 done long before worker 0: as planned (and no sync reply to mistake for it)
                killers, died = [MidSendKiller(proc, 1)], 1
            got = proc.sample(snapshot=snap, num_steps=steps, tasks=TASKS3)
            if point.startswith("none (measures"):
                call_cpu = cpu_seconds(pids[0]) - cpu0
            for kl in killers:
                kl.stop()
                assert kl.killed, f"{point}: the work finished before the kill"
            if point.startswith("mid-send"):
                assert 0 < killers[0].pending < reply_bytes, ("the worker was not killed part-way through its reply", killers[0].pending, reply_bytes)
            faults += died
            assert proc.fault_count == faults, point
            assert [b.task for b in got] == TASKS3
            for g, e in zip(got, expected[k], strict=True):
                same_batch(g, e)
        assert proc.state_dict() == final_state

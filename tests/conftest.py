"""Shared test helpers."""

import os
import signal
import threading

import numpy as np
import pytest

BATCH_FIELDS = ("obs", "actions", "rewards", "costs", "terminated", "truncated", "next_obs", "log_probs",
                "episode_returns", "episode_costs", "episode_lengths")


def assert_same_batch(x, y) -> None:
    """Two Batches are bit-identical (every array and the episode seeds)."""
    for k in BATCH_FIELDS:
        np.testing.assert_array_equal(getattr(x, k), getattr(y, k), err_msg=k)
    assert x.info["episode_seeds"] == y.info["episode_seeds"]


@pytest.fixture
def same_batch():
    """``same_batch(x, y)``: assert two Batches are bit-identical."""
    return assert_same_batch


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` (Linux /proc)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class BusyKiller:
    """SIGKILLs ``pid`` once it has used ``cpu`` more CPU-seconds, i.e. in the middle of a job
    (an idle worker blocks on its pipe and uses none), whatever the machine's speed.

    Gives up (``killed`` stays False) when :meth:`stop` is called first, so a job that finished
    too early makes the test fail on its assertions instead of hanging.
    """

    def __init__(self, pid: int, cpu: float) -> None:
        self.pid, self.cpu = pid, cpu
        self.killed = False
        self._stop = threading.Event()
        self._start = cpu_seconds(pid)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if cpu_seconds(self.pid) - self._start >= self.cpu:
                os.kill(self.pid, signal.SIGKILL)
                self.killed = True
                return
            self._stop.wait(0.002)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def kill_when_busy():
    """``kill_when_busy(pid, cpu=0.05) -> BusyKiller``; stopped at teardown."""
    killers: list[BusyKiller] = []

    def make(pid: int, cpu: float = 0.05) -> BusyKiller:
        killers.append(BusyKiller(pid, cpu))
        return killers[-1]

    yield make
    for k in killers:
        k.stop()

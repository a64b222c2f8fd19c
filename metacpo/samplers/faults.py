"""Worker-fault records shared by the fault-tolerant backends (process and Ray).

A backend that loses a worker (process killed, actor died) mid-call replaces it, restores the
replacement's generator to the last state the driver knew, re-runs the lost worker's jobs and
records a :class:`FaultEvent`. Because the replacement restarts from the generator state the
dead worker had at the start of the call, the re-sampled share is the one the dead worker would
have produced: a fault never changes the batch, only the time it takes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

LOG = logging.getLogger("metacpo.samplers")


@dataclass(frozen=True)
class FaultEvent:
    """One lost worker, replaced and its share re-sampled."""

    backend: str
    """Which sampler backend lost it: ``process`` or ``ray``."""
    worker: int
    """Index of the worker (0 .. num_workers-1) that died."""
    call: int
    """Number of the sample() call (0-based, per sampler) during which it was found dead."""
    jobs: int
    """How many jobs it held (re-run on the replacement); 0 if it died while idle."""
    reason: str
    """What was observed (EOF on its pipe, Ray's actor-died error, ...)."""
    time: float
    """Wall-clock time (``time.time()``) when the driver noticed."""

    def message(self) -> str:
        return (f"sampler worker {self.worker} ({self.backend}) died during sample call {self.call} "
                f"holding {self.jobs} job(s): {self.reason}; replaced it and re-ran its jobs")


def record_fault(events: list[FaultEvent], *, backend: str, worker: int, call: int, jobs: int, reason: str) -> FaultEvent:
    """Append a :class:`FaultEvent` to ``events`` and log it as a warning; returns it."""
    ev = FaultEvent(backend=backend, worker=worker, call=call, jobs=jobs, reason=reason, time=time.time())
    events.append(ev)
    LOG.warning(ev.message())
    return ev

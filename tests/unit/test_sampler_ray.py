"""RaySampler: same batches as the local/process backends, tasks spread over actors, generator
state round trips, lazy import, and an actor SIGKILLed mid-call is replaced with the batch unchanged.

One local Ray instance (2 CPUs, no dashboard) and one 2-actor sampler are shared by the module.
"""

import logging
import subprocess
import sys

import numpy as np
import pytest
import torch

from metacpo.data.normalizer import NormalizerState
from metacpo.models.policy import GaussianMLPPolicy, PolicySpec
from metacpo.samplers import LocalSampler, PolicySnapshot, make_sampler
from metacpo.samplers.ray import RaySampler
from metacpo.tasks import get_distribution

ENV = "SafetyPointStcircle1-v0"
TASKS = get_distribution(ENV).sample_n(np.random.default_rng(1), 3)


@pytest.fixture(scope="module")
def ray_sampler():
    import ray

    ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
             object_store_memory=100 * 1024**2, logging_level=logging.WARNING)
    try:
        with RaySampler(ENV, seed=7, num_workers=2) as s:
            yield s
    finally:
        ray.shutdown()


def _snapshot(seed=0):
    torch.manual_seed(seed)
    policy = GaussianMLPPolicy(PolicySpec(obs_dim=28, act_dim=2, hidden=(8,)))
    norm = NormalizerState(mean=np.full(28, 0.1), var=np.full(28, 2.0), clip=5.0)
    return PolicySnapshot.from_policy(policy, norm)


def test_import_metacpo_does_not_import_ray():
    code = ("import sys, metacpo, metacpo.samplers, metacpo.samplers.ray, metacpo.training, metacpo.cli; "
            "assert 'ray' not in sys.modules, 'ray imported'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_ray_equals_local_spreads_tasks_over_actors_and_round_trips_state(ray_sampler, same_batch):
    s = ray_sampler
    snap = _snapshot()
    with LocalSampler(ENV, seed=7, num_virtual_workers=2) as loc:
        s.load_state_dict(loc.state_dict())
        # First use of the module's sampler: tasks=None samples each env's own task, drawn from
        # the run seed, hence the same on every backend.
        same_batch(s.sample(snapshot=snap, num_steps=100)[0], loc.sample(snapshot=snap, num_steps=100)[0])
        start = s.state_dict()
        # 3 tasks on 2 actors: tasks 0 and 2 on actor 0, task 1 on actor 1; one task of two whole
        # episodes: split in two.
        expected = loc.sample(snapshot=snap, num_steps=150, tasks=TASKS)
        expected += loc.sample(snapshot=snap, num_steps=1000, tasks=TASKS[1:2])
        expected_state = loc.state_dict()
    got = s.sample(snapshot=snap, num_steps=150, tasks=TASKS)
    got += s.sample(snapshot=snap, num_steps=1000, tasks=TASKS[1:2])
    assert [b.task for b in got] == TASKS + TASKS[1:2]  # per-task batches, in task order
    assert [b.info["workers"] for b in got] == [[0], [1], [0], [0, 1]]
    assert [len(b) for b in got] == [150, 150, 150, 1000]  # 1000 = two whole 500-step episodes, one per actor
    for g, e in zip(got, expected, strict=True):
        same_batch(g, e)
    assert s.state_dict() == expected_state
    # Restoring the generators replays the same batches.
    s.load_state_dict(start)
    again = s.sample(snapshot=snap, num_steps=150, tasks=TASKS)
    for g, e in zip(again, expected[:3], strict=True):
        same_batch(g, e)
    with pytest.raises(ValueError, match="holds 1 worker generator states; this sampler has 2 workers"):
        s.load_state_dict({"worker_rngs": start["worker_rngs"][:1]})


def test_factory_and_bad_sizes_fail_loudly(ray_sampler):
    with pytest.raises(ValueError, match="unknown sampler kind 'dask'"):
        make_sampler("dask", ENV, seed=0)
    # The module's sampler holds 2 of the 3 CPUs: a second one too large fails at once instead of waiting forever.
    with pytest.raises(ValueError, match=r"need 2 CPUs but the Ray cluster has 1 free \(of 3\)"):
        RaySampler(ENV, seed=0, num_workers=2)
    with pytest.raises(ValueError, match="num_workers must be positive"):
        RaySampler(ENV, seed=0, num_workers=0)
    import ray

    assert ray.is_initialized()  # a sampler never shuts down a Ray session it did not start


def test_actor_killed_mid_sample_is_replaced_and_batch_is_unchanged(ray_sampler, caplog, kill_when_busy, same_batch):
    s = ray_sampler
    snap = _snapshot(1)
    steps = 8000  # per task, one job per worker (~0.3-0.6 CPU-s each); the worker is killed mid-job
    with LocalSampler(ENV, seed=7, num_virtual_workers=2) as loc:
        s.load_state_dict(loc.state_dict())
        expected = loc.sample(snapshot=snap, num_steps=steps, tasks=TASKS[:2])
        expected_next = loc.sample(snapshot=snap, num_steps=200, tasks=TASKS[:1])
    pids = s.worker_pids()
    import ray

    assert pids == ray.get([s.actor(i).pid.remote() for i in range(2)])
    before = s.fault_count
    killer = kill_when_busy(pids[0])
    with caplog.at_level(logging.WARNING, logger="metacpo.samplers"):
        got = s.sample(snapshot=snap, num_steps=steps, tasks=TASKS[:2])
    killer.stop()
    assert killer.killed, "the job finished before the worker was killed"
    assert s.fault_count == before + 1
    ev = s.fault_events[-1]
    assert (ev.backend, ev.worker, ev.jobs) == ("ray", 0, 1)
    assert any("sampler worker 0 (ray) died" in r.getMessage() for r in caplog.records)
    new = s.worker_pids()
    assert new[0] != pids[0] and new[1] == pids[1]
    assert [len(b) for b in got] == [steps, steps] and [b.info["workers"] for b in got] == [[0], [1]]
    for g, e in zip(got, expected, strict=True):
        same_batch(g, e)
    nxt = s.sample(snapshot=snap, num_steps=200, tasks=TASKS[:1])  # the replacement keeps its stream
    same_batch(nxt[0], expected_next[0])


def test_resumed_actors_continue_bit_for_bit_on_car(ray_sampler, same_batch, tmp_path):
    """As tests/unit/test_episodes.py::check_resume_on_car: fresh actors repeat the checkpointed last
    resets (two quarter-CPU actors beside the module's sampler)."""
    from tests.unit.test_episodes import check_resume_on_car

    check_resume_on_car(lambda env_id, seed: RaySampler(env_id, seed=seed, num_workers=2, num_cpus_per_worker=0.25),
                        same_batch, tmp_path)

import numpy as np
import pytest
import torch

from metacpo.data.normalizer import NormalizerState
from metacpo.models.policy import GaussianMLPPolicy, PolicySpec
from metacpo.samplers import LocalSampler, PolicySnapshot, make_env_for, plan_jobs, set_task
from metacpo.samplers.process import ProcessSampler

ENV = "SafetyPointCircle1-v0"  # 28-d observations, 2-d actions, 500-step episodes


def _snapshot(seed=0, deterministic=False):
    torch.manual_seed(seed)
    policy = GaussianMLPPolicy(PolicySpec(obs_dim=28, act_dim=2, hidden=(8,)))
    norm = NormalizerState(mean=np.full(28, 0.1), var=np.full(28, 2.0), clip=5.0)
    return policy, PolicySnapshot.from_policy(policy, norm, deterministic=deterministic)


def test_local_sampler_is_deterministic_and_ends_on_episode_boundaries(same_batch):
    policy, snap = _snapshot()
    with LocalSampler(ENV, seed=3, num_virtual_workers=2) as s:
        start = s.state_dict()
        (a,) = s.sample(snapshot=snap, num_steps=1000)  # two whole 500-step episodes, one per virtual worker
        after = s.state_dict()
        s.load_state_dict(start)
        (b,) = s.sample(snapshot=snap, num_steps=1000)
        same_batch(a, b)  # same generator states -> same batch
        assert s.state_dict() == after
        (short,) = s.sample(snapshot=snap, num_steps=120)  # shorter than an episode: one 120-step fragment
    assert len(a) == 1000 and a.info["workers"] == [0, 1] and not a.info["cut"] and not a.cut.any()
    assert a.truncated[499] and a.truncated[999] and not a.terminated.any()  # parts end on a boundary
    assert len(a.episode_returns) == 2  # each part completed its episode
    assert len(short) == 120 and short.info["workers"] == [0] and short.cut[-1] and short.cut.sum() == 1
    assert len(short.episode_returns) == 0
    # Behaviour log-probs were computed on normalised observations with the snapshot's statistics.
    obs = torch.as_tensor(snap.obs_norm.normalize(a.obs), dtype=torch.float32)
    lp = policy.log_prob(obs, torch.as_tensor(a.actions, dtype=torch.float32)).detach().double().numpy()
    np.testing.assert_allclose(lp, a.log_probs, atol=1e-5)
    # Every episode (and worker) starts from its own seed and start state.
    seeds = a.info["episode_seeds"]
    assert len(seeds) == 2 and seeds[0] != seeds[1]
    assert not np.allclose(a.obs[0], a.obs[500])


def test_process_sampler_equals_local_sampler_bit_for_bit(same_batch):
    _, snap = _snapshot()
    with LocalSampler(ENV, seed=5, num_virtual_workers=2) as loc:
        expected = loc.sample(snapshot=snap, num_steps=1000)
        loc_state = loc.state_dict()
    with ProcessSampler(ENV, seed=5, num_workers=2) as proc:
        got = proc.sample(snapshot=snap, num_steps=1000)
        assert proc.state_dict() == loc_state  # workers' generators advanced identically
        proc.load_state_dict(loc_state)
        assert proc.state_dict() == loc_state
    assert len(got) == len(expected) == 1
    same_batch(got[0], expected[0])
    assert got[0].info["workers"] == [0, 1]


def test_plan_jobs_spreads_tasks_over_workers_in_whole_episodes():
    jobs = plan_jobs(num_tasks=2, num_steps=1001, num_workers=5, episode_steps=100)
    by_task = {k: [j for j in jobs if j.task_index == k] for k in (0, 1)}
    assert [j.num_steps for j in by_task[0]] == [400, 300, 301]  # 10 episodes over 3 parts + the remainder 1
    assert [j.num_steps for j in by_task[1]] == [500, 501]
    assert sorted(j.worker for j in jobs) == [0, 1, 2, 3, 4]
    jobs = plan_jobs(num_tasks=5, num_steps=10, num_workers=2, episode_steps=10)
    assert [j.worker for j in jobs] == [0, 1, 0, 1, 0]
    # never more parts than whole episodes: 4000 steps of 500-step episodes on 16 workers -> 8 parts
    jobs = plan_jobs(num_tasks=1, num_steps=4000, num_workers=16, episode_steps=500)
    assert [j.num_steps for j in jobs] == [500] * 8
    # a share shorter than one episode is impossible: 1000-step Button episodes on 5 workers
    jobs = plan_jobs(num_tasks=1, num_steps=4000, num_workers=5, episode_steps=1000)
    assert [j.num_steps for j in jobs] == [1000] * 4
    with pytest.raises(ValueError):
        plan_jobs(num_tasks=0, num_steps=10, num_workers=2, episode_steps=5)
    # shorter than one episode: not split (one fragment; processing it for an update is an error)
    jobs = plan_jobs(num_tasks=1, num_steps=499, num_workers=2, episode_steps=500)
    assert [(j.num_steps, j.worker) for j in jobs] == [(499, 0)]


def test_plan_jobs_invariants_over_many_shapes():
    for tasks in (1, 2, 3, 5):
        for workers in (1, 2, 3, 5, 8, 16):
            for T in (7, 100, 500):
                for steps in (T, T + 1, 3 * T - 1, 8 * T, 8 * T + 13):  # >= T: each part completes one
                    jobs = plan_jobs(num_tasks=tasks, num_steps=steps, num_workers=workers, episode_steps=T)
                    for k in range(tasks):
                        parts = sorted((j for j in jobs if j.task_index == k), key=lambda j: j.part)
                        assert sum(j.num_steps for j in parts) == steps
                        assert [j.part for j in parts] == list(range(len(parts)))
                        assert all(j.num_steps >= T for j in parts)  # every part completes an episode
                        assert all(j.num_steps % T == 0 for j in parts[:-1])
                    workers_used = [j.worker for j in jobs]
                    assert all(0 <= w < workers for w in workers_used)
                    if tasks < workers:  # a split task's parts run on distinct workers
                        assert len(set(workers_used)) == len(workers_used)


def test_task_switch_on_plain_env_and_unknown_env_fail_loudly():
    env = make_env_for(ENV)
    with pytest.raises(ValueError, match="does not support tasks"):
        set_task(env, object())
    env.close()
    with pytest.raises(ValueError, match="unknown env.*NoSuchEnv-v0"):
        make_env_for("NoSuchEnv-v0")


def test_several_tasks_are_spread_over_workers_and_switched_with_set_task(same_batch):
    from metacpo.tasks import get_distribution

    env_id = "SafetyPointStcircle1-v0"  # metacpo's stochastic circle family
    rng = np.random.default_rng(0)
    tasks = [get_distribution(env_id).sample(rng) for _ in range(3)]
    assert len(set(tasks)) == 3
    _, snap = _snapshot(deterministic=True)
    with LocalSampler(env_id, seed=2, num_virtual_workers=2) as s:
        batches = s.sample(snapshot=snap, tasks=tasks, num_steps=30)
        assert s.env.unwrapped.task_params == tasks[1]  # worker 0 ran tasks 0 and 2, then worker 1 task 1
        start = s.state_dict()
        again = s.sample(snapshot=snap, tasks=tasks, num_steps=30)
        s.load_state_dict(start)
        replay = s.sample(snapshot=snap, tasks=tasks, num_steps=30)
    assert [b.task for b in batches] == tasks
    assert [b.info["workers"] for b in batches] == [[0], [1], [0]]
    assert all(len(b) == 30 and b.truncated[-1] for b in batches)
    for x, y in zip(again, replay):
        same_batch(x, y)
    # Same policy, different tasks: different dynamics/rewards.
    assert not np.allclose(batches[0].rewards, batches[1].rewards)


def test_envs_per_worker_balances_tasks_and_equals_more_workers(same_batch):
    """envs_per_worker=k: the plan (and batches) of n x k workers, run by n processes; 3 tasks of 4
    episodes on 2 processes become 6 episodes per process instead of 8 and 4."""
    from metacpo.tasks import get_distribution

    env_id = "SafetyPointStcircle1-v0"
    tasks = get_distribution(env_id).sample_n(np.random.default_rng(0), 3)
    jobs = plan_jobs(num_tasks=3, num_steps=2000, num_workers=4, episode_steps=500)
    per_process = [sum(j.num_steps for j in jobs if j.worker % 2 == w) for w in range(2)]
    old = plan_jobs(num_tasks=3, num_steps=2000, num_workers=2, episode_steps=500)
    assert per_process == [3000, 3000]
    assert sorted(sum(j.num_steps for j in old if j.worker == w) for w in range(2)) == [2000, 4000]
    _, snap = _snapshot()
    with LocalSampler(env_id, seed=4, num_virtual_workers=4) as loc:
        expected = loc.sample(snapshot=snap, tasks=tasks, num_steps=2000)
        again_expected = loc.sample(snapshot=snap, tasks=tasks, num_steps=1000)
        loc_state = loc.state_dict()
    with ProcessSampler(env_id, seed=4, num_workers=2, envs_per_worker=2) as proc:
        start = proc.state_dict()
        got = proc.sample(snapshot=snap, tasks=tasks, num_steps=2000)
        again = proc.sample(snapshot=snap, tasks=tasks, num_steps=1000)
        assert proc.state_dict() == loc_state
        proc.load_state_dict(start)  # every share's generator goes back
        replay = proc.sample(snapshot=snap, tasks=tasks, num_steps=2000)
        with pytest.raises(ValueError, match="holds 2 worker generator states; this sampler has 4"):
            proc.load_state_dict({"worker_rngs": start["worker_rngs"][:2]})
    for x, y in zip(got + again + replay, expected + again_expected + expected, strict=True):
        same_batch(x, y)
    assert [b.info["workers"] for b in got] == [[0, 1], [2], [3]]
    assert all(len(b) == 2000 and not b.cut.any() and len(b.episode_lengths) == 4 for b in got)
    with pytest.raises(ValueError, match="envs_per_worker"):
        ProcessSampler(env_id, seed=0, num_workers=1, envs_per_worker=0)

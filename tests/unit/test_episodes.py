"""A call's jobs cut into episodes (metacpo.samplers.episodes): every piece run anywhere, in any
order, on envs with any history, joins into the batches of the jobs run as planned, bit for bit."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from metacpo.samplers.base import (Job, PolicySnapshot, episode_limit, make_env_for, plan_jobs, run_jobs, run_pieces,
                                   set_task)
from metacpo.samplers.episodes import join_pieces, plan_pieces, spread_pieces
from metacpo.tasks import get_distribution
from tests.unit.test_rollout_fast import _norm, _policy


def _snapshots(env_id: str, n: int) -> list[PolicySnapshot]:
    probe = make_env_for(env_id, seed=0)
    dim = probe.observation_space.shape[0]
    snaps = [PolicySnapshot.from_policy(_policy(probe, k), _norm(dim, k), deterministic=(k == 2)) for k in range(n)]
    probe.close()
    return snaps


def _states(shares: int) -> list[dict]:
    return [np.random.default_rng([7, v]).bit_generator.state for v in range(shares)]


def _warm_reset(env, task, v: int) -> tuple:
    if task is not None:
        set_task(env, task)
    env.reset(seed=100 + v)
    return (task, 100 + v)


def _as_planned(env_id, jobs, tasks, snaps, shares):
    """Each share's jobs in plan order on one env (reset once before, see _warm_reset) with its
    own generator: the reference."""
    out, states = [], []
    for v in range(shares):
        env, rng = make_env_for(env_id, seed=3), np.random.default_rng([7, v])
        _warm_reset(env, tasks[-1], v)
        _, got = run_jobs(env, None, snaps, [(j, tasks[j.task_index]) for j in jobs if j.worker == v], rng, worker=v)
        out.extend(got)
        states.append(rng.bit_generator.state)
        env.close()
    return out, states


@pytest.mark.parametrize(("env_id", "num_steps", "shares"), [
    ("SafetyPointStcircle1-v0", 3000, 2),    # the default Meta-CPO round: 6,000 vs 3,000 steps as planned
    ("SafetyCarStbutton1-v0", 2300, 2),      # task switches between layouts of different sizes; cut episodes
    ("SafetyPointGoal1-v0", 1500, 4),        # a standard id (goals redrawn inside episodes); a share without jobs
    ("SafetyCarPush1-v0", 2000, 2),          # every reset rebuilds the model (the push box is a free body)
])
def test_pieces_join_into_the_planned_batches(same_batch, env_id, num_steps, shares):
    tasks = get_distribution(env_id).sample_n(np.random.default_rng(1), 3) if "St" in env_id else [None] * 3
    snaps = _snapshots(env_id, 3)
    episode_steps = episode_limit(env_id)
    jobs = plan_jobs(num_tasks=3, num_steps=num_steps, num_workers=shares, episode_steps=episode_steps)
    expected, expected_states = _as_planned(env_id, jobs, tasks, snaps, shares)

    warm = [(tasks[-1], 100 + v) for v in range(shares)]
    pieces, states, last = plan_pieces(jobs, _states(shares), tasks=tasks, last_resets=warm, episode_steps=episode_steps)
    assert states == expected_states  # the generators end where the planned run leaves them
    for v in range(shares):  # each share's env ends at its last job's last reset (or where it was)
        mine = [b for j, b in expected if j.worker == v]
        assert last[v][1] == (mine[-1].info["episode_seeds"][-1] if mine else warm[v][1])
    for job, b in expected:  # each job's episodes get the reset seeds its run drew
        assert [p.reset_seed for p in pieces if p.job == job] == b.info["episode_seeds"]
    # run them backwards, dealt over 3 envs that each ran other tasks before (any history)
    slots = spread_pieces(pieces[::-1], 3)
    envs = {v: make_env_for(env_id, seed=11 + v) for v in range(3)}
    _, out = run_pieces(envs, None, snaps, {v: [(p, tasks[p.task_index]) for p in ps] for v, ps in enumerate(slots)},
                        {})
    joined = dict(join_pieces(out))
    assert set(joined) == set(jobs)
    for job, b in expected:
        same_batch(joined[job], b)
        np.testing.assert_array_equal(joined[job].cut, b.cut)
        assert joined[job].info["cut"] == b.info["cut"] and joined[job].info["worker"] == b.info["worker"]
    for env in envs.values():
        env.close()


def test_spread_pieces_balances_steps_in_runs():
    jobs = plan_jobs(num_tasks=3, num_steps=3000, num_workers=2, episode_steps=500)
    pieces, _, _ = plan_pieces(jobs, _states(2), tasks=[None] * 3, last_resets=[(None, 1)] * 2, episode_steps=500)
    assert [sum(j.num_steps for j in jobs if j.worker == w) for w in range(2)] == [6000, 3000]  # as planned
    slots = spread_pieces(pieces, 2)
    assert [sum(p.num_steps for p in s) for s in slots] == [4500, 4500]
    assert slots[0] + slots[1] == pieces  # consecutive runs, in order
    uneven = spread_pieces(pieces[:5], 4)  # 5 episodes on 4 slots: none empty, none with 3
    assert sorted(len(s) for s in uneven) == [1, 1, 1, 2]
    with pytest.raises(ValueError, match="num_slots must be positive"):
        spread_pieces(pieces, 0)


def test_an_early_episode_end_is_detected():
    """Pieces planned with episodes longer than the env's (700 > 500 steps): an episode ends before
    its piece does, so the pieces are not the job's episodes and join_pieces says so."""
    env_id = "SafetyPointStcircle1-v0"
    snaps = _snapshots(env_id, 1)
    jobs = [Job(task_index=0, part=0, num_steps=1400, worker=0)]
    pieces, _, _ = plan_pieces(jobs, _states(1), tasks=[None], last_resets=[(None, 1)], episode_steps=700)
    env = make_env_for(env_id, seed=0)
    _, out = run_pieces({0: env}, None, snaps, {0: [(p, None) for p in pieces]}, {})
    assert all(b.info["early_end"] for _, b in out) and len(out[0][1]) == 500
    assert join_pieces(out) is None
    env.close()


def test_process_sampler_spread_equals_as_planned(same_batch, caplog):
    """ProcessSampler with and without spread_episodes: the same batches and generator states over
    calls that switch between the two (the workers' generators and envs are brought back to the
    plan first), and a call whose episodes end early is run again as planned, with a warning. On
    Car Button, whose reset depends on the reset before it (see Piece.prev)."""
    from metacpo.samplers.process import ProcessSampler

    env_id = "SafetyCarStbutton1-v0"
    tasks = get_distribution(env_id).sample_n(np.random.default_rng(2), 3)
    snaps = _snapshots(env_id, 3)
    with ProcessSampler(env_id, seed=5, num_workers=2) as spread, \
            ProcessSampler(env_id, seed=5, num_workers=2, spread_episodes=False) as planned:
        for call in range(4):
            if call == 2:
                spread.spread_episodes = False  # a planned call after spread ones
            if call == 3:
                spread.spread_episodes = True
            got = spread.sample(snapshot=snaps, num_steps=1000, tasks=tasks)
            want = planned.sample(snapshot=snaps, num_steps=1000, tasks=tasks)
            for b, e in zip(got, want, strict=True):
                same_batch(b, e)
            assert spread.state_dict() == planned.state_dict()
        spread.episode_steps = planned.episode_steps = 1500  # longer than the env's 1000: episodes end early
        with caplog.at_level(logging.WARNING, logger="metacpo.samplers"):
            got = spread.sample(snapshot=snaps[0], num_steps=1500, tasks=tasks[1:2])
        want = planned.sample(snapshot=snaps[0], num_steps=1500, tasks=tasks[1:2])
        same_batch(got[0], want[0])
        assert spread.state_dict() == planned.state_dict()
        assert "ended before its time limit" in caplog.text and not spread._episodes_run_out


def check_resume_on_car(make_sampler, same_batch, tmp_path, *, check_old: bool = False) -> None:
    """A fresh sampler (``make_sampler(seed)``, a context manager) loaded from a checkpointed state
    returns the batches the running one returns next, on Car Button, where a fresh env's first reset
    differs from later ones: the state keeps every share's last reset (through torch.save and
    torch.load(weights_only=True)) and the fresh envs repeat it. ``check_old``: without it (an older
    checkpoint) the next call starts from fresh envs and its episodes differ (measured on the process
    backend in this case; with the one env of LocalSampler it happens not to show here)."""
    import torch

    env_id = "SafetyCarStbutton1-v0"
    tasks = get_distribution(env_id).sample_n(np.random.default_rng(4), 3)
    snaps = _snapshots(env_id, 3)
    with make_sampler(env_id, 6) as running:
        for _ in range(2):  # a share's first call runs as planned, the second spread (ProcessSampler)
            running.sample(snapshot=snaps, num_steps=1000, tasks=tasks)
        torch.save(running.state_dict(), tmp_path / "state.pt")
        want = running.sample(snapshot=snaps, num_steps=1000, tasks=tasks)
        after = running.state_dict()
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert len(state["last_resets"]) == 2
    assert all(isinstance(r["task"], dict) and isinstance(r["seed"], int) for r in state["last_resets"])
    with make_sampler(env_id, 0) as resumed:
        resumed.load_state_dict(state)
        got = resumed.sample(snapshot=snaps, num_steps=1000, tasks=tasks)
        assert resumed.state_dict() == after
    for b, e in zip(got, want, strict=True):
        same_batch(b, e)
    if not check_old:
        return
    with make_sampler(env_id, 0) as resumed_old:
        resumed_old.load_state_dict({"worker_rngs": state["worker_rngs"]})
        got_old = resumed_old.sample(snapshot=snaps, num_steps=1000, tasks=tasks)
    assert any(not np.array_equal(b.obs, e.obs) for b, e in zip(got_old, want, strict=True))


@pytest.mark.parametrize("backend", ["process", "local"])
def test_a_resumed_sampler_continues_bit_for_bit_on_car(same_batch, tmp_path, backend):
    from metacpo.samplers import LocalSampler
    from metacpo.samplers.process import ProcessSampler

    if backend == "process":
        check_resume_on_car(lambda env_id, seed: ProcessSampler(env_id, seed=seed, num_workers=2), same_batch, tmp_path,
                            check_old=True)
    else:
        check_resume_on_car(lambda env_id, seed: LocalSampler(env_id, seed=seed, num_virtual_workers=2), same_batch,
                            tmp_path)

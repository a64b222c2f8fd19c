"""The learnable parts every algorithm holds: policy, reward and cost critics, observation normaliser.

:class:`Agent` is composed by single-task CPO/TRPO (:mod:`metacpo.algorithms.cpo`, and so
multi-task CPO) and by Meta-CPO/Meta-TRPO (:mod:`metacpo.algorithms.meta_cpo`): building the
modules from the run seed, the frozen normaliser state of an iteration, snapshots for the
samplers, batch processing (GAE with the run's ``advantage`` settings), critic fitting, folding
observations into the normaliser, writing an accepted step back, and the checkpoint state of all
of it. The algorithms keep only what is theirs (counters, task draws, the step itself).

:func:`saved_policy` is the other direction: the trained policy and frozen normaliser out of a
checkpoint's algorithm state (``metacpo evaluate``, ``metacpo render``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from metacpo.algorithms.common import CriticFitStats, ProcessedBatch, fit_critics, load_module_states, process_batch
from metacpo.config.schema import AdvantageConfig, CriticConfig, TrainConfig
from metacpo.data.batch import Batch
from metacpo.data.normalizer import NormalizerState, RunningNormalizer
from metacpo.functional.params import Params, write_params
from metacpo.models.policy import GaussianMLPPolicy, PolicySpec, TimeAwareValueCritic, ValueCritic
from metacpo.samplers.base import PolicySnapshot

CRITIC_SEED_OFFSET = 7919
"""The critic-minibatch generator is seeded with ``run.seed + CRITIC_SEED_OFFSET``."""


def build_modules(config: TrainConfig, *, obs_dim: int, act_dim: int) -> tuple[GaussianMLPPolicy, ValueCritic, ValueCritic]:
    """Policy and critics with initial weights from the run seed, without touching torch's global
    generator (every algorithm and the diagnostics build them this way)."""
    pc, cc = config.policy, config.critic
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.run.seed)
        policy = GaussianMLPPolicy(PolicySpec(obs_dim=obs_dim, act_dim=act_dim, hidden=tuple(pc.hidden),
                                              activation=pc.activation, log_std_init=pc.log_std_init))
        critic_r = ValueCritic(obs_dim=obs_dim, hidden=tuple(cc.hidden), activation=cc.activation)
        cost_critic = TimeAwareValueCritic if cc.time_aware_cost else ValueCritic
        critic_c = cost_critic(obs_dim=obs_dim, hidden=tuple(cc.hidden), activation=cc.activation)
    return policy, critic_r, critic_c


@dataclass(eq=False, kw_only=True)
class Agent:
    """``pi_theta``, ``V_R``, ``V_C`` and the running observation normaliser of one run.

    The policy module holds theta between iterations; the meta-gradient path never mutates it
    (it reads parameter dicts), only :meth:`write_params` does, with an accepted step.
    """

    policy: GaussianMLPPolicy
    """The policy ``pi_theta``."""
    critic_r: ValueCritic
    """The reward critic ``V_R``."""
    critic_c: ValueCritic
    """The cost critic ``V_C`` (time-aware with ``critic.time_aware_cost``)."""
    normalizer: RunningNormalizer
    """Running observation statistics (used when ``advantage.obs_normalize``)."""
    advantage: AdvantageConfig
    """GAE settings and observation normalisation of the run."""
    critic: CriticConfig
    """How the critics are fitted."""
    generator: torch.Generator
    """Shuffles critic minibatches."""

    STATE_KEYS = ("policy", "critic_r", "critic_c", "obs_norm", "torch_generator")
    """The entries :meth:`state_dict` writes (a checkpoint's ``algorithm`` holds them)."""

    @classmethod
    def build(cls, config: TrainConfig, *, obs_dim: int, act_dim: int) -> Agent:
        """Fresh modules from the run seed (:func:`build_modules`), an empty normaliser and the
        critic generator seeded ``run.seed + CRITIC_SEED_OFFSET``."""
        policy, critic_r, critic_c = build_modules(config, obs_dim=obs_dim, act_dim=act_dim)
        return cls(
            policy=policy, critic_r=critic_r, critic_c=critic_c,
            normalizer=RunningNormalizer(obs_dim, clip=config.advantage.obs_clip),
            advantage=config.advantage, critic=config.critic,
            generator=torch.Generator().manual_seed(config.run.seed + CRITIC_SEED_OFFSET),
        )

    # -- acting ---------------------------------------------------------------------------------
    def obs_norm_state(self) -> NormalizerState:
        """The normaliser's current statistics, frozen (identity without ``obs_normalize``)."""
        if not self.advantage.obs_normalize:
            return NormalizerState.identity(self.policy.spec.obs_dim)
        return self.normalizer.state()

    def snapshot(self, obs_norm: NormalizerState, *, params: Params | None = None,
                 deterministic: bool = False) -> PolicySnapshot:
        """What a sampler worker acts with: ``params`` (default: the policy's own) and ``obs_norm``."""
        return PolicySnapshot.from_policy(self.policy, obs_norm, params=params, deterministic=deterministic)

    # -- learning -------------------------------------------------------------------------------
    def process(self, batch: Batch, *, params: Params, obs_norm: NormalizerState,
                time_limit: int | None) -> ProcessedBatch:
        """GAE for reward and cost, ``J_C`` and the behaviour distribution at ``params`` (detached)."""
        adv = self.advantage
        return process_batch(
            batch, policy=self.policy, params={k: v.detach() for k, v in params.items()},
            critic_r=self.critic_r, critic_c=self.critic_c, obs_norm=obs_norm,
            gamma=adv.gamma, lam=adv.lam, cost_gamma=adv.cost_gamma, cost_lam=adv.cost_lam,
            cost_adv_gamma=adv.cost_adv_gamma, time_limit=time_limit,
            normalize_adv_r=adv.normalize_adv_r, center_adv_c=adv.center_adv_c,
        )

    def fit_critics(self, processed: Sequence[ProcessedBatch], *, iters: int,
                    losses: bool = True) -> tuple[CriticFitStats, CriticFitStats]:
        """Regress ``V_R`` and ``V_C`` on the targets of all of ``processed`` together (``losses=False``:
        their losses before and after are not evaluated, NaN in the stats)."""
        c = self.critic
        obs_r, obs_c = torch.cat([p.obs for p in processed]), torch.cat([p.obs_c for p in processed])
        target_r, target_c = torch.cat([p.target_r for p in processed]), torch.cat([p.target_c for p in processed])
        cr, cc = fit_critics(
            [(self.critic_r, obs_r, target_r), (self.critic_c, obs_c, target_c)],
            optimizer=c.optimizer, lr=c.lr, iters=iters,  # type: ignore[arg-type]
            minibatch_size=c.minibatch_size, generator=self.generator, l2=c.l2, fused=c.fused, losses=losses,
        )
        return cr, cc

    def observe(self, batches: Sequence[Batch]) -> None:
        """Fold the batches' observations into the normaliser (when ``obs_normalize``)."""
        if self.advantage.obs_normalize:
            for b in batches:
                self.normalizer.update(b.obs)

    def write_params(self, params: Params) -> None:
        """Make ``params`` (an accepted step) the policy's parameters."""
        write_params(self.policy, params)

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Module weights, normaliser statistics and the critic generator (:attr:`STATE_KEYS`)."""
        return {
            "policy": self.policy.state_dict(),
            "critic_r": self.critic_r.state_dict(),
            "critic_c": self.critic_c.state_dict(),
            "obs_norm": self.normalizer.state_dict(),
            "torch_generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any], *, what: str) -> None:
        """Inverse of :meth:`state_dict`; ``ValueError`` (naming ``what``) on missing or misfit entries."""
        missing = set(self.STATE_KEYS) - set(state)
        if missing:
            raise ValueError(f"{what} state lacks {sorted(missing)}")
        self.load_trained(state, what=what)
        self.generator.set_state(state["torch_generator"])

    def load_trained(self, state: Mapping[str, Any], *, what: str) -> None:
        """Weights and normaliser only (meta-testing starts from a run's trained state with its own
        generator)."""
        if "obs_norm" not in state:
            raise ValueError(f"{what} state lacks ['obs_norm']")
        load_module_states(state, {"policy": self.policy, "critic_r": self.critic_r, "critic_c": self.critic_c},
                           what=what)
        self.normalizer.load_state_dict(state["obs_norm"])


def saved_policy(config: TrainConfig, state: Mapping[str, Any], *, obs_dim: int,
                 act_dim: int) -> tuple[GaussianMLPPolicy, NormalizerState]:
    """The trained policy and its frozen normaliser from a checkpoint's algorithm ``state``.

    ``ValueError`` when ``state`` lacks them or they do not fit ``config``/the dims.
    """
    missing = {"policy", "obs_norm"} - set(state)
    if missing:
        raise ValueError(f"the state lacks {sorted(missing)}")
    policy, _, _ = build_modules(config, obs_dim=obs_dim, act_dim=act_dim)
    norm = RunningNormalizer(obs_dim, clip=config.advantage.obs_clip)
    try:
        policy.load_state_dict(state["policy"])
        norm.load_state_dict(state["obs_norm"])
    except (RuntimeError, ValueError) as exc:
        raise ValueError(" ".join(str(exc).split())) from None
    obs_norm = norm.state() if config.advantage.obs_normalize else NormalizerState.identity(obs_dim)
    return policy, obs_norm

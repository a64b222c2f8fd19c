"""Gaussian MLP policy and value critics, usable functionally (parameters as a dict)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import Normal
from torch.func import functional_call

_ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU}


@dataclass(frozen=True)
class PolicySpec:
    """Everything needed to rebuild a policy network (sent to sampler workers, saved in checkpoints)."""

    obs_dim: int
    act_dim: int
    hidden: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    log_std_init: float = -0.5

    def __post_init__(self) -> None:
        if self.obs_dim <= 0 or self.act_dim <= 0:
            raise ValueError(f"obs_dim and act_dim must be positive, got {self.obs_dim}, {self.act_dim}")
        if any(h <= 0 for h in self.hidden):
            raise ValueError(f"hidden sizes must be positive, got {self.hidden}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(
                f"unknown activation {self.activation!r}; allowed: {sorted(_ACTIVATIONS)}"
            )


def mlp(sizes: Sequence[int], activation: str) -> nn.Sequential:
    """Fully connected net with ``activation`` between layers and a linear output."""
    act = _ACTIVATIONS[activation]
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


class GaussianMLPPolicy(nn.Module):
    """pi(a|s) = N(mu_phi(s), diag(exp(log_std)^2)) with a state-independent ``log_std``.

    Every method takes optional ``params`` (a name->tensor dict); when given, the module's own
    parameters are ignored and the computation goes through ``functional_call`` so gradients flow
    to the dict's tensors (adapted parameters on the meta-gradient path).
    """

    def __init__(self, spec: PolicySpec) -> None:
        super().__init__()
        self.spec = spec
        self.mu = mlp([spec.obs_dim, *spec.hidden, spec.act_dim], spec.activation)
        # Small last layer: start near the zero-mean policy (standard for policy gradients).
        last = self.mu[-1]
        assert isinstance(last, nn.Linear)
        with torch.no_grad():
            last.weight.mul_(0.01)
            last.bias.zero_()
        self.log_std = nn.Parameter(torch.full((spec.act_dim,), float(spec.log_std_init)))

    def _forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        return self.mu(obs), self.log_std.expand(obs.shape[0], -1)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:  # noqa: D102 - used by functional_call
        return self._forward(obs)

    def distribution(self, obs: Tensor, params: Mapping[str, Tensor] | None = None) -> Normal:
        """The action distribution at ``obs`` ([N, obs_dim]) under ``params`` (or the module's)."""
        if params is None:
            mean, log_std = self(obs)
        else:
            mean, log_std = functional_call(self, dict(params), (obs,))
        return Normal(mean, log_std.exp())

    def log_prob(self, obs: Tensor, actions: Tensor, params: Mapping[str, Tensor] | None = None) -> Tensor:
        """Sum over action dimensions of log pi(a|s): shape [N]."""
        return self.distribution(obs, params).log_prob(actions).sum(-1)


class ValueCritic(nn.Module):
    """V(s): an MLP with scalar output (used for both reward and cost values)."""

    def __init__(self, *, obs_dim: int, hidden: tuple[int, ...] = (64, 64), activation: str = "tanh") -> None:
        super().__init__()
        self.net = mlp([obs_dim, *hidden, 1], activation)

    def forward(self, obs: Tensor) -> Tensor:
        return self.net(obs).squeeze(-1)


class TimeAwareValueCritic(ValueCritic):
    """V(s, tau): a :class:`ValueCritic` that also sees ``tau``, the fraction of the episode left.

    The cost critic's target is a finite-horizon cost-to-go (J_C counts the cost of one episode
    of ``T`` steps, undiscounted by default), which depends on the time left as much as on the
    state: the same position is worth ``c (T - t)`` at a cost rate ``c``. Without ``tau`` the
    critic can only fit the average over times, and its error enters every cost advantage.
    Inputs are ``[obs, tau]`` (``obs_dim + 1`` columns); :func:`metacpo.algorithms.common.process_batch`
    appends ``tau`` when a critic has ``time_aware = True``.
    """

    time_aware = True

    def __init__(self, *, obs_dim: int, hidden: tuple[int, ...] = (64, 64), activation: str = "tanh") -> None:
        super().__init__(obs_dim=obs_dim + 1, hidden=hidden, activation=activation)

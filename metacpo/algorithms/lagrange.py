"""TRPO-Lagrangian: the trust-region step on a Lagrangian of reward and cost, the multiplier by dual ascent.

The Lagrangian baseline of Ray et al. (2019, Safety Gym), in the trust-region form of that paper's
TRPO-Lagrangian: the constrained problem ``max J_R s.t. J_C <= d`` is replaced by the saddle point of
``J_R - lambda (J_C - d)``. Each iteration

1. moves the multiplier by projected gradient ascent on the measured violation (pure function
   :func:`next_multiplier`)::

       lambda_k = clip(lambda_{k-1} + lr * (J_C(batch k) - d), 0, max_value)

2. takes one TRPO step on the penalised advantage (:func:`penalised`)::

       A_L = (A_R - lambda_k A_C / std(A_C)) / (1 + lambda_k)

   ``A_R``: the reward advantages as the batch holds them (normalised by default); ``A_C``: the
   per-step cost advantages (centred by default), scaled to unit standard deviation so that
   ``lambda`` weighs the two in the same units whatever the cost's scale (the default of common
   Lagrangian implementations, e.g. OmniSafe's). Dividing by ``1 + lambda`` keeps the objective's
   scale (and with it the step's trust region) bounded as ``lambda`` grows.

Unlike CPO it has no per-step guarantee: the cost is pulled towards ``d`` only on average, as the
multiplier integrates the violation (it overshoots and oscillates; Stooke et al. 2020). It is the
baseline many safe-RL users try first, which is why issue 13 asks for it.

:class:`LagrangeMultiplier` keeps the state (checkpointed with the algorithm). At meta-test time a
TRPO-Lagrangian initialisation adapts with the same CPO step as every other (``metacpo.adaptation``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from metacpo.algorithms.common import ProcessedBatch


@dataclass(frozen=True)
class LagrangeConfig:
    """The multiplier ``lambda`` of TRPO-Lagrangian (the price of one unit of episode cost)."""

    init: float = 0.0
    """lambda before the first iteration."""
    lr: float = 0.005
    """Dual step size: lambda changes by lr * (J_C - d) per iteration (J_C in episode-cost units).
    0.005: on the Circle tasks (d = 25, early violations of 100-200) lambda peaked near 3.8 in a
    16-iteration probe of multitask-trpo-lag, against 17 with 0.02, which froze the policy
    (docs/results.md, "TRPO-Lagrangian")."""
    max_value: float = 100.0
    """Upper clip of lambda (the penalised advantage is then ~ -A_C: the step only lowers cost)."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lr) and self.lr > 0.0):
            raise ValueError(f"lagrange.lr must be a finite number > 0, got {self.lr}")
        if not (math.isfinite(self.max_value) and self.max_value > 0.0):
            raise ValueError(f"lagrange.max_value must be a finite number > 0, got {self.max_value}")
        if not (math.isfinite(self.init) and 0.0 <= self.init <= self.max_value):
            raise ValueError(f"lagrange.init must lie in [0, max_value={self.max_value}], got {self.init}")


def next_multiplier(lam: float, *, j_c: float, cost_limit: float, lr: float, max_value: float) -> float:
    """``clip(lam + lr * (j_c - cost_limit), 0, max_value)``; ``lam`` itself when ``j_c`` is not finite."""
    if not math.isfinite(j_c):
        return lam
    return min(max(lam + lr * (j_c - cost_limit), 0.0), max_value)


def penalised(processed: ProcessedBatch, lam: float) -> ProcessedBatch:
    """``processed`` with its reward advantages replaced by ``(A_R - lam * A_C / std(A_C)) / (1 + lam)``.

    A batch whose cost advantages are all equal (e.g. no cost at all) has nothing to scale: ``A_C``
    enters as it is. Everything else (cost advantages, critic targets, ``J_C``) is kept, so the
    step's cost surrogate and the critics' fits are those of the original batch.
    """
    if not (math.isfinite(lam) and lam >= 0.0):
        raise ValueError(f"the Lagrange multiplier must be a finite number >= 0, got {lam}")
    adv_c = processed.adv_c
    std = float(adv_c.std()) if adv_c.numel() > 1 else 0.0
    scaled = adv_c / std if std > 1e-8 else adv_c
    return replace(processed, adv_r=(processed.adv_r - lam * scaled) / (1.0 + lam))


class LagrangeMultiplier:
    """The multiplier's state: ``observe`` one batch's ``J_C``, read ``value``."""

    def __init__(self, config: LagrangeConfig) -> None:
        self.config = config
        self.value = float(config.init)

    def observe(self, j_c: float, *, cost_limit: float) -> float:
        """Take one dual step on ``J_C - cost_limit``; returns the new value."""
        c = self.config
        self.value = next_multiplier(self.value, j_c=j_c, cost_limit=cost_limit, lr=c.lr, max_value=c.max_value)
        return self.value

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        value = float(state["value"])
        if not (math.isfinite(value) and 0.0 <= value <= self.config.max_value):
            raise ValueError(f"Lagrange multiplier state {value!r} is not in [0, {self.config.max_value}]")
        self.value = value

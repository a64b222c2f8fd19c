"""A margin on the cost limit for single-task CPO, sized by the cost surrogate's measured error.

Why: CPO's linearised constraint ``J_C + a^T x <= d`` uses a cost gradient ``a`` estimated from
one batch. When raising reward and raising cost are nearly the same direction (cos(g, a) ~ -0.95
on the Circle tasks), the reward part of the step lies in the estimated constraint's tangent
plane, which contains the estimation error of ``a``; the step exploits that error, so the real
cost rises by more than ``a^T x`` says, at every iteration (a winner's curse). The curvature the
linearisation drops adds to it. ``tools/cost_prediction_check.py`` measures both on a trained
policy (docs/results.md, CPO section): predicted -8.6 per step, real change -0.1, of which the
large-batch gradient explains 6.9 and curvature 1.8. Plain CPO then settles with its episode
cost one prediction error above ``d``.

What: the step targets ``J_C <= d - m`` instead of ``d``. With ``adaptive`` on, ``m`` is a running
mean of the surrogate's one-step prediction error ``e_k = J_C(batch k) - P_{k-1}``, where
``P_{k-1} = J_C(batch k-1) + (loss_c(accepted) - loss_c(old))`` is what the previous update
predicted the next batch's cost to be. Measured prediction errors are what the margin follows, so
it is zero when the model is right (it does not wind up while the constraint is slack), and when
the constraint is active ``P = d - m`` and the update reduces to an integral controller on
``J_C - d``, whose fixed point is ``E[J_C] = d``. ``m`` is clipped to
``[0, max_fraction * d]``: the margin never loosens the limit.

:class:`CostMargin` keeps the state (checkpointed with the algorithm); the update rule itself is
the pure function :func:`next_error_mean`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CostMarginConfig:
    """Margin ``m`` on the cost limit of single-task CPO: the step targets ``J_C <= d - m``."""

    adaptive: bool = True
    """Follow the cost surrogate's measured one-step prediction error (off: plain CPO, m = fixed)."""
    rate: float = 0.1
    """Weight of the newest prediction error in the running mean (exponential moving average)."""
    fixed: float = 0.0
    """A constant margin, added to the adaptive one (in episode-cost units)."""
    max_fraction: float = 1.0
    """Upper clip of ``m`` as a fraction of the cost limit (1.0: the target never drops below 0)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.rate <= 1.0:
            raise ValueError(f"margin.rate must lie in (0, 1], got {self.rate}")
        if not (math.isfinite(self.fixed) and self.fixed >= 0.0):
            raise ValueError(f"margin.fixed must be a finite number >= 0, got {self.fixed}")
        if not 0.0 <= self.max_fraction <= 1.0:
            raise ValueError(f"margin.max_fraction must lie in [0, 1], got {self.max_fraction}")


def next_error_mean(error_mean: float, error: float, *, rate: float) -> float:
    """``(1 - rate) * error_mean + rate * error``; a non-finite ``error`` leaves the mean as is."""
    if not math.isfinite(error):
        return error_mean
    return (1.0 - rate) * error_mean + rate * error


@dataclass
class CostMargin:
    """Running state of the margin: the error mean and the last prediction of the next J_C."""

    config: CostMarginConfig
    error_mean: float = 0.0
    predicted_j_c: float | None = None
    last_error: float = math.nan

    def observe(self, j_c: float) -> None:
        """Fold the new batch's J_C in: its error against the last prediction updates the mean."""
        self.last_error = math.nan
        if self.predicted_j_c is not None and math.isfinite(j_c):
            self.last_error = j_c - self.predicted_j_c
            if self.config.adaptive:
                self.error_mean = next_error_mean(self.error_mean, self.last_error, rate=self.config.rate)

    def margin(self, cost_limit: float) -> float:
        """``m = clip(fixed + error_mean, 0, max_fraction * d)`` (``error_mean`` only if adaptive)."""
        m = self.config.fixed + (self.error_mean if self.config.adaptive else 0.0)
        return min(max(m, 0.0), self.config.max_fraction * cost_limit)

    def predict(self, j_c: float, cost_surrogate_change: float) -> None:
        """Record what the accepted update predicts the next batch's J_C to be."""
        change = cost_surrogate_change if math.isfinite(cost_surrogate_change) else 0.0
        self.predicted_j_c = j_c + change if math.isfinite(j_c) else None

    def state_dict(self) -> dict[str, Any]:
        return {"error_mean": self.error_mean, "predicted_j_c": self.predicted_j_c}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        missing = {"error_mean", "predicted_j_c"} - set(state)
        if missing:
            raise ValueError(f"cost-margin state lacks {sorted(missing)}")
        em = float(state["error_mean"])
        if not math.isfinite(em):
            raise ValueError(f"cost-margin state has a non-finite error_mean {em}")
        self.error_mean = em
        p = state["predicted_j_c"]
        self.predicted_j_c = None if p is None else float(p)

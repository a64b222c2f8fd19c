"""A margin on the cost limit for single-task CPO, grown by the measured constraint violation.

Why: CPO's linearised constraint ``J_C + a^T x <= d`` uses a cost gradient ``a`` estimated from
one batch. When raising reward and raising cost are nearly the same direction (cos(g, a) ~ -0.95
on the Circle tasks), the reward part of the step lies in the estimated constraint's tangent
plane, which contains the estimation error of ``a``; the step exploits that error, so the real
cost rises by more than ``a^T x`` says, at every iteration (a winner's curse). The curvature the
linearisation drops adds to it. ``tools/cost_prediction_check.py`` measures both on a trained
policy (docs/results.md, CPO section). Plain CPO then settles with its episode cost about one
such prediction error above ``d``.

What: the step targets ``J_C <= d - m`` instead of ``d``, where ``m`` is an integral controller on
the measured violation, clipped to ``[0, max_fraction * d]`` (the clip is applied to the state,
so it cannot wind up, and a margin never loosens the limit)::

    m_k = clip(m_{k-1} + gain * (J_C(batch k) - d), 0, max_fraction * d)

While the constraint is active the previous update predicted ``J_C = d - m_{k-1}``, so
``J_C(k) - d = e_k - m_{k-1}`` with ``e_k`` the surrogate's one-step prediction error, and the
rule is the moving average ``m_k = (1 - gain) m_{k-1} + gain e_k``: ``m`` follows the prediction
error and the cost settles where ``E[J_C] = d``. Recovery steps (which cannot reach the target)
count their full excess, and below the limit ``m`` decays to 0. The prediction error itself is
also recorded (``last_error``) for the logs.

:class:`CostMargin` keeps the state (checkpointed with the algorithm); the update rule itself is
the pure function :func:`next_margin`.
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
    """Grow/shrink m with the measured violation J_C - d (off: plain CPO, m = fixed)."""
    gain: float = 0.2
    """Integral gain (dimensionless): m changes by gain * (J_C - d) per iteration, then is clipped.
    0.2 since the cost advantage uses J_C's own discount (0.1 left the cost above d: docs/results.md)."""
    fixed: float = 0.0
    """A constant margin, added to the adaptive one (episode-cost units)."""
    max_fraction: float = 1.0
    """Upper clip of m as a fraction of the cost limit (1.0: the target never drops below 0)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.gain <= 1.0:
            raise ValueError(f"margin.gain must lie in (0, 1], got {self.gain}")
        if not (math.isfinite(self.fixed) and self.fixed >= 0.0):
            raise ValueError(f"margin.fixed must be a finite number >= 0, got {self.fixed}")
        if not 0.0 <= self.max_fraction <= 1.0:
            raise ValueError(f"margin.max_fraction must lie in [0, 1], got {self.max_fraction}")


def fixed_margin(cost_limit: float, *, margin: float, fraction: float) -> float:
    """A constant margin ``m = min(margin + fraction * d, d)`` on the cost limit ``d``.

    Meta-CPO's conservative inner target ``d - m`` (``meta.inner_cost_margin``,
    ``meta.inner_margin_fraction``), also what ``metacpo adapt`` adapts a meta run with; the clip
    keeps the target >= 0 (a margin never loosens the limit)."""
    return min(margin + fraction * cost_limit, max(cost_limit, 0.0))


def next_margin(margin: float, j_c: float, *, cost_limit: float, gain: float, upper: float) -> float:
    """``clip(margin + gain * (j_c - cost_limit), 0, upper)``; a non-finite ``j_c`` changes nothing."""
    if not math.isfinite(j_c):
        return margin
    return min(max(margin + gain * (j_c - cost_limit), 0.0), upper)


@dataclass
class CostMargin:
    """Running state: the adaptive margin and the last prediction of the next batch's J_C."""

    config: CostMarginConfig
    adaptive_margin: float = 0.0
    predicted_j_c: float | None = None
    last_error: float = math.nan

    def observe(self, j_c: float, *, cost_limit: float) -> None:
        """Fold in the new batch's J_C: update the margin and the prediction error (for logs)."""
        self.last_error = math.nan
        if self.predicted_j_c is not None and math.isfinite(j_c):
            self.last_error = j_c - self.predicted_j_c
        if self.config.adaptive:
            self.adaptive_margin = next_margin(
                self.adaptive_margin, j_c, cost_limit=cost_limit, gain=self.config.gain,
                upper=self.config.max_fraction * cost_limit,
            )

    def margin(self, cost_limit: float) -> float:
        """``m = clip(fixed + adaptive margin, 0, max_fraction * d)``."""
        m = self.config.fixed + (self.adaptive_margin if self.config.adaptive else 0.0)
        return min(max(m, 0.0), self.config.max_fraction * cost_limit)

    def predict(self, j_c: float, cost_surrogate_change: float) -> None:
        """Record what the accepted update predicts the next batch's J_C to be (for the logs)."""
        change = cost_surrogate_change if math.isfinite(cost_surrogate_change) else 0.0
        self.predicted_j_c = j_c + change if math.isfinite(j_c) else None

    def state_dict(self) -> dict[str, Any]:
        return {"adaptive_margin": self.adaptive_margin, "predicted_j_c": self.predicted_j_c}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        missing = {"adaptive_margin", "predicted_j_c"} - set(state)
        if missing:
            raise ValueError(f"cost-margin state lacks {sorted(missing)}")
        m = float(state["adaptive_margin"])
        if not (math.isfinite(m) and m >= 0.0):
            raise ValueError(f"cost-margin state has an invalid adaptive_margin {m} (need a finite number >= 0)")
        self.adaptive_margin = m
        p = state["predicted_j_c"]
        self.predicted_j_c = None if p is None else float(p)

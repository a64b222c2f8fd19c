"""Running observation normalisation (parallel Welford), saved with the model.

The normaliser is *frozen during an iteration*: the sampler receives a :class:`NormalizerState`
snapshot, the behaviour log-probabilities and the policy update both use those same statistics,
and only afterwards does the training loop fold the iteration's raw observations into the running
statistics with :meth:`RunningNormalizer.update`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class NormalizerState:
    """An immutable snapshot of normalisation statistics (picklable; sent to sampler workers)."""

    mean: np.ndarray
    var: np.ndarray
    clip: float
    eps: float = 1e-8

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """``clip((x - mean) / sqrt(var + eps), -clip, clip)`` (float64)."""
        z = (np.asarray(x, dtype=np.float64) - self.mean) / np.sqrt(self.var + self.eps)
        return np.clip(z, -self.clip, self.clip)

    @staticmethod
    def identity(dim: int, *, clip: float = np.inf) -> "NormalizerState":
        """A snapshot that leaves observations unchanged (normalisation disabled)."""
        return NormalizerState(mean=np.zeros(dim), var=np.ones(dim) - 1e-8, clip=clip, eps=1e-8)


class RunningNormalizer:
    """Mean/variance of all observations seen so far, per dimension."""

    def __init__(self, dim: int, *, clip: float = 10.0, eps: float = 1e-8) -> None:
        if dim <= 0:
            raise ValueError(f"normaliser dimension must be positive, got {dim}")
        if not clip > 0:
            raise ValueError(f"normaliser clip must be positive, got {clip}")
        self.dim = dim
        self.clip = float(clip)
        self.eps = float(eps)
        self.count = 0
        self.mean = np.zeros(dim, dtype=np.float64)
        self.var = np.ones(dim, dtype=np.float64)

    def update(self, x: np.ndarray) -> None:
        """Fold a batch ``[N, dim]`` of raw observations into the statistics (Chan et al.)."""
        x = np.asarray(x, dtype=np.float64).reshape(-1, self.dim)
        n = len(x)
        if n == 0:
            return
        if not np.isfinite(x).all():
            raise FloatingPointError("non-finite observation passed to RunningNormalizer.update")
        b_mean = x.mean(axis=0)
        b_var = x.var(axis=0)
        if self.count == 0:
            self.mean, self.var, self.count = b_mean, b_var, n
            return
        tot = self.count + n
        d = b_mean - self.mean
        m2 = self.var * self.count + b_var * n + d**2 * self.count * n / tot
        self.mean = self.mean + d * n / tot
        self.var = m2 / tot
        self.count = tot

    def state(self) -> NormalizerState:
        """A frozen copy of the current statistics."""
        return NormalizerState(mean=self.mean.copy(), var=self.var.copy(), clip=self.clip, eps=self.eps)

    def normalize(self, x: np.ndarray) -> np.ndarray:
        return self.state().normalize(x)

    def state_dict(self) -> dict[str, Any]:
        """Tensors and numbers only (loadable with ``torch.load(weights_only=True)``)."""
        return {
            "mean": torch.as_tensor(self.mean.copy()),
            "var": torch.as_tensor(self.var.copy()),
            "count": int(self.count),
            "clip": self.clip,
            "eps": self.eps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = {"mean", "var", "count", "clip", "eps"} - set(state)
        if missing:
            raise ValueError(f"normaliser state lacks {sorted(missing)}")
        mean = np.asarray(state["mean"], dtype=np.float64)
        if mean.shape != (self.dim,):
            raise ValueError(
                f"normaliser state has dimension {mean.shape}; this normaliser has ({self.dim},)"
            )
        self.mean = mean.copy()
        self.var = np.asarray(state["var"], dtype=np.float64).copy()
        self.count = int(state["count"])
        self.clip = float(state["clip"])
        self.eps = float(state["eps"])

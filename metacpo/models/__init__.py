"""Actor and critics."""

from metacpo.models.policy import GaussianMLPPolicy, PolicySpec, ValueCritic, mlp

__all__ = ["GaussianMLPPolicy", "PolicySpec", "ValueCritic", "mlp"]

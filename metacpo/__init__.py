"""metacpo: safe meta-reinforcement learning (Meta-CPO and baselines)."""

__version__ = "0.1.0"

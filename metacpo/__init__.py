"""metacpo: safe meta-reinforcement learning (Meta-CPO and baselines)."""

__version__ = "0.1.0"

# Register the Safety{Agent}St{circle,button}{0,1,2}-v0 env ids with Safety-Gymnasium (idempotent).
from metacpo.tasks import register_all as _register_all  # noqa: E402

_register_all()

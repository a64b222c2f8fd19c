"""metacpo: safe meta-reinforcement learning (Meta-CPO and baselines)."""

__version__ = "0.1.0"

# safety_gymnasium (and gymnasium, which it pulls in) must be imported through the Python 3.11
# compatibility shim before anything else touches them.
from metacpo.compat import import_safety_gymnasium as _import_safety_gymnasium  # noqa: E402

_import_safety_gymnasium()

# Register the Safety{Agent}St{circle,button}{0,1,2}-v0 env ids with Safety-Gymnasium (idempotent).
from metacpo.tasks import register_all as _register_all  # noqa: E402

_register_all()

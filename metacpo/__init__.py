"""metacpo: safe meta-reinforcement learning (Meta-CPO and baselines)."""

__version__ = "0.1.0"

# Importing metacpo does not import Safety-Gymnasium (nor MuJoCo, Gymnasium): from here on, any
# ``import safety_gymnasium`` (ours or the user's) goes through the Python 3.11 compatibility
# shim, and registers the Safety{Agent}St{circle,button}{0,1,2}-v0 ids right after it loads.
from metacpo.compat import install_import_hook as _install_import_hook  # noqa: E402


def _register_ids() -> None:
    from metacpo.tasks import register_all

    register_all()


_install_import_hook(_register_ids)

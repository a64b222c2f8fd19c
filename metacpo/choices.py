"""The allowed values of every enumerated setting, one ``Literal`` type and one tuple each.

A leaf module (it imports nothing of metacpo), so every layer -- the solvers, the samplers, the
config dataclasses, the meta-test settings and the command line -- validates against, names in
its error messages and lists in ``--help`` the same values. The tuple is derived from the
``Literal``; a new value is added in one place. Algorithm names are not here: the registry
(:func:`metacpo.algorithms.registry.algorithm_names`) is their one list.
"""

from __future__ import annotations

from typing import Literal, get_args

SolverBackend = Literal["analytic", "dco"]
"""How the CPO sub-problem is solved: the closed form (any metric) or cvxpylayers (identity)."""
SOLVER_BACKENDS: tuple[str, ...] = get_args(SolverBackend)

MetricKind = Literal["fisher", "identity"]
"""The trust-region metric H: the KL Hessian (via conjugate gradient) or the identity."""
METRICS: tuple[str, ...] = get_args(MetricKind)

SamplerKind = Literal["local", "process", "ray"]
"""Where rollouts run: in this process, in persistent worker processes, or on Ray actors."""
SAMPLER_KINDS: tuple[str, ...] = get_args(SamplerKind)

Activation = Literal["tanh", "relu", "elu"]
"""Activation between hidden layers of the policy and the critics."""
ACTIVATIONS: tuple[str, ...] = get_args(Activation)

CriticOptimizer = Literal["adam", "lbfgs"]
"""How the critics are fitted: Adam minibatch epochs or full-batch L-BFGS."""
CRITIC_OPTIMIZERS: tuple[str, ...] = get_args(CriticOptimizer)


def check_choice(what: str, value: object, allowed: tuple[str, ...]) -> None:
    """One-line ``ValueError`` naming ``what``, the bad ``value`` and the allowed values."""
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; allowed: {list(allowed)}")

"""The functional Meta-CPO core: differentiable inner steps and the exact meta-gradient. See
docs/meta.md (meta-test summaries are in :mod:`metacpo.logging.meta_test`)."""

from metacpo.meta.core import (
    InnerStepStats,
    MetaGradient,
    Objective,
    StepRule,
    Surrogates,
    constraint_b,
    inner_loop,
    inner_step,
    meta_gradient,
    meta_parameters,
    post_adaptation_values,
    project_onto_halfspace,
    solve_step,
)

__all__ = [
    "InnerStepStats",
    "MetaGradient",
    "Objective",
    "StepRule",
    "Surrogates",
    "constraint_b",
    "inner_loop",
    "inner_step",
    "meta_gradient",
    "meta_parameters",
    "post_adaptation_values",
    "project_onto_halfspace",
    "solve_step",
]

"""The functional Meta-CPO core (differentiable inner adaptation, exact meta-gradient) and the
meta-test summaries. See docs/meta.md."""

from metacpo.meta.core import (
    AdaptStepStats,
    MetaGradient,
    Objective,
    StepRule,
    Surrogates,
    adapt,
    adapt_step,
    meta_gradient,
    meta_parameters,
    post_adaptation_values,
    project_onto_halfspace,
    solve_step,
)
from metacpo.meta.summary import AdaptRecord, ci95, summarize

__all__ = [
    "AdaptRecord",
    "AdaptStepStats",
    "MetaGradient",
    "Objective",
    "StepRule",
    "Surrogates",
    "adapt",
    "adapt_step",
    "ci95",
    "meta_gradient",
    "meta_parameters",
    "post_adaptation_values",
    "project_onto_halfspace",
    "solve_step",
    "summarize",
]

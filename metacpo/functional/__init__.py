"""Functional (dict-of-tensors) parameter handling for the meta-gradient path."""

from metacpo.functional.params import (
    Params,
    add_flat,
    flat_grad,
    flatten,
    num_params,
    params_of,
    unflatten,
    write_params,
)

__all__ = [
    "Params",
    "add_flat",
    "flat_grad",
    "flatten",
    "num_params",
    "params_of",
    "unflatten",
    "write_params",
]

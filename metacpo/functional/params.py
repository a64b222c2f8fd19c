"""Named-parameter dictionaries: the currency of the meta-gradient path.

Policies are never mutated while adapting. Parameters travel as ``dict[str, Tensor]``
through :func:`torch.func.functional_call`; an adaptation step returns *new* tensors
(``theta' = theta + step``) that keep their autograd history back to the meta-parameters.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

Params = dict[str, Tensor]


def params_of(module: nn.Module, *, detach: bool = False) -> Params:
    """The named parameters of ``module`` as an ordered dict (live tensors unless ``detach``)."""
    if detach:
        return {k: v.detach().clone() for k, v in module.named_parameters()}
    return dict(module.named_parameters())


def num_params(params: Mapping[str, Tensor]) -> int:
    """Total number of scalar entries in ``params``."""
    return sum(v.numel() for v in params.values())


def flatten(params: Mapping[str, Tensor]) -> Tensor:
    """Concatenate every tensor of ``params`` (in dict order) into one flat vector."""
    return torch.cat([v.reshape(-1) for v in params.values()])


def unflatten(flat: Tensor, like: Mapping[str, Tensor]) -> Params:
    """Split ``flat`` into tensors shaped like ``like`` (differentiable; no copies of ``like``)."""
    expected = num_params(like)
    if flat.dim() != 1 or flat.numel() != expected:
        raise ValueError(
            f"flat vector has shape {tuple(flat.shape)}; expected a 1-D vector of {expected} entries"
        )
    out: Params = {}
    i = 0
    for k, v in like.items():
        n = v.numel()
        out[k] = flat[i : i + n].view_as(v)
        i += n
    return out


def add_flat(params: Mapping[str, Tensor], step: Tensor, *, alpha: float | Tensor = 1.0) -> Params:
    """``params + alpha * step`` as new tensors; gradients flow to both ``params`` and ``step``."""
    delta = unflatten(step, params)
    return {k: v + alpha * delta[k] for k, v in params.items()}


def flat_grad(
    output: Tensor,
    params: Mapping[str, Tensor],
    *,
    create_graph: bool = False,
    retain_graph: bool | None = None,
) -> Tensor:
    """Gradient of scalar ``output`` w.r.t. ``params`` as one flat vector.

    With ``create_graph=True`` the result is itself differentiable (needed for second-order
    meta-gradients). Parameters that ``output`` does not depend on get zero gradient.
    """
    if output.dim() != 0:
        raise ValueError(f"flat_grad needs a scalar output, got shape {tuple(output.shape)}")
    grads = torch.autograd.grad(
        output,
        list(params.values()),
        create_graph=create_graph,
        retain_graph=retain_graph if retain_graph is not None else create_graph,
        allow_unused=True,
    )
    return torch.cat(
        [
            (g if g is not None else torch.zeros_like(p)).reshape(-1)
            for g, p in zip(grads, params.values(), strict=True)
        ]
    )



def write_params(module: nn.Module, params: Mapping[str, Tensor]) -> None:
    """Copy ``params`` into ``module``'s parameters in place (the accepted policy step; off the
    meta-gradient path, which never mutates a module)."""
    with torch.no_grad():
        for k, p in module.named_parameters():
            p.copy_(params[k])

"""Atomic, pickle-free checkpoints.

A checkpoint is one ``torch.save`` file holding only tensors, numbers, strings, lists and dicts
(``torch.load(weights_only=True)`` loads it): the algorithm's state_dicts (policy, critics,
normaliser, generator states), the config as a plain dict, the loop state and the iteration.
Never a pickled module. Writes go to a temporary file in the same directory, are flushed and
fsynced, then ``os.replace``-d over the target, so a crash leaves either the old or the new
checkpoint, never a torn one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from metacpo.fileio import atomic_path

FORMAT = "metacpo-checkpoint/1"
REQUIRED = ("format", "iteration", "config", "algorithm")


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, or does not match the run it is loaded into."""


def save_checkpoint(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` (plus the format tag) to ``path`` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"format": FORMAT, **payload}
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise ValueError(f"checkpoint payload lacks {missing}")
    with atomic_path(path) as tmp:
        torch.save(data, tmp)
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load and check a checkpoint written by :func:`save_checkpoint`.

    Raises :class:`CheckpointError` naming the file when it is missing, unreadable (truncated,
    not a torch file, or holding non-allowlisted objects such as pickled modules) or lacks
    required entries.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError/UnpicklingError/EOFError/... here
        msg = " ".join(str(exc).split())[:300]
        raise CheckpointError(f"checkpoint {path} is corrupt or not a metacpo checkpoint: {msg}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(data).__name__}, not a checkpoint dict")
    if data.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {data.get('format')!r}; expected {FORMAT!r}")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}")
    return data


def config_mismatch(saved: Mapping[str, Any], current: Mapping[str, Any], *, ignore: tuple[str, ...] = ()) -> list[str]:
    """Dotted keys where two plain config dicts differ (``ignore``: dotted keys to skip)."""
    out: list[str] = []

    def walk(a: Any, b: Any, prefix: str) -> None:
        if prefix in ignore:
            return
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k, "<missing>"), b.get(k, "<missing>"), f"{prefix}.{k}" if prefix else str(k))
        elif a != b:
            out.append(f"{prefix}: checkpoint {a!r} vs now {b!r}")

    walk(saved, current, "")
    return out

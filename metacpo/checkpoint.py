"""Atomic, pickle-free checkpoints.

A checkpoint is one ``torch.save`` file holding only tensors, numbers, strings, lists and dicts
(``torch.load(weights_only=True)`` loads it): the algorithm's state_dicts (policy, critics,
normaliser, generator states), the config as a plain dict, the loop state and the iteration.
Never a pickled module. Writes go to a temporary file in the same directory, are flushed and
fsynced, then ``os.replace``-d over the target, so a crash leaves either the old or the new
checkpoint, never a torn one.

A run directory's checkpoint (:data:`CHECKPOINT_NAME`) is read back as a :class:`SavedRun` by
:func:`load_run`; :func:`config_from_saved` turns a saved config dict (from a checkpoint or a
config.yaml) into a :class:`~metacpo.config.schema.TrainConfig`, filling in what older versions
did not write.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from metacpo.config.schema import TrainConfig
from metacpo.fileio import atomic_path

FORMAT = "metacpo-checkpoint/1"
REQUIRED = ("format", "iteration", "config", "algorithm")
CHECKPOINT_NAME = "checkpoint.pt"
"""The checkpoint's file name inside a run directory."""


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


SAVED_RUN_DEFAULTS: dict[tuple[str, str], Any] = {
    ("critic", "time_aware_cost"): False,  # before the time-aware cost critic: obs only
    ("critic", "fused"): False,  # before fused critic fitting: critics fitted one after the other
}
"""Settings added since early runs were saved whose default differs from what those runs did: a
saved config without the key gets this value (unlike ``config.schema.ADDED_KEYS``, whose values
are the defaults and apply to any config dict)."""


def config_from_saved(data: Any, *, source: str | os.PathLike[str]) -> TrainConfig:
    """The :class:`TrainConfig` of a saved config dict (``source``: where it came from, for errors).

    Settings added since the run was written get the value that reproduces its behaviour; a dict
    that does not fit this version is a :class:`CheckpointError` naming ``source``.
    """
    if isinstance(data, dict):
        for (section, key), value in SAVED_RUN_DEFAULTS.items():
            if isinstance(data.get(section), dict) and key not in data[section]:
                data = {**data, section: {**data[section], key: value}}
    try:
        return TrainConfig.from_dict(data)
    except ValueError as exc:
        raise CheckpointError(f"{source}: config does not match this version of metacpo: {exc}") from None


@dataclass(frozen=True)
class SavedRun:
    """A run directory's checkpoint, loaded and checked."""

    path: Path
    """The checkpoint file."""
    iteration: int
    """Iterations the run had done when it was saved."""
    config: TrainConfig
    """The run's config (:func:`config_from_saved`)."""
    state: dict[str, Any]
    """The algorithm's ``state_dict()`` (policy, critics, normaliser, counters, ...)."""


def load_run(run_dir: str | os.PathLike[str]) -> SavedRun:
    """The checkpoint of ``run_dir`` (``FileNotFoundError`` if the directory does not exist,
    :class:`CheckpointError` if its checkpoint is missing or unreadable)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    path = run_dir / CHECKPOINT_NAME
    ckpt = load_checkpoint(path)
    return SavedRun(path=path, iteration=int(ckpt["iteration"]), config=config_from_saved(ckpt["config"], source=path),
                    state=dict(ckpt["algorithm"]))

"""Where a result came from: the metacpo source commit (and whether it was dirty), package versions, host."""

from __future__ import annotations

import platform
import socket
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES: tuple[str, ...] = ("metacpo", "torch", "numpy", "scipy", "mujoco", "gymnasium", "safety-gymnasium",
                             "cvxpy", "cvxpylayers")
"""Distributions whose versions a cell records."""
SOURCE_PATHS: tuple[str, ...] = ("metacpo", "pyproject.toml", "requirements.txt", "requirements-nodeps.txt")
"""Paths (relative to the repository root) whose local changes make the source tree dirty."""


@dataclass(frozen=True)
class Provenance:
    """What produced a result."""

    commit: str
    """Full git commit of the metacpo source tree that ran ('unknown' outside a git checkout)."""
    dirty: bool
    """Whether that tree had uncommitted changes under SOURCE_PATHS (tracked or new files)."""
    dirty_files: tuple[str, ...] = field(default_factory=tuple)
    """The changed paths (at most 20)."""
    source: str = ""
    """Directory of the imported metacpo package."""
    versions: dict[str, str] = field(default_factory=dict)
    """Distribution name -> version ('' if not installed)."""
    python: str = ""
    host: str = ""

    @property
    def short(self) -> str:
        """``abc1234`` or ``abc1234+dirty``: how reports name the commit."""
        head = self.commit[:7] if self.commit != "unknown" else "unknown"
        return head + ("+dirty" if self.dirty else "")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["dirty_files"] = list(self.dirty_files)
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "Provenance":
        return Provenance(commit=str(d.get("commit", "unknown")), dirty=bool(d.get("dirty", False)),
                          dirty_files=tuple(d.get("dirty_files", ())), source=str(d.get("source", "")),
                          versions=dict(d.get("versions", {})), python=str(d.get("python", "")),
                          host=str(d.get("host", "")))


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def collect() -> Provenance:
    """Provenance of the metacpo package imported by this process."""
    import metacpo

    source = Path(metacpo.__file__).resolve().parent
    top = _git(source, "rev-parse", "--show-toplevel")
    commit, dirty, files = "unknown", False, ()
    if top:
        root = Path(top.strip())
        head = _git(root, "rev-parse", "HEAD")
        status = _git(root, "status", "--porcelain", "--", *SOURCE_PATHS)
        if head:
            commit = head.strip()
        if status is not None:
            changed = [line[3:] for line in status.splitlines() if line.strip()]
            dirty, files = bool(changed), tuple(changed[:20])
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = ""
    return Provenance(commit=commit, dirty=dirty, dirty_files=files, source=str(source), versions=versions,
                      python=platform.python_version() + f" ({sys.implementation.name})", host=socket.gethostname())

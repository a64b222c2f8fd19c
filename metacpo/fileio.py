"""Atomic file writes, and the writable-directory check run before any work.

Every file metacpo writes (checkpoints, progress.csv, config.yaml,
cell.json, adapt parts, reports, plots, videos) appears whole or not at all.

:func:`atomic_path` yields a temporary path beside the target; the writer fills it (with any
library: ``torch.save``, ``savefig``, ``imageio``), and only when the block ends without an error
is the file flushed to disk and renamed onto the target (``os.replace`` is atomic on POSIX within
one directory). On any error, KeyboardInterrupt included, the temporary file is removed and the
target is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, suffix: str | None = None) -> Iterator[Path]:
    """A temporary path in ``path``'s directory that replaces ``path`` when the block succeeds.

    ``suffix`` (default ``.tmp``) is the temporary file's ending, for writers that pick a format
    from it (``savefig``, ``imageio``: pass the target's own suffix). The file gets the usual
    permissions (``0o666`` minus the umask), not ``mkstemp``'s private ones.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`); returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def check_output_dir(path: str | os.PathLike[str], *, flag: str = "--run-dir") -> None:
    """Fail (one-line ValueError) unless ``path`` is, or can be created as, a writable directory.

    Probes by creating and removing a file, so read-only mounts are caught too; creates nothing.
    """
    path = Path(path)
    probe_dir = path
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{flag} {path} is a file, not a directory; pass a directory path")
    else:
        probe_dir = path.parent
        while not probe_dir.exists() and probe_dir != probe_dir.parent:
            probe_dir = probe_dir.parent
        if not probe_dir.is_dir():
            raise ValueError(f"{flag} {path} cannot be created: {probe_dir} is a file, not a directory")
    try:
        fd, name = tempfile.mkstemp(prefix=".metacpo-write-probe-", dir=probe_dir)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        where = "is" if probe_dir == path else f"cannot be created in {probe_dir}:"
        raise ValueError(f"{flag} {path} {where} not writable ({exc.strerror or exc})") from None

"""metacpo.fileio: every writer's file appears whole or not at all."""

import os
import stat

import pytest

from metacpo.fileio import atomic_path, write_text_atomic


def test_success_replaces_the_target_with_usual_permissions(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    write_text_atomic(target, "old")
    write_text_atomic(target, "new")
    assert target.read_text() == "new"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # not mkstemp's private 0o600
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]  # no temporary left


def test_an_error_or_interrupt_leaves_the_target_as_it_was(tmp_path):
    target = tmp_path / "ckpt.pt"
    target.write_text("complete")
    for exc in (RuntimeError("disk full"), KeyboardInterrupt()):
        with pytest.raises(type(exc)):
            with atomic_path(target) as tmp:
                tmp.write_text("half-writ")
                raise exc
        assert target.read_text() == "complete"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


def test_suffix_is_kept_for_writers_that_pick_a_format_from_it(tmp_path):
    with atomic_path(tmp_path / "plot.png", suffix=".png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path
        tmp.write_bytes(b"\x89PNG")
    assert (tmp_path / "plot.png").read_bytes() == b"\x89PNG"

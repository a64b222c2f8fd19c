"""Behaviour pinned bit for bit: fixed-seed runs of every algorithm with the local and the process
sampler reproduce the recorded progress.csv rows (tests/data/golden, written by
tools/make_golden_progress.py), every column except the wall-clock ``time/*`` ones."""

from __future__ import annotations

import pytest

from metacpo.cli import main
from tests.golden_runs import CASES, GOLDEN_DIR, case_name, progress_rows, read_rows, train_argv


@pytest.mark.parametrize(("algo", "sampler"), CASES, ids=[case_name(a, s) for a, s in CASES])
def test_progress_rows_bit_identical(tmp_path, algo, sampler):
    expected = read_rows(GOLDEN_DIR / f"{case_name(algo, sampler)}.csv")
    run_dir = tmp_path / "run"
    assert main(train_argv(algo, sampler, run_dir)) == 0
    got = progress_rows(run_dir)
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert list(g) == list(e), f"row {i}: columns differ"
        diff = {k: (g[k], e[k]) for k in e if g[k] != e[k]}
        assert not diff, f"row {i} differs (got, expected): {diff}"

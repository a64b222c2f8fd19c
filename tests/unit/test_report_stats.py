"""The report's statistics: bootstrap CI of a mean and the stratified IQM."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from metacpo.benchmark.report import Estimate, bootstrap_iqm, bootstrap_mean


def test_bootstrap_mean_brackets_and_matches_the_t_interval_for_large_normal_samples():
    x = np.random.default_rng(0).normal(10.0, 2.0, size=400)
    e = bootstrap_mean(x)
    assert e.n == 400 and e.value == pytest.approx(x.mean())
    assert e.low < e.value < e.high
    half = sps.t.ppf(0.975, 399) * x.std(ddof=1) / math.sqrt(400)  # ~0.2
    assert e.high - e.low == pytest.approx(2 * half, rel=0.1)
    assert bootstrap_mean(x) == e  # fixed generator: a report is reproducible


def test_bootstrap_mean_small_and_degenerate_samples():
    one = bootstrap_mean([3.0])
    assert one.value == 3.0 and math.isnan(one.low) and math.isnan(one.high) and one.fmt() == "3.00 [n/a]"
    const = bootstrap_mean([0.0, 0.0, 0.0])
    assert (const.value, const.low, const.high) == (0.0, 0.0, 0.0)
    two = bootstrap_mean([1.0, 3.0])
    # resamples of two values have means 1, 2 or 3: the percentile interval is [1, 3]
    assert (two.low, two.high) == (1.0, 3.0) and two.fmt(1) == "2.0 [1.0, 3.0]"
    with pytest.raises(ValueError):
        bootstrap_mean([])


def test_iqm_is_the_mean_of_the_middle_half_and_resamples_within_envs():
    # one env: 1..8 -> middle half 3, 4, 5, 6
    e = bootstrap_iqm([[1, 2, 3, 4, 5, 6, 7, 8]])
    assert e.value == 4.5 and e.n == 8 and e.low < 4.5 < e.high
    # two envs pooled: trim_mean of the union
    a, b = [0.0, 1.0, 2.0, 3.0], [10.0, 11.0, 12.0, 13.0]
    e2 = bootstrap_iqm([a, b])
    assert e2.value == pytest.approx(sps.trim_mean(a + b, 0.25))
    # stratified: every resample keeps 4 values from each env, so the IQM stays between the envs'
    # ranges' middle -- a pooled (unstratified) resample could draw all 8 from one env (IQM near 1.5 or 11.5)
    assert 3.0 < e2.low <= e2.value <= e2.high < 10.0
    with pytest.raises(ValueError):
        bootstrap_iqm([[]])
    assert math.isnan(bootstrap_iqm([[1.0], [2.0, 3.0]]).low)  # an env with one value: no CI


def test_estimate_format():
    assert Estimate(1.234, 0.5, 2.0, 3).fmt() == "1.23 [0.50, 2.00]"

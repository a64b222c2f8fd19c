"""The adaptive margin on CPO's cost limit (metacpo.algorithms.margin)."""

import math

import numpy as np
import pytest

from metacpo.algorithms.margin import CostMargin, CostMarginConfig, next_error_mean


def test_error_mean_is_an_exponential_moving_average_and_ignores_non_finite_errors():
    m = 0.0
    for e, want in ((10.0, 1.0), (10.0, 1.9), (-5.0, 1.21)):
        m = next_error_mean(m, e, rate=0.1)
        assert m == pytest.approx(want)
    assert next_error_mean(1.21, math.nan, rate=0.1) == 1.21
    assert next_error_mean(1.21, math.inf, rate=0.1) == 1.21
    assert next_error_mean(3.0, 7.0, rate=1.0) == 7.0


def test_prediction_errors_drive_the_margin_which_is_clipped_to_never_loosen_the_limit():
    cm = CostMargin(CostMarginConfig(rate=0.5, max_fraction=0.4))
    cm.observe(40.0)  # nothing predicted yet: no error
    assert math.isnan(cm.last_error) and cm.error_mean == 0.0 and cm.margin(25.0) == 0.0
    cm.predict(40.0, -15.0)  # the update says the next batch will cost 25
    cm.observe(33.0)
    assert cm.last_error == pytest.approx(8.0) and cm.error_mean == pytest.approx(4.0)
    assert cm.margin(25.0) == pytest.approx(4.0)
    cm.predict(33.0, -12.0)  # predicts 21
    cm.observe(61.0)  # error 40 -> mean 22, clipped at 0.4 * 25
    assert cm.error_mean == pytest.approx(22.0) and cm.margin(25.0) == pytest.approx(10.0)
    cm.predict(61.0, -40.0)
    cm.observe(-39.0)  # error -60 -> mean -19: a negative margin would loosen the limit
    assert cm.error_mean == pytest.approx(-19.0) and cm.margin(25.0) == 0.0
    # A non-finite surrogate change counts as no change; a non-finite J_C predicts nothing.
    cm.predict(20.0, math.nan)
    assert cm.predicted_j_c == 20.0
    cm.predict(math.nan, -3.0)
    assert cm.predicted_j_c is None


def test_fixed_margin_and_plain_cpo():
    plain = CostMargin(CostMarginConfig(adaptive=False))
    plain.predict(30.0, -5.0)
    plain.observe(40.0)
    assert plain.last_error == pytest.approx(15.0)  # still measured (logged) ...
    assert plain.error_mean == 0.0 and plain.margin(25.0) == 0.0  # ... but not used
    fixed = CostMargin(CostMarginConfig(adaptive=False, fixed=3.0))
    assert fixed.margin(25.0) == 3.0
    both = CostMargin(CostMarginConfig(fixed=3.0), error_mean=2.5)
    assert both.margin(25.0) == 5.5
    assert CostMargin(CostMarginConfig(fixed=3.0), error_mean=2.5).margin(0.0) == 0.0  # d = 0: no room


def test_state_round_trip_and_bad_state():
    a = CostMargin(CostMarginConfig())
    a.predict(30.0, -4.0)
    a.observe(31.0)
    a.predict(31.0, -6.0)
    b = CostMargin(CostMarginConfig())
    b.load_state_dict(a.state_dict())
    assert (b.error_mean, b.predicted_j_c) == (a.error_mean, a.predicted_j_c) == (pytest.approx(0.5), 25.0)
    with pytest.raises(ValueError, match=r"lacks \['predicted_j_c'\]"):
        b.load_state_dict({"error_mean": 0.0})
    with pytest.raises(ValueError, match="non-finite error_mean nan"):
        b.load_state_dict({"error_mean": math.nan, "predicted_j_c": None})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rate": 0.0}, r"margin.rate must lie in \(0, 1\], got 0.0"),
        ({"rate": 1.5}, r"margin.rate must lie in \(0, 1\], got 1.5"),
        ({"fixed": -1.0}, "margin.fixed must be a finite number >= 0, got -1.0"),
        ({"fixed": math.inf}, "margin.fixed must be a finite number >= 0, got inf"),
        ({"max_fraction": 1.2}, r"margin.max_fraction must lie in \[0, 1\], got 1.2"),
    ],
)
def test_bad_config_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CostMarginConfig(**kwargs)


def _closed_loop(cfg: CostMarginConfig, *, bias: float, noise: float, iters: int, seed: int) -> np.ndarray:
    """A CPO-like plant whose constraint is always active: the update predicts J = d - m, the real
    next J is that plus a systematic prediction error ``bias`` plus batch noise."""
    d = 25.0
    rng = np.random.default_rng(seed)
    cm = CostMargin(cfg)
    j = 40.0
    out = []
    for _ in range(iters):
        cm.observe(j)
        target = d - cm.margin(d)
        cm.predict(j, target - j)  # active constraint: the accepted step brings the surrogate to target
        j = target + bias + noise * rng.standard_normal()
        out.append(j)
    return np.array(out)


def test_closed_loop_settles_at_the_limit_where_plain_cpo_settles_one_bias_above():
    # Plain CPO's fixed point is d + bias; the adaptive margin's is d (integral action).
    plain = _closed_loop(CostMarginConfig(adaptive=False), bias=8.0, noise=6.0, iters=400, seed=0)
    adaptive = _closed_loop(CostMarginConfig(), bias=8.0, noise=6.0, iters=400, seed=0)
    assert plain[100:].mean() == pytest.approx(33.0, abs=1.0)
    assert adaptive[100:].mean() == pytest.approx(25.0, abs=1.0)
    # Without a bias the margin stays small (it follows errors, it does not wind up): clipping at
    # 0 leaves E[max(error mean, 0)] ~ 0.4 * 6 * sqrt(0.1 / 1.9) ~ 0.55 below d ...
    unbiased = _closed_loop(CostMarginConfig(), bias=0.0, noise=6.0, iters=400, seed=1)
    assert 25.0 - 1.2 < unbiased[100:].mean() < 25.0
    # ... and a bias larger than the allowed margin leaves exactly the excess above d.
    capped = _closed_loop(CostMarginConfig(max_fraction=0.2), bias=8.0, noise=0.0, iters=200, seed=0)
    assert capped[-1] == pytest.approx(25.0 - 5.0 + 8.0)

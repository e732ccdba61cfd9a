import numpy as np
import pytest

from nn_models.metrics import interval_coverage, mase, median_split_accuracy, pinball_loss


def test_mase_hand_computed():
    # in-sample: 0..13 with m=7 -> every |y_t - y_{t-7}| = 7, scale = 7
    insample = np.arange(14, dtype=float)
    actual = np.array([14.0, 15.0, 16.0])
    forecast = np.array([15.0, 15.0, 13.0])  # abs errors 1, 0, 3 -> MAE 4/3
    assert mase(actual, forecast, insample, m=7) == pytest.approx((4 / 3) / 7)


def test_mase_needs_history():
    with pytest.raises(ValueError):
        mase([1.0], [1.0], np.arange(7.0), m=7)


def test_interval_coverage_counts_bounds_inclusive():
    actual = np.array([1.0, 2.0, 3.0, 4.0])
    assert interval_coverage(actual, [1, 0, 3.5, 0], [2, 1, 4, 4]) == pytest.approx(0.5)


def test_median_split_accuracy():
    assert median_split_accuracy([1, 0, 1, 0], [0.9, 0.2, 0.4, 0.6]) == pytest.approx(0.5)


def test_pinball():
    # q=0.9: under-prediction by 2 costs 1.8, over-prediction by 1 costs 0.1
    assert pinball_loss([3.0, 1.0], [1.0, 2.0], 0.9) == pytest.approx((1.8 + 0.1) / 2)

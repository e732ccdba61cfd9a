"""The engagement model's named baseline: Szabo–Huberman log-linear extrapolation.

Szabo & Huberman (2010) observed that the log of a item's early popularity predicts
the log of its later popularity linearly. Per channel (global fallback for channels
with too few training posts) we fit ``log1p(views_48h) = a + b * log1p(views_h)`` on the
training posts with scikit-learn's ``LinearRegression`` and call a post "above the
median" when its extrapolated 48 h views exceed the channel's training median.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.linear_model import LinearRegression

NAME = "Szabo–Huberman log-linear"
MIN_CHANNEL_POSTS = 10   # fewer training posts than this: use the global regression


@dataclass
class LogLinearExtrapolation:
    """Per-channel log-linear regressions of 48 h views on views at one early age."""

    min_channel_posts: int = MIN_CHANNEL_POSTS
    per_channel: dict[int, LinearRegression] = field(default_factory=dict)
    medians: dict[int, float] = field(default_factory=dict)
    global_model: LinearRegression | None = None
    global_median: float = float("nan")

    def fit(
        self, channel_id: np.ndarray, views_early: np.ndarray, views_48h: np.ndarray
    ) -> LogLinearExtrapolation:
        channel_id = np.asarray(channel_id)
        x = np.log1p(np.asarray(views_early, float))
        y = np.log1p(np.asarray(views_48h, float))
        keep = np.isfinite(x) & np.isfinite(y)
        channel_id, x, y = channel_id[keep], x[keep], y[keep]
        if len(y) < 2:
            raise ValueError("need at least two training posts with early and 48 h views")
        self.global_model = LinearRegression().fit(x[:, None], y)
        self.global_median = float(np.median(np.expm1(y)))
        for channel in np.unique(channel_id):
            rows = channel_id == channel
            self.medians[int(channel)] = float(np.median(np.expm1(y[rows])))
            if rows.sum() >= self.min_channel_posts and np.ptp(x[rows]) > 0:
                self.per_channel[int(channel)] = LinearRegression().fit(x[rows, None], y[rows])
        return self

    def predict_views(self, channel_id: np.ndarray, views_early: np.ndarray) -> np.ndarray:
        """Extrapolated 48 h views (NaN where the early views are unknown)."""
        assert self.global_model is not None, "fit first"
        channel_id = np.asarray(channel_id)
        x = np.log1p(np.asarray(views_early, float))
        out = np.full(len(x), np.nan)
        known = np.isfinite(x)
        for channel in np.unique(channel_id):
            rows = (channel_id == channel) & known
            if rows.any():
                model = self.per_channel.get(int(channel), self.global_model)
                out[rows] = np.expm1(model.predict(x[rows, None]))
        return out

    def median_for(self, channel_id: np.ndarray) -> np.ndarray:
        """Each post's channel training median of 48 h views (global median if unseen)."""
        return np.array([self.medians.get(int(c), self.global_median) for c in channel_id])

    def above_median(self, channel_id: np.ndarray, views_early: np.ndarray) -> np.ndarray:
        """Predicted side of the channel median (unknown early views count as below)."""
        predicted = self.predict_views(channel_id, views_early)
        return np.nan_to_num(predicted, nan=-np.inf) > self.median_for(channel_id)

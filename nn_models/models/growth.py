"""``GrowthForecaster``: 30-day subscriber quantiles from the last four weeks of a channel.

The task uses a 28-day window (``nn_models.tasks.growth.HISTORY_DAYS``), so any channel
with 28 days of subscriber counts can be scored; the window length is a constructor
argument and the network reads any length of at least 8 days (the scale needs 7-day
changes).

Channel sizes span three orders of magnitude and grow by compounding (new readers
arrive through forwards of recent posts, in proportion to the audience), so the model
works in log space and on the channel's own scale: every window is expressed relative
to the last observed subscribers ``S0`` and divided by ``sigma``, the window's mean
absolute weekly change of log subscribers (the seasonal-naive error that MASE also
uses). Post activity enters as rates per subscriber on the same scale, so "forwards
per subscriber yesterday" means the same thing for a 2 k and a 2 M channel.

A GRU reads the window, additive attention pools its states (subscriber jumps follow
specific viral days, not only the last one), and a dense block (128) maps
``[attention context, last state, drift, noise, trend t-statistic, history drift]`` to
the 30-day x 3 quantile path. With 20-odd channels there is little to learn from, so the path has the
shape of a random walk with drift and the network sets its parameters: the median
continues a learned mix of the window's mean daily log change and the channel's whole
history's (``history_drift`` on the last day, which reaches back beyond the window),
shrunk or stretched (``2 * sigmoid(a) * (m * drift + (1 - m) * long) * h + b``), and
the p10/p90 band grows with ``sqrt(h)`` (daily noise) and ``h`` (drift error) in units
of the window's daily noise; a small per-day term (the 30 x 3 outputs, x0.1) bends each
curve. Quantiles are ordered by construction (softplus distances below and above the median). After training,
``calibrate_intervals`` rescales the band on validation windows (split conformal).
The forecast is ``log S0 + sigma * q``: ``forward`` returns natural-log subscribers
(``exp`` gives counts), which keeps the ONNX export faithful to float32 precision for
channels of any size.

Post statistics that need 48 h of hindsight (views/forwards/interactions sums,
engagement rate, reach, viral posts) are not yet known for the last two days before
the forecast origin; ``forward`` zeroes them there, so training, the holdout and live
scoring all see what a forecaster would see on the origin day.

Inputs are the raw columns of ``features.channel_daily_features`` named in
``RAW_FEATURES``; standardisation statistics of the derived features are buffers.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# Daily columns of features.channel_daily_features the model reads, in this order.
TABLE_FEATURES: tuple[str, ...] = (
    "subscribers",
    "posts",
    "views_48h_sum",
    "forwards_48h_sum",
    "interactions_48h_sum",
    "engagement_rate",
    "reach_48h",
    "viral_posts",
    "mean_text_length",
    "weekday",
)
# ... plus ``history_drift``: on each day, the mean daily change of ln S from the channel's
# first subscriber count to that day (backward-looking; ``tasks.growth.channel_series``).
RAW_FEATURES: tuple[str, ...] = (*TABLE_FEATURES, "history_drift")
_R = {name: i for i, name in enumerate(RAW_FEATURES)}
# Columns computed from 48 h views: unknown for the last UNKNOWN_48H_DAYS days of a window.
NEEDS_48H = (
    "views_48h_sum",
    "forwards_48h_sum",
    "interactions_48h_sum",
    "engagement_rate",
    "reach_48h",
    "viral_posts",
)
UNKNOWN_48H_DAYS = 2

DERIVED_FEATURES: tuple[str, ...] = (
    "level",  # (log S_t - log S0) / sigma
    "daily_change",  # (log S_t - log S_{t-1}) / sigma
    "log_posts",
    "forwards_rate",  # signed log1p(forwards / subscribers / sigma)
    "interactions_rate",  # signed log1p(interactions / subscribers / sigma)
    "log_reach",  # log1p(views / subscribers)
    "engagement_rate",
    "log_viral_posts",
    "log_text_length",
    "weekday_sin",
    "weekday_cos",
    "known_48h",  # 0 on the days whose 48 h statistics are not known yet
)
# expressed as the day's deviation from the window mean (see ``derive``)
RELATIVE = ("interactions_rate", "log_reach", "engagement_rate", "log_text_length")
QUANTILES: tuple[float, float, float] = (0.1, 0.5, 0.9)


def _signed_log1p(x: torch.Tensor) -> torch.Tensor:
    """sign(x) * log(1 + |x|): compresses large rates (ONNX has no asinh in opset 17)."""
    return torch.sign(x) * torch.log1p(x.abs())


class GrowthForecaster(nn.Module):
    """GRU + attention over ``history`` (N, L, len(RAW_FEATURES)) → log subscribers (N, H, 3).

    ``forward(history)`` returns ln(subscribers) at p10/p50/p90 for each of the
    ``horizon`` days after the last day of the window; ``normalised(history)`` returns
    the same in the model's own units (what training's pinball loss sees).
    """

    def __init__(
        self,
        history_days: int = 28,
        horizon: int = 30,
        hidden: int = 256,
        layers: int = 2,
        dropout: float = 0.2,
        dense: int = 128,
    ) -> None:
        super().__init__()
        self.history_days = history_days
        self.horizon = horizon
        n_features = len(DERIVED_FEATURES)
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_std", torch.ones(n_features))
        self.gru = nn.GRU(
            n_features, hidden, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0
        )
        self.attention = nn.Sequential(nn.Linear(hidden, hidden // 2), nn.Tanh(), nn.Linear(hidden // 2, 1))
        self.head = nn.Sequential(
            nn.Linear(2 * hidden + 4, dense),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(dense, horizon * len(QUANTILES)),
        )
        # shape of the 30-day path: slope correction, intercept, and the sqrt(h) and h
        # terms of the band below and above the median (random walk with drift)
        self.path = nn.Linear(dense, 7)
        with torch.no_grad():  # start at "drift continues" with a ~p10/p90 random-walk band
            self.path.weight.mul_(0.1)
            self.path.bias.copy_(torch.tensor([0.0, 0.0, 0.954, -1.686, 0.954, -1.686, 0.0]))
        # widening (> 1) or narrowing of the band fitted on validation windows after training
        self.register_buffer("interval_scale", torch.ones(()))

    # ----------------------------------------------------------- scaling
    @staticmethod
    def scale(history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log S0, sigma) per window: last log subscribers and the mean absolute
        7-day change of log subscribers (floored so a flat channel stays finite)."""
        log_s = torch.log(history[..., _R["subscribers"]].clamp_min(1.0))
        sigma = (log_s[:, 7:] - log_s[:, :-7]).abs().mean(dim=1).clamp_min(1e-4)
        return log_s[:, -1], sigma

    @staticmethod
    def drift_and_noise(history: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of the daily change of log subscribers over the
        window, both in units of ``sigma``."""
        log_s = torch.log(history[..., _R["subscribers"]].clamp_min(1.0))
        daily = log_s[:, 1:] - log_s[:, :-1]
        return daily.mean(dim=1) / sigma, daily.std(dim=1) / sigma

    def derive(self, history: torch.Tensor) -> torch.Tensor:
        """(N, L, len(DERIVED_FEATURES)) scale-free inputs, before standardisation."""
        log0, sigma = self.scale(history)
        subscribers = history[..., _R["subscribers"]].clamp_min(1.0)
        log_s = torch.log(subscribers)
        sig = sigma.unsqueeze(1)
        steps = history.shape[1]
        known = torch.arange(steps, device=history.device) < steps - UNKNOWN_48H_DAYS
        known = known.to(history.dtype).unsqueeze(0).expand(history.shape[0], -1)
        daily = torch.cat([torch.zeros_like(log_s[:, :1]), log_s[:, 1:] - log_s[:, :-1]], 1)
        weekday = history[..., _R["weekday"]] * (2 * torch.pi / 7)
        columns = {
            "level": (log_s - log0.unsqueeze(1)) / sig,
            "daily_change": daily / sig,
            "log_posts": torch.log1p(history[..., _R["posts"]].clamp_min(0)),
            "forwards_rate": _signed_log1p(history[..., _R["forwards_48h_sum"]] / subscribers / sig),
            "interactions_rate": _signed_log1p(history[..., _R["interactions_48h_sum"]] / subscribers / sig),
            "log_reach": torch.log1p(history[..., _R["reach_48h"]].clamp_min(0)),
            "engagement_rate": history[..., _R["engagement_rate"]],
            "log_viral_posts": torch.log1p(history[..., _R["viral_posts"]].clamp_min(0)),
            "log_text_length": torch.log1p(history[..., _R["mean_text_length"]].clamp_min(0)),
            "weekday_sin": torch.sin(weekday),
            "weekday_cos": torch.cos(weekday),
            "known_48h": known,
        }
        for name in ("forwards_rate", "interactions_rate", "log_reach", "engagement_rate", "log_viral_posts"):
            columns[name] = columns[name] * known
        # channel-level constants (a channel's usual reach, engagement, text length) would
        # let the network recognise channels and memorise their past; keep only each
        # day's deviation from the window's mean
        for name in RELATIVE:
            mask = (
                known
                if name in ("interactions_rate", "log_reach", "engagement_rate")
                else torch.ones_like(known)
            )
            mean = (columns[name] * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True)
            columns[name] = (columns[name] - mean) * mask
        return torch.stack([columns[name] for name in DERIVED_FEATURES], dim=-1)

    @torch.no_grad()
    def set_normalisation(self, history: torch.Tensor) -> None:
        """Store mean/std of the derived features over the training windows."""
        derived = self.derive(history).reshape(-1, len(DERIVED_FEATURES))
        self.feature_mean.copy_(derived.mean(dim=0))
        self.feature_std.copy_(derived.std(dim=0).clamp_min(1e-3))

    # ----------------------------------------------------------- forward
    def normalised(self, history: torch.Tensor) -> torch.Tensor:
        """Quantiles of (log S_{t+h} - log S0) / sigma, shape (N, horizon, 3).

        A random walk with drift sets the frame: the median continues the window's
        mean daily change, the band grows with sqrt(h) (daily noise) and h (error of the
        drift), both in units of the window's daily noise. The network moves the slope
        and intercept, sizes the band, and adds a small per-day correction to each of
        the three curves.
        """
        x = (self.derive(history) - self.feature_mean) / self.feature_std
        states, _ = self.gru(x)
        weights = torch.softmax(self.attention(states), dim=1)
        _, sigma = self.scale(history)
        drift, noise = self.drift_and_noise(history, sigma)
        # how clearly the window trends: drift / its standard error
        n_days = torch.ones_like(drift) * (history.shape[1] - 1)
        t_stat = drift * n_days.sqrt() / noise.clamp_min(1e-3)
        # the drift over the channel's whole history (it reaches further back than the window)
        long_drift = history[:, -1, _R["history_drift"]] / sigma
        summary = torch.stack([drift, noise, torch.tanh(t_stat / 5), long_drift], dim=-1)
        pooled = torch.cat([(weights * states).sum(dim=1), states[:, -1], summary], dim=-1)
        z = self.head[:-1](pooled)  # (N, dense)
        per_day = self.head[-1](z).view(-1, self.horizon, len(QUANTILES))
        p = self.path(z).unsqueeze(1)  # (N, 1, 7)
        h = torch.arange(1, self.horizon + 1, device=history.device, dtype=history.dtype)
        h = h.view(1, -1)
        # a learned mix of the window's and the whole history's drift, shrunk or stretched
        mix = torch.sigmoid(p[..., 6])
        slope = (
            (mix * drift.unsqueeze(1) + (1 - mix) * long_drift.unsqueeze(1)) * 2 * torch.sigmoid(p[..., 0])
        )
        median = slope * h + p[..., 1] + 0.1 * per_day[..., 0]
        noise = noise.unsqueeze(1) * self.interval_scale
        below = noise * (
            F.softplus(p[..., 2]) * h.sqrt() + F.softplus(p[..., 3]) * h + 0.1 * F.softplus(per_day[..., 1])
        )
        above = noise * (
            F.softplus(p[..., 4]) * h.sqrt() + F.softplus(p[..., 5]) * h + 0.1 * F.softplus(per_day[..., 2])
        )
        return torch.stack([median - below, median, median + above], dim=-1)

    @torch.no_grad()
    def calibrate_intervals(
        self, history: torch.Tensor, future: torch.Tensor, coverage: float = 0.8
    ) -> float:
        """Split-conformal: rescale the p10–p90 band so it covers ``coverage`` of these
        windows (validation windows the network was not fitted on); returns the scale.

        Per point, the factor by which the band would have to stretch (or could shrink)
        to just contain the actual value; the scale is that factor's ``coverage`` quantile.
        ``future`` may cover fewer days than ``horizon`` (short histories validate a
        shorter horizon); the scale then comes from those days.
        """
        self.eval()
        self.interval_scale.fill_(1.0)
        log0, sigma = self.scale(history)
        actual = (torch.log(future.clamp_min(1.0)) - log0.unsqueeze(1)) / sigma.unsqueeze(1)
        q = self.normalised(history)[:, : future.shape[1]]  # the days validated
        median = q[..., 1]
        below = (median - q[..., 0]).clamp_min(1e-9)
        above = (q[..., 2] - median).clamp_min(1e-9)
        need = torch.where(actual < median, (median - actual) / below, (actual - median) / above)
        scale = float(torch.quantile(need.flatten().double(), coverage))
        self.interval_scale.fill_(scale)
        return scale

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        log0, sigma = self.scale(history)
        q = self.normalised(history)
        return log0.view(-1, 1, 1) + sigma.view(-1, 1, 1) * q

"""Behaviour autoencoder whose latent space is clustered into user segments.

Why an autoencoder: a user's hour/weekday/action shares come from a few dozen
interactions, so they are noisy histograms. Squeezing them through a small, noisy
latent layer (Gaussian noise of fixed scale plus an L2 pull towards the origin, i.e.
a VAE with fixed posterior variance) keeps only what survives the noise — the
persona-level rhythm and action mix — and gives the latent space a metric (units of
the noise) that k-means can use. The k-means centroids are then refined together
with the encoder (IDEC: Student-t soft assignments sharpened towards their own
confident targets, reconstruction kept as a regulariser).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

HOUR_FEATURES = tuple(f"hour_{h:02d}" for h in range(24))
WEEKDAY_FEATURES = tuple(f"wd_{d}" for d in range(7))
ACTION_FEATURES = ("share_reaction", "share_reply", "share_forward")
SHARE_FEATURES = HOUR_FEATURES + WEEKDAY_FEATURES + ACTION_FEATURES
# activity statistics derived from features.user_behavior_features (see behavior_inputs)
STAT_FEATURES = ("log_interactions_per_active_day", "log1p_median_delay_hours")
FEATURES = SHARE_FEATURES + STAT_FEATURES


def behavior_inputs(frame: pd.DataFrame, feature_names: Sequence[str] = FEATURES) -> np.ndarray:
    """Model input matrix (float32, columns ``feature_names``) from user_behavior_features rows."""
    derived = {
        "log_interactions_per_active_day": lambda f: np.log(
            f["n_interactions"].astype(float) / f["active_days"].clip(lower=1).astype(float)
        ),
        "log1p_median_delay_hours": lambda f: np.log1p(
            f["median_delay_hours"].astype(float).fillna(0.0).clip(lower=0.0)
        ),
    }
    columns = [
        derived[name](frame) if name in derived else frame[name].astype(float).fillna(0.0)
        for name in feature_names
    ]
    return np.column_stack(columns).astype(np.float32) if columns else np.zeros((len(frame), 0))


def hour_smoothing_kernel(sd_hours: float) -> np.ndarray:
    """24 × 24 circular Gaussian kernel; columns sum to 1 (shares stay shares)."""
    if sd_hours <= 0:
        return np.eye(24)
    h = np.arange(24)
    d = (h[:, None] - h[None, :] + 12) % 24 - 12
    kernel = np.exp(-0.5 * (d / sd_hours) ** 2)
    return kernel / kernel.sum(axis=0, keepdims=True)


def preprocessing(feature_names: Sequence[str], hour_smoothing: float) -> tuple[np.ndarray, np.ndarray]:
    """(F × F mixing matrix that smooths the hour shares, F mask of share columns)."""
    names = list(feature_names)
    mix = np.eye(len(names))
    hours = [names.index(f) for f in HOUR_FEATURES if f in names]
    if len(hours) == 24:
        mix[np.ix_(hours, hours)] = hour_smoothing_kernel(hour_smoothing)
    return mix, np.array([f in SHARE_FEATURES for f in names], dtype=bool)


def preprocess(features: np.ndarray, feature_names: Sequence[str], hour_smoothing: float):
    """NumPy twin of ``BehaviorClusterer.transform`` (smoothed hours, square-rooted shares)."""
    mix, is_share = preprocessing(feature_names, hour_smoothing)
    x = np.asarray(features, dtype=np.float64) @ mix
    return np.where(is_share, np.sqrt(np.clip(x, 0.0, None)), x)


def _mlp(sizes: Sequence[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.GELU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class BehaviorClusterer(nn.Module):
    """Autoencoder ``features → 512 → 256 → 128 → latent → 128 → 256 → 512 → features`` + centroids.

    ``forward(features)`` takes raw behaviour features (columns ``feature_names``, as
    built by :func:`behavior_inputs`) and returns the squared latent distance of each
    user to every segment centroid (argmin = segment) and the latent code. All
    preprocessing lives in buffers: a circular smoothing of the 24 hour shares
    (a user's habits jitter by an hour or so), a square root of every share
    (variance-stabilising for sampled proportions) and standardisation with the
    training users' mean and standard deviation.
    """

    def __init__(
        self,
        feature_names: Sequence[str] = FEATURES,
        latent_dim: int = 8,
        hidden: Sequence[int] = (512, 256, 128),
        dropout: float = 0.1,
        latent_noise: float = 0.7,
        latent_l2: float = 0.01,
        hour_smoothing: float = 2.0,
    ) -> None:
        super().__init__()
        self.feature_names = list(feature_names)
        self.latent_dim = latent_dim
        self.latent_noise = latent_noise
        self.latent_l2 = latent_l2
        self.hour_smoothing = hour_smoothing
        n = len(self.feature_names)
        self.encoder = _mlp([n, *hidden, latent_dim], dropout)
        self.decoder = _mlp([latent_dim, *reversed(hidden), n], dropout)

        mix, is_share = preprocessing(self.feature_names, hour_smoothing)
        self.register_buffer("mix", torch.as_tensor(mix, dtype=torch.float32))
        self.register_buffer("is_share", torch.as_tensor(is_share, dtype=torch.bool))
        self.register_buffer("feature_mean", torch.zeros(n))
        self.register_buffer("feature_std", torch.ones(n))
        self.centroids = nn.Parameter(torch.zeros(0, latent_dim))

    @property
    def n_segments(self) -> int:
        return int(self.centroids.shape[0])

    # ----------------------------------------------------------- preprocessing
    def transform(self, features: torch.Tensor) -> torch.Tensor:
        """Smoothed hours and square-rooted shares, before standardisation."""
        x = features.to(self.mix.dtype) @ self.mix
        return torch.where(self.is_share, torch.sqrt(torch.clamp(x, min=0.0)), x)

    def standardise(self, features: torch.Tensor) -> torch.Tensor:
        return (self.transform(features) - self.feature_mean) / self.feature_std

    def set_scaler(self, features: np.ndarray) -> None:
        """Fit the standardisation on the training users' raw features."""
        with torch.no_grad():
            x = self.transform(torch.as_tensor(features, dtype=torch.float32))
            self.feature_mean.copy_(x.mean(dim=0))
            self.feature_std.copy_(torch.clamp(x.std(dim=0, unbiased=False), min=1e-6))

    def set_centroids(self, centroids: np.ndarray) -> None:
        """k × latent_dim segment centres (trainable during the IDEC refinement)."""
        self.centroids = nn.Parameter(
            torch.as_tensor(centroids, dtype=torch.float32).to(self.feature_mean.device)
        )

    # ----------------------------------------------------------------- parts
    def encode(self, features: torch.Tensor) -> torch.Tensor:
        """Latent code (the noise-free mean) of raw features."""
        return self.encoder(self.standardise(features))

    def reconstruction_loss(self, features: torch.Tensor) -> torch.Tensor:
        """MSE in standardised space + L2 on the code; noisy bottleneck while training."""
        x = self.standardise(features)
        z = self.encoder(x)
        noisy = z + self.latent_noise * torch.randn_like(z) if self.training else z
        recon = torch.mean((self.decoder(noisy) - x) ** 2)
        return recon + self.latent_l2 * torch.mean(torch.sum(z**2, dim=1))

    def squared_distances(self, latent: torch.Tensor) -> torch.Tensor:
        """(n, k) squared Euclidean distances to the centroids (ONNX-friendly, no cdist)."""
        diff = latent.unsqueeze(1) - self.centroids.unsqueeze(0)
        return torch.sum(diff * diff, dim=-1)

    def soft_assignment(self, latent: torch.Tensor) -> torch.Tensor:
        """Student-t (one degree of freedom) membership probabilities, as in DEC/IDEC."""
        q = 1.0 / (1.0 + self.squared_distances(latent))
        return q / q.sum(dim=1, keepdim=True)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(squared distance to each segment centroid [n, k], latent code [n, latent_dim])."""
        latent = self.encode(features)
        return self.squared_distances(latent), latent

    @torch.no_grad()
    def segment(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(segment index, distance to its centroid) per user."""
        if self.n_segments == 0:
            raise RuntimeError("no centroids: cluster the latent space before assigning segments")
        distances, _ = self(features)
        best, index = distances.min(dim=1)
        return index, best.sqrt()


def sharpened_target(q: torch.Tensor) -> torch.Tensor:
    """DEC target distribution: square and renormalise by cluster frequency."""
    weight = q**2 / q.sum(dim=0, keepdim=True)
    return weight / weight.sum(dim=1, keepdim=True)

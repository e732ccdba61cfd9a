"""Behaviour autoencoder whose latent space is clustered into user segments.

Why an autoencoder: a user's hour/weekday/action shares come from a few dozen
interactions, so they are noisy histograms. Squeezing them through a small, noisy
latent layer (Gaussian noise of fixed scale plus an L2 pull towards the origin, i.e.
a VAE with fixed posterior variance) keeps what survives the noise — the persona's
rhythm and action mix — and gives the latent space a metric (units of the noise)
that k-means can use. Encoder and decoder are MLPs with a linear skip path that
starts as the PCA projection, so training begins at the linear solution and the
MLPs learn only the non-linear correction. After k-means, centroids and encoder are
refined together (IDEC: Student-t soft assignments sharpened towards their own
confident targets, with reconstruction kept as a regulariser).
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
FEATURES = HOUR_FEATURES + WEEKDAY_FEATURES + ACTION_FEATURES

HOUR_SMOOTHING = 2.0  # sd (hours) of the circular smoothing of hour shares
GROUP_WEIGHTS = (1 / 1.5, 1 / 1.2, 1.0)  # hours, weekdays, actions after standardising


def behavior_inputs(frame: pd.DataFrame, feature_names: Sequence[str] = FEATURES) -> np.ndarray:
    """Model input matrix (float32, columns ``feature_names``) from user_behavior_features rows."""
    return frame[list(feature_names)].astype(float).fillna(0.0).to_numpy(np.float32)


def hour_smoothing_kernel(sd_hours: float) -> np.ndarray:
    """24 × 24 circular Gaussian kernel; columns sum to 1 (shares stay shares)."""
    if sd_hours <= 0:
        return np.eye(24)
    h = np.arange(24)
    d = (h[:, None] - h[None, :] + 12) % 24 - 12
    kernel = np.exp(-0.5 * (d / sd_hours) ** 2)
    return kernel / kernel.sum(axis=0, keepdims=True)


def preprocessing(
    feature_names: Sequence[str],
    hour_smoothing: float = HOUR_SMOOTHING,
    group_weights: Sequence[float] = GROUP_WEIGHTS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(F × F matrix smoothing the hour shares, F mask of share columns, F column weights)."""
    names = list(feature_names)
    mix = np.eye(len(names))
    hours = [names.index(f) for f in HOUR_FEATURES if f in names]
    if len(hours) == 24:
        mix[np.ix_(hours, hours)] = hour_smoothing_kernel(hour_smoothing)
    groups = (HOUR_FEATURES, WEEKDAY_FEATURES, ACTION_FEATURES)
    weight = np.array(
        [next((w for g, w in zip(groups, group_weights, strict=True) if f in g), 1.0) for f in names]
    )
    return mix, np.array([f in FEATURES for f in names], dtype=bool), weight


def preprocess(
    features: np.ndarray,
    feature_names: Sequence[str],
    hour_smoothing: float = HOUR_SMOOTHING,
) -> np.ndarray:
    """NumPy twin of ``BehaviorClusterer.transform`` (smoothed hours, square-rooted shares)."""
    mix, is_share, _ = preprocessing(feature_names, hour_smoothing)
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
    nn.init.zeros_(layers[-1].weight)  # start as the linear (PCA) path alone
    nn.init.zeros_(layers[-1].bias)
    return nn.Sequential(*layers)


class BehaviorClusterer(nn.Module):
    """Autoencoder ``features → 512 → 256 → 128 → latent → 128 → 256 → 512 → features`` + centroids.

    ``forward(features)`` takes raw behaviour features (columns ``feature_names``, as
    built by :func:`behavior_inputs`) and returns the squared latent distance of each
    user to every segment centroid (argmin = segment) and the latent code. All
    preprocessing lives in buffers: circular smoothing of the 24 hour shares (a
    user's habits jitter by an hour or so), square roots of the shares
    (variance-stabilising for sampled proportions), standardisation with the training
    users' statistics, and group weights so the 24 hour columns do not drown the 3
    action columns.
    """

    def __init__(
        self,
        feature_names: Sequence[str] = FEATURES,
        latent_dim: int = 8,
        hidden: Sequence[int] = (512, 256, 128),
        dropout: float = 0.1,
        latent_noise: float = 0.7,
        latent_l2: float = 0.01,
        hour_smoothing: float = HOUR_SMOOTHING,
    ) -> None:
        super().__init__()
        self.feature_names = list(feature_names)
        self.latent_dim = latent_dim
        self.latent_noise = latent_noise
        self.latent_l2 = latent_l2
        self.hour_smoothing = hour_smoothing
        self.validation_error_by_k: dict[int, float] = {}  # k -> validation profile error
        n = len(self.feature_names)
        self.encoder = _mlp([n, *hidden, latent_dim], dropout)
        self.decoder = _mlp([latent_dim, *reversed(hidden), n], dropout)
        self.encoder_linear = nn.Linear(n, latent_dim, bias=False)
        self.decoder_linear = nn.Linear(latent_dim, n)

        mix, is_share, weight = preprocessing(self.feature_names, hour_smoothing)
        self.register_buffer("mix", torch.as_tensor(mix, dtype=torch.float32))
        self.register_buffer("is_share", torch.as_tensor(is_share, dtype=torch.bool))
        self.register_buffer("feature_weight", torch.as_tensor(weight, dtype=torch.float32))
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
        return (self.transform(features) - self.feature_mean) / self.feature_std * self.feature_weight

    def fit_preprocessing(self, features: np.ndarray) -> None:
        """Standardisation stats and the PCA start of the linear path, from training users."""
        with torch.no_grad():
            x = self.transform(torch.as_tensor(features, dtype=torch.float32))
            self.feature_mean.copy_(x.mean(dim=0))
            self.feature_std.copy_(torch.clamp(x.std(dim=0, unbiased=False), min=1e-6))
            z = self.standardise(torch.as_tensor(features, dtype=torch.float32)).double()
            _, _, vt = torch.linalg.svd(z - z.mean(dim=0), full_matrices=False)
            components = vt[: self.latent_dim].float()
            self.encoder_linear.weight.copy_(components)
            self.decoder_linear.weight.copy_(components.T)
            self.decoder_linear.bias.copy_(z.mean(dim=0).float())

    def set_centroids(self, centroids: np.ndarray) -> None:
        """k × latent_dim segment centres (trainable during the IDEC refinement)."""
        self.centroids = nn.Parameter(
            torch.as_tensor(centroids, dtype=torch.float32).to(self.feature_mean.device)
        )

    # ----------------------------------------------------------------- parts
    def encode_standardised(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x) + self.encoder_linear(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruction in standardised (weighted) feature space."""
        return self.decoder(z) + self.decoder_linear(z)

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        """Latent code (the noise-free mean) of raw features."""
        return self.encode_standardised(self.standardise(features))

    def autoencoder_loss(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(MSE in standardised space + L2 on the code, the code); noisy bottleneck in training."""
        x = self.standardise(features)
        z = self.encode_standardised(x)
        noisy = z + self.latent_noise * torch.randn_like(z) if self.training else z
        recon = torch.mean((self.decode(noisy) - x) ** 2)
        return recon + self.latent_l2 * torch.mean(torch.sum(z**2, dim=1)), z

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


def idec_loss(model: BehaviorClusterer, features: torch.Tensor, target: torch.Tensor):
    """Autoencoder loss + KL(target ‖ soft assignment) (Guo et al., IDEC, 2017)."""
    loss, z = model.autoencoder_loss(features)
    q = model.soft_assignment(z)
    kl = torch.sum(target * (torch.log(target + 1e-9) - torch.log(q + 1e-9)), dim=1).mean()
    return loss + kl

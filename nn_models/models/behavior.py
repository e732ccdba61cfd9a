"""Behaviour autoencoder whose latent space is clustered into user segments.

Why an autoencoder: a user's hour/weekday/action shares come from a few dozen
interactions, so they are noisy histograms; compressing them through a small
latent layer (and reconstructing them) keeps the persona-level structure and
drops much of the sampling noise before k-means looks at them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


def _mlp(sizes: Sequence[int], dropout: float, last_activation: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2 or last_activation:
            layers.append(nn.GELU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class BehaviorClusterer(nn.Module):
    """Autoencoder ``n_features → hidden… → latent → …hidden → n_features`` plus segment centroids.

    Inputs are raw behaviour features (shares and activity statistics, in the column
    order of ``feature_names``); the model standardises them with its own buffers
    (``feature_mean``/``feature_std``, fitted on training users), so a registered model
    needs nothing but the feature table. After training, k-means centroids in the
    latent space are stored in the ``centroids`` buffer: ``forward`` returns each
    user's squared distance to every centroid (argmin = segment) and the latent code.
    """

    def __init__(
        self,
        feature_names: Sequence[str],
        latent_dim: int = 12,
        hidden: Sequence[int] = (512, 256, 128),
        dropout: float = 0.1,
        input_noise: float = 0.0,
    ) -> None:
        super().__init__()
        self.feature_names = list(feature_names)
        n_features = len(self.feature_names)
        self.latent_dim = latent_dim
        self.input_noise = input_noise   # denoising: Gaussian noise on standardised inputs
        self.encoder = _mlp([n_features, *hidden, latent_dim], dropout, last_activation=False)
        self.decoder = _mlp([latent_dim, *reversed(hidden), n_features], dropout,
                            last_activation=False)
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_std", torch.ones(n_features))
        self.register_buffer("centroids", torch.zeros(0, latent_dim))

    @property
    def n_segments(self) -> int:
        return int(self.centroids.shape[0])

    def set_scaler(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Store the training users' feature mean/std (std floored to avoid division by 0)."""
        self.feature_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.feature_std.copy_(torch.as_tensor(np.maximum(std, 1e-6), dtype=torch.float32))

    def set_centroids(self, centroids: np.ndarray) -> None:
        """Store k-means centroids (k × latent_dim) so the model assigns segments by itself."""
        self.centroids = torch.as_tensor(centroids, dtype=torch.float32).to(
            self.feature_mean.device
        )

    def standardise(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.feature_mean) / self.feature_std

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        """Latent code of raw (unstandardised) features."""
        return self.encoder(self.standardise(features))

    def reconstruction_loss(self, features: torch.Tensor) -> torch.Tensor:
        """Mean squared error in standardised feature space (noise added while training)."""
        target = self.standardise(features)
        noisy = target
        if self.training and self.input_noise > 0:
            noisy = target + self.input_noise * torch.randn_like(target)
        return torch.mean((self.decoder(self.encoder(noisy)) - target) ** 2)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(squared distance to each segment centroid [n, k], latent code [n, latent_dim])."""
        latent = self.encode(features)
        distances = torch.cdist(latent, self.centroids.to(latent.dtype)) ** 2
        return distances, latent

    @torch.no_grad()
    def segment(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(segment index, distance to its centroid) per user."""
        if self.n_segments == 0:
            raise RuntimeError("no centroids: cluster the latent space before assigning segments")
        distances, _ = self(features)
        best, index = distances.min(dim=1)
        return index, best.sqrt()

"""Clustering helpers, the label-free segment metrics and the behaviour baselines.

A segmentation is judged by how well it predicts what its users do *later*: each
user's profile in a later period (24 hour shares, 7 weekday shares, 3 action shares)
is predicted by the mean earlier-period profile of his segment's members
(``centroid_profiles``), and ``profile_error`` is the squared error summed over the
34 shares (the Brier score of each of the three distributions, summed) — a proper
score, so the noise of a user's few later interactions adds the same amount to
every rule and cannot favour one. Baselines: PCA + k-means (inputs, k chosen on the
validation period by the same error) and one global profile (every user predicted
by the mean of all). ``bootstrap_stability`` refits k-means on bootstrap samples of
users and compares the refits' segments with the fitted ones (ARI).

``kmeans_by_silhouette`` / ``pca_kmeans_baseline`` remain for reporting silhouette and
ARI against synthetic personas where those exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score, silhouette_score

K_RANGE: tuple[int, ...] = tuple(range(3, 11))
SILHOUETTE_SAMPLE = 3000  # silhouette is O(n²): score on a seeded sample above this size


@dataclass(frozen=True)
class Clustering:
    k: int
    centroids: np.ndarray  # (k, dim)
    labels: np.ndarray  # (n,) for the points it was fitted on
    silhouettes: dict[int, float]  # k -> silhouette of the k-means solution


def silhouette(points: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    """Silhouette score (NaN when fewer than 2 clusters or too few points)."""
    n_labels = len(np.unique(labels))
    if n_labels < 2 or n_labels >= len(points):
        return float("nan")
    sample = SILHOUETTE_SAMPLE if len(points) > SILHOUETTE_SAMPLE else None
    return float(silhouette_score(points, labels, sample_size=sample, random_state=seed))


def kmeans_by_silhouette(
    points: np.ndarray, k_range: Sequence[int] = K_RANGE, seed: int = 0, n_init: int = 10
) -> Clustering:
    """k-means for each k in ``k_range`` (k < n points); keep the k with the best silhouette."""
    points = np.asarray(points, dtype=np.float64)
    candidates = [k for k in k_range if 2 <= k < len(points)]
    if not candidates:
        raise ValueError(f"cannot cluster {len(points)} points with k in {list(k_range)}")
    best: tuple[float, int, KMeans] | None = None
    scores: dict[int, float] = {}
    for k in candidates:
        km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(points)
        score = silhouette(points, km.labels_, seed)
        scores[k] = score
        if best is None or (np.isfinite(score) and not (np.isfinite(best[0]) and score <= best[0])):
            best = (score, k, km)
    assert best is not None
    _, k, km = best
    return Clustering(k=k, centroids=km.cluster_centers_, labels=km.labels_, silhouettes=scores)


def assign(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid for each point."""
    d = ((np.asarray(points)[:, None, :] - np.asarray(centroids)[None, :, :]) ** 2).sum(axis=2)
    return d.argmin(axis=1)


def pca_kmeans_baseline(
    train: np.ndarray,
    holdout: np.ndarray,
    holdout_truth: np.ndarray,
    n_components: int,
    k_range: Sequence[int] = K_RANGE,
    seed: int = 0,
) -> dict[str, float]:
    """Fit PCA + k-means (k by silhouette) on standardised training users, score the holdout.

    ``train``/``holdout`` are already standardised with the training users' statistics.
    Returns ARI against the true personas and silhouette of the holdout in PCA space.
    """
    n_components = int(min(n_components, train.shape[1], len(train)))
    pca = PCA(n_components=n_components, random_state=seed).fit(train)
    clustering = kmeans_by_silhouette(pca.transform(train), k_range, seed)
    z_holdout = pca.transform(holdout)
    labels = assign(z_holdout, clustering.centroids)
    return {
        "baseline_ari": float(adjusted_rand_score(holdout_truth, labels)),
        "baseline_silhouette": silhouette(z_holdout, labels, seed),
        "baseline_k": float(clustering.k),
        "baseline_explained_variance": float(pca.explained_variance_ratio_.sum()),
    }


# --------------------------------------------------------- label-free segment metrics
def centroid_profiles(labels: np.ndarray, profiles: np.ndarray, k: int) -> np.ndarray:
    """(k, F) mean profile of each segment's members (an empty segment: everyone's mean)."""
    profiles = np.asarray(profiles, dtype=np.float64)
    out = np.tile(profiles.mean(axis=0), (k, 1))
    for s in range(k):
        members = labels == s
        if members.any():
            out[s] = profiles[members].mean(axis=0)
    return out


def profile_error(predicted: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Per user: squared error summed over the share columns (lower is better)."""
    diff = np.asarray(predicted, dtype=np.float64) - np.asarray(actual, dtype=np.float64)
    return (diff**2).sum(axis=1)


def kmeans(points: np.ndarray, k: int, seed: int = 0, n_init: int = 10) -> KMeans:
    return KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(np.asarray(points, np.float64))


def bootstrap_stability(
    points: np.ndarray, labels: np.ndarray, k: int, n_boot: int = 10, seed: int = 0
) -> float:
    """Mean ARI between ``labels`` and k-means refitted on bootstrap samples of the points
    (each refit assigns every point to its nearest refitted centre)."""
    points = np.asarray(points, dtype=np.float64)
    if k < 2 or len(points) <= k:
        return float("nan")
    rng = np.random.default_rng(seed)
    scores = []
    for b in range(n_boot):
        sample = points[rng.integers(0, len(points), len(points))]
        refit = kmeans(sample, k, seed=seed + b, n_init=3)
        scores.append(adjusted_rand_score(labels, assign(points, refit.cluster_centers_)))
    return float(np.mean(scores))


@dataclass
class PcaKmeans:
    """PCA + k-means on standardised (optionally weighted) inputs, fitted on training users."""

    mean: np.ndarray
    std: np.ndarray
    weight: np.ndarray
    pca: PCA
    km: KMeans

    def project(self, x: np.ndarray) -> np.ndarray:
        return self.pca.transform((np.asarray(x, np.float64) - self.mean) / self.std * self.weight)

    def assign(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(segment, Euclidean distance to its centre in PCA space) per row."""
        z = self.project(x)
        d = ((z[:, None, :] - self.km.cluster_centers_[None]) ** 2).sum(axis=2)
        seg = d.argmin(axis=1)
        return seg, np.sqrt(d[np.arange(len(z)), seg])


def fit_pca_kmeans(
    x: np.ndarray, k: int, n_components: int, weight: np.ndarray | None = None, seed: int = 0
) -> PcaKmeans:
    x = np.asarray(x, dtype=np.float64)
    mean, std = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-6)
    weight = np.ones(x.shape[1]) if weight is None else np.asarray(weight, np.float64)
    z = (x - mean) / std * weight
    pca = PCA(n_components=int(min(n_components, x.shape[1], len(x))), random_state=seed).fit(z)
    return PcaKmeans(mean, std, weight, pca, kmeans(pca.transform(z), k, seed))

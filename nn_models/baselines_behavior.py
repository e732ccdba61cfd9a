"""Clustering helpers and the behaviour model's named baseline: PCA + k-means.

``kmeans_by_silhouette`` is shared by the autoencoder (on its latent space) and the
baseline (on PCA components), so both choose k by the same rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score, silhouette_score

K_RANGE: tuple[int, ...] = tuple(range(3, 11))
SILHOUETTE_SAMPLE = 3000   # silhouette is O(n²): score on a seeded sample above this size


@dataclass(frozen=True)
class Clustering:
    k: int
    centroids: np.ndarray          # (k, dim)
    labels: np.ndarray             # (n,) for the points it was fitted on
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

"""SpRAy-style spectral clustering of one group's map vectors (Lapuschkin et al. 2019): a k-nearest-neighbour
affinity graph with locally scaled Gaussian weights, the normalised Laplacian's leading eigenvectors, the
number of clusters from the largest eigengap, k-means on the spectral embedding. Torch-free; scikit-learn
and SciPy do the neighbour search, the sparse eigenproblem and k-means.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_CLUSTERS = 8
NEIGHBOURS = 10
SCALE_NEIGHBOUR = 7  # local scaling (Zelnik-Manor & Perona 2004): each point's distance to its 7th neighbour
GAP_RATIO = 3.0
"""k clusters are read from the spectrum when the (k+1)-th eigenvalue is at least this many times the k-th
(k >= 2): a group whose eigenvalues rise gradually (no such jump) is one cluster, not split by noise."""
MIN_IMAGES = 2 * MAX_CLUSTERS
"""Fewer images than this in a group: no clusters are formed there (the audit says so for the group)."""


@dataclass(frozen=True)
class Clustering:
    """One group's clusters: a label per image, the 2-D spectral embedding, and the eigenvalues the number
    of clusters was read from."""

    labels: np.ndarray  # (n,) int: 0..k-1
    embedding: np.ndarray  # (n, 2) float: the second and third eigenvectors, for plotting
    eigenvalues: np.ndarray  # the smallest eigenvalues of the normalised Laplacian, ascending

    @property
    def count(self) -> int:
        return int(self.labels.max()) + 1 if self.labels.size else 0


def affinity(vectors: np.ndarray, neighbours: int = NEIGHBOURS) -> Any:
    """Symmetric sparse kNN affinity: w_ij = exp(-d_ij² / (σ_i σ_j)), σ_i the distance to the i-th point's
    ``SCALE_NEIGHBOUR``-th neighbour (so dense and sparse regions are weighed alike)."""
    from scipy import sparse
    from sklearn.neighbors import NearestNeighbors

    n = len(vectors)
    k = min(neighbours, n - 1)
    distances, indices = NearestNeighbors(n_neighbors=k + 1).fit(vectors).kneighbors(vectors)
    distances, indices = distances[:, 1:], indices[:, 1:]  # each point's own entry first
    sigma = distances[:, min(SCALE_NEIGHBOUR, k) - 1]
    sigma = np.where(sigma > 0, sigma, max(float(sigma[sigma > 0].min()) if (sigma > 0).any() else 1.0, 1e-12))
    weights = np.exp(-(distances**2) / (sigma[:, None] * sigma[indices]))
    graph = sparse.csr_matrix((weights.ravel(), (np.repeat(np.arange(n), k), indices.ravel())), shape=(n, n))
    return graph.maximum(graph.T)


def spectral_clusters(vectors: np.ndarray, *, max_clusters: int = MAX_CLUSTERS, seed: int = 0) -> Clustering:
    """Cluster ``vectors`` (n, d); the count is read from the eigengap of the normalised Laplacian
    (``cluster_count``)."""
    from scipy import sparse
    from scipy.sparse.linalg import eigsh
    from sklearn.cluster import KMeans

    n = len(vectors)
    if n < MIN_IMAGES:
        raise ValueError(f"{n} images are too few to cluster (at least {MIN_IMAGES})")
    graph = affinity(vectors)
    degree = np.asarray(graph.sum(axis=1)).ravel()
    scale = sparse.diags(1.0 / np.sqrt(np.maximum(degree, 1e-12)))
    normalised = scale @ graph @ scale  # I - L: its largest eigenvalues are L's smallest
    m = min(max_clusters + 1, n - 1)
    if n <= 500:
        values, vectors_ = np.linalg.eigh(normalised.toarray())
        values, vectors_ = values[::-1][:m], vectors_[:, ::-1][:, :m]
    else:
        values, vectors_ = eigsh(normalised, k=m, which="LA", v0=np.full(n, 1.0 / np.sqrt(n)))
        order = np.argsort(values)[::-1]
        values, vectors_ = values[order], vectors_[:, order]
    laplacian = np.clip(1.0 - values, 0.0, 2.0)  # ascending
    count = cluster_count(laplacian, max_clusters)
    embedding = vectors_[:, 1:3] if vectors_.shape[1] >= 3 else np.zeros((n, 2))
    if count == 1:
        return Clustering(np.zeros(n, dtype=np.int64), embedding, laplacian)
    rows = vectors_[:, :count]
    rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    labels = KMeans(n_clusters=count, n_init=10, random_state=seed).fit_predict(rows)
    return Clustering(_by_size(labels), embedding, laplacian)


def cluster_count(eigenvalues: np.ndarray, max_clusters: int = MAX_CLUSTERS) -> int:
    """The number of clusters the ascending Laplacian ``eigenvalues`` show: the k (2..max) whose gap
    λ_{k+1} / λ_k is largest, if at least ``GAP_RATIO``; else 1. Near-zero eigenvalues (disconnected groups)
    count as a gap of infinity. The ratio, not the difference: a kNN graph of one homogeneous group has
    eigenvalues rising steadily, whose absolute gaps are as large as a real cluster's."""
    best, best_ratio = 1, GAP_RATIO
    for k in range(2, min(max_clusters, len(eigenvalues) - 1) + 1):
        low, high = float(eigenvalues[k - 1]), float(eigenvalues[k])
        ratio = np.inf if low < 1e-9 and high > 1e-9 else (high / low if low > 0 else 1.0)
        if ratio > best_ratio or (np.isinf(ratio) and np.isinf(best_ratio)):
            best, best_ratio = k, ratio
    return best


def _by_size(labels: np.ndarray) -> np.ndarray:
    """Relabel so that cluster 0 is the largest (ties by first appearance): stable names across runs."""
    ids, counts = np.unique(labels, return_counts=True)
    order = ids[np.lexsort((ids, -counts))]
    mapping = np.empty(ids.max() + 1, dtype=np.int64)
    mapping[order] = np.arange(len(order))
    return mapping[labels]

"""Improved precision and recall of a generative model from feature vectors.

Kynkäänniemi, Karras, Laine, Lehtinen and Aila 2019, "Improved Precision and Recall Metric for Assessing
Generative Models" (NeurIPS), as the ADM evaluation suite (guided-diffusion's evaluations/evaluator.py) applies
it to Inception pool features with k = 3 (the GAT paper reports recall this way).

Each set approximates its manifold by a union of balls: around every feature vector a ball whose radius is the
distance to its k-th nearest neighbour within the same set, the point itself excluded. Precision is the share
of fake vectors inside at least one real ball (distance to some real vector <= that vector's radius); recall
is the share of real vectors inside at least one fake ball. Balls are closed (<=).

Self-distance and ties: ADM takes the (k+1)-th smallest distance of a row that includes the zero distance of a
point to itself. Here the diagonal is set to +inf and the k-th smallest of the rest is taken, which is the same
value (the self-distance is the smallest of the row). Duplicates are ordinary neighbours: a point with k exact
copies in its set has radius 0, in both formulations.

Numerics: Euclidean distances on the raw features, as squared distances ||a||^2 - 2 a.b + ||b||^2 in float64,
clamped at 0, compared with squared radii (the same order as distances). Distances are formed `batch_size`
rows x all columns at a time, so 50k x 50k needs one [batch_size, 50k] float64 block (400 MB at 1000 rows),
never the full matrix. (ADM computes the blocks in float16 and falls back to float32 on overflow; float64 here
differs from it only for points within rounding of a ball's surface.)
"""

import numpy as np


def _as_features(features, name):
    features = np.asarray(features, np.float64)
    if features.ndim != 2:
        raise ValueError(f"{name} features must be 2-D [n, dim], got shape {list(features.shape)}")
    return features


def _check_count(features, k, name):
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if len(features) < k + 1:
        raise ValueError(f"{name} features need at least k + 1 = {k + 1} samples, got {len(features)}")


def _check_batch_size(batch_size):
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def _squared_distances(rows, columns, column_norms):
    """[len(rows), len(columns)] squared Euclidean distances by the norm expansion, clamped at 0."""
    squared = rows @ columns.T  # in place from here: one block in memory
    squared *= -2.0
    squared += np.einsum("ij,ij->i", rows, rows)[:, None]
    squared += column_norms[None, :]
    return np.maximum(squared, 0.0, out=squared)


def _squared_radii(features, k, batch_size):
    norms = np.einsum("ij,ij->i", features, features)
    radii = np.empty(len(features), np.float64)
    for start in range(0, len(features), batch_size):
        stop = min(start + batch_size, len(features))
        squared = _squared_distances(features[start:stop], features, norms)
        squared[np.arange(stop - start), np.arange(start, stop)] = np.inf  # exclude the point itself
        radii[start:stop] = np.partition(squared, k - 1, axis=1)[:, k - 1]
    return radii


def knn_radii(features, k=3, batch_size=1000):
    """[n] distances from each feature vector to its k-th nearest neighbour in `features`, itself excluded."""
    features = _as_features(features, "the")
    _check_count(features, k, "the")
    return np.sqrt(_squared_radii(features, k, _check_batch_size(batch_size)))


def precision_recall(real_features, fake_features, k=3, batch_size=1000):
    """(precision, recall) of fake [n_fake, dim] against real [n_real, dim] features, as floats in [0, 1]."""
    real, fake = _as_features(real_features, "real"), _as_features(fake_features, "fake")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake features differ in dimension: {real.shape[1]} vs {fake.shape[1]}")
    _check_count(real, k, "real")
    _check_count(fake, k, "fake")
    batch_size = _check_batch_size(batch_size)
    real_radii, fake_radii = _squared_radii(real, k, batch_size), _squared_radii(fake, k, batch_size)
    fake_norms = np.einsum("ij,ij->i", fake, fake)
    fake_in_real = np.zeros(len(fake), bool)  # inside some real ball -> precision
    real_in_fake = np.empty(len(real), bool)  # inside some fake ball -> recall
    for start in range(0, len(real), batch_size):
        stop = min(start + batch_size, len(real))
        squared = _squared_distances(real[start:stop], fake, fake_norms)  # real rows x fake columns
        real_in_fake[start:stop] = (squared <= fake_radii[None, :]).any(axis=1)
        fake_in_real |= (squared <= real_radii[start:stop, None]).any(axis=0)
    return float(fake_in_real.mean()), float(real_in_fake.mean())

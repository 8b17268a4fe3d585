"""Fréchet distance, Inception Score and KID from streamed statistics (paper Sec. 4.1; official hit-gan
utils/inception_utils.py).

Features arrive batch by batch: RunningStatistics keeps n, the sum and the sum of outer products in float64,
so 50k x 2048 features are never held at once. The covariance is the unbiased one (n - 1), as the official
code's `tfp.stats.covariance * n / (n - 1)`. Tr sqrt(C1 C2) uses the symmetric form sqrt(C1) C2 sqrt(C1),
whose eigenvalues are real and non-negative (rounding aside), instead of a general matrix square root.
"""

from typing import NamedTuple, Optional

import numpy as np


class RunningStatistics:
    """Mean and unbiased covariance of feature vectors fed in batches."""

    def __init__(self, dim):
        self.dim = dim
        self.count = 0
        self.total = np.zeros(dim, np.float64)
        self.outer = np.zeros((dim, dim), np.float64)

    def update(self, features):
        features = np.asarray(features, np.float64)
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"expected features of shape [batch, {self.dim}], got {list(features.shape)}")
        self.count += features.shape[0]
        self.total += features.sum(axis=0)
        self.outer += features.T @ features

    def mean(self):
        return self.total / self.count

    def covariance(self):
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 samples, got {self.count}")
        mean = self.mean()
        return (self.outer - self.count * np.outer(mean, mean)) / (self.count - 1)

    def arrays(self):
        """The state as named arrays (for np.savez, possibly beside other arrays)."""
        return {"count": self.count, "total": self.total, "outer": self.outer}

    @classmethod
    def from_arrays(cls, arrays):
        stats = cls(arrays["total"].shape[0])
        stats.count, stats.total, stats.outer = int(arrays["count"]), arrays["total"], arrays["outer"]
        return stats

    def save(self, path):
        np.savez(path, **self.arrays())

    @classmethod
    def load(cls, path):
        return cls.from_arrays(np.load(path))


class FixedStatistics:
    """A mean and covariance given as they are (e.g. a reference batch's "mu" and "sigma"): usable wherever
    fid_from_statistics takes a RunningStatistics, but not updatable; the sample count is unknown (None)."""

    def __init__(self, mean, covariance):
        self._mean, self._covariance = np.asarray(mean, np.float64), np.asarray(covariance, np.float64)
        self.dim = self._mean.shape[0]
        self.count = None

    def mean(self):
        return self._mean

    def covariance(self):
        return self._covariance


class ReferenceBatch(NamedTuple):
    statistics: FixedStatistics  # Inception pool_3 mean [2048] and covariance [2048, 2048]
    images: Optional[np.ndarray]  # uint8 [N, H, W, 3], or None when absent or not loaded


def load_reference_batch(path, load_images=True):
    """Reads an ADM evaluation-suite reference batch .npz (e.g. VIRTUAL_imagenet256_labeled.npz): "mu" and
    "sigma", the pool_3 statistics, and "arr_0", the images, when present and `load_images`. Spatial
    statistics ("mu_s", "sigma_s") and anything else are ignored. `path` may also be an open binary file."""
    with np.load(path, allow_pickle=False) as arrays:
        missing = [key for key in ("mu", "sigma") if key not in arrays.files]
        if missing:
            raise ValueError(f"reference batch {path} lacks {' and '.join(missing)} (has {arrays.files})")
        mu, sigma = arrays["mu"], arrays["sigma"]
        if mu.ndim != 1:
            raise ValueError(f"reference batch {path}: mu must be 1-D, got shape {list(mu.shape)}")
        if sigma.shape != (mu.shape[0], mu.shape[0]):
            raise ValueError(f"reference batch {path}: sigma must be [{mu.shape[0]}, {mu.shape[0]}] to match mu, "
                             f"got {list(sigma.shape)}")
        images = None
        if load_images and "arr_0" in arrays.files:
            images = arrays["arr_0"]
            if images.ndim != 4 or images.shape[-1] != 3:
                raise ValueError(f"reference batch {path}: arr_0 must be images [N, H, W, 3], "
                                 f"got {list(images.shape)}")
    return ReferenceBatch(FixedStatistics(mu, sigma), images)


def _sqrt_psd(matrix):
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def trace_sqrt_product(cov1, cov2):
    """Tr sqrt(C1 C2) = Tr sqrt(sqrt(C1) C2 sqrt(C1)) for symmetric positive semi-definite C1, C2."""
    root = _sqrt_psd(cov1)
    values = np.linalg.eigvalsh(root @ cov2 @ root)
    return float(np.sqrt(np.clip(values, 0, None)).sum())


def frechet_distance(mu1, cov1, mu2, cov2):
    """||mu1 - mu2||^2 + Tr(C1 + C2 - 2 sqrt(C1 C2)) (Heusel et al. 2017)."""
    diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * trace_sqrt_product(cov1, cov2))


def fid_from_statistics(stats1, stats2):
    return frechet_distance(stats1.mean(), stats1.covariance(), stats2.mean(), stats2.covariance())


class RunningInceptionScore:
    """exp(E_x KL(p(y|x) || p(y))) per split of `split_size` samples (in arrival order), averaged over splits
    (Salimans et al. 2016; 5000 per split as the paper). Only per-split sums are kept:
    mean KL = mean_x sum_y p log p - sum_y p_bar log p_bar."""

    def __init__(self, split_size=5000):
        self.split_size = split_size
        self.splits = []  # [count, sum of p, sum of p log p] per split

    def update(self, logits):
        logits = np.asarray(logits, np.float64)
        logits = logits - logits.max(axis=1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        p = np.exp(log_p)
        start = 0
        while start < len(p):
            if not self.splits or self.splits[-1][0] == self.split_size:
                self.splits.append([0, np.zeros(p.shape[1]), 0.0])
            split = self.splits[-1]
            take = min(self.split_size - split[0], len(p) - start)
            chunk, log_chunk = p[start:start + take], log_p[start:start + take]
            split[0] += take
            split[1] += chunk.sum(axis=0)
            split[2] += float((chunk * log_chunk).sum())
            start += take

    def result(self):
        """(mean, std) over splits; a trailing partial split counts only if it is the only one."""
        full = [s for s in self.splits if s[0] == self.split_size] or self.splits[:1]
        if not full:
            raise ValueError("no logits were given")
        scores = []
        for count, p_sum, p_log_p in full:
            p_bar = p_sum / count
            kl = p_log_p / count - float((p_bar * np.log(np.clip(p_bar, 1e-30, None))).sum())
            scores.append(np.exp(kl))
        return float(np.mean(scores)), float(np.std(scores))


def kernel_inception_distance(features1, features2, num_subsets=100, subset_size=1000, seed=0):
    """KID (Binkowski et al. 2018): the unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3, averaged over random
    subsets; small sample counts are fine (the demo). Returns (mean, std) over subsets."""
    x, y = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"KID needs two [n, d] feature sets, got {list(x.shape)} and {list(y.shape)}")
    m = min(subset_size, len(x), len(y))
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(x)} and {len(y)}")
    rng = np.random.default_rng(seed)
    d = x.shape[1]
    estimates = []
    for _ in range(num_subsets):
        a, b = x[rng.choice(len(x), m, replace=False)], y[rng.choice(len(y), m, replace=False)]
        kxx, kyy, kxy = (a @ a.T / d + 1) ** 3, (b @ b.T / d + 1) ** 3, (a @ b.T / d + 1) ** 3
        off = ~np.eye(m, dtype=bool)
        estimates.append(kxx[off].mean() + kyy[off].mean() - 2 * kxy.mean())
    return float(np.mean(estimates)), float(np.std(estimates))

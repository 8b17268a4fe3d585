"""Improved precision/recall against a brute-force reference and constructed cases; ADM reference batch loading."""

import numpy as np
import pytest
import scipy.linalg
import scipy.spatial.distance

from hit.eval.fid import RunningStatistics, fid_from_statistics, load_reference_batch
from hit.eval.precision_recall import knn_radii, precision_recall


def brute_force(real, fake, k=3):
    """ADM's formulation: the (k+1)-th smallest distance of a row that includes the zero self-distance."""
    real_radii = np.sort(scipy.spatial.distance.cdist(real, real), axis=1)[:, k]
    fake_radii = np.sort(scipy.spatial.distance.cdist(fake, fake), axis=1)[:, k]
    cross = scipy.spatial.distance.cdist(real, fake)  # [real, fake]
    precision = np.mean([(cross[:, j] <= real_radii).any() for j in range(len(fake))])
    recall = np.mean([(cross[i, :] <= fake_radii).any() for i in range(len(real))])
    return precision, recall, real_radii, fake_radii


@pytest.mark.parametrize("k", [1, 3, 5])
def test_matches_brute_force_on_random_data(k):
    rng = np.random.default_rng(k)
    real = rng.normal(size=(300, 16))
    fake = rng.normal(size=(250, 16)) * 0.9 + 0.4  # overlaps partly, so neither value is 0 or 1
    precision, recall, real_radii, fake_radii = brute_force(real, fake, k)
    assert 0.05 < precision < 0.95 and 0.05 < recall < 0.95
    np.testing.assert_allclose(knn_radii(real, k, batch_size=64), real_radii, rtol=1e-9)
    np.testing.assert_allclose(knn_radii(fake, k), fake_radii, rtol=1e-9)
    assert precision_recall(real, fake, k=k, batch_size=64) == (pytest.approx(precision), pytest.approx(recall))


def test_batch_size_does_not_change_the_result():
    rng = np.random.default_rng(10)
    real, fake = rng.normal(size=(203, 8)), rng.normal(0.4, 1.0, size=(151, 8))
    results = {precision_recall(real, fake, batch_size=b) for b in (1, 7, 100, 203, 10_000)}
    assert len(results) == 1


def test_identical_sets_give_one_and_far_apart_clusters_give_zero():
    x = np.random.default_rng(11).normal(size=(200, 32))
    assert precision_recall(x, x.copy()) == (1.0, 1.0)
    assert precision_recall(x, x + 100.0) == (0.0, 0.0)


def test_mode_dropping_keeps_precision_and_halves_recall():
    rng = np.random.default_rng(12)
    centres = np.array([[0.0, 0.0], [50.0, 0.0]])
    real = np.concatenate([rng.normal(c, 1.0, size=(300, 2)) for c in centres])
    fake = rng.normal(centres[0], 1.0, size=(300, 2))  # only the first mode
    precision, recall = precision_recall(real, fake)
    assert precision > 0.95
    assert 0.45 < recall <= 0.5


def test_self_is_excluded_and_duplicates_are_neighbours():
    points = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.0, 5.0]])
    # From the origin the others lie at 1, 2, 3, 5: the 3rd nearest excluding itself is at 3.
    assert knn_radii(points, k=3)[0] == 3.0
    repeated = np.repeat(points, 4, axis=0)  # each point with 3 exact copies (integers: exact arithmetic)
    np.testing.assert_array_equal(knn_radii(repeated, k=3), 0.0)
    assert knn_radii(repeated, k=4)[0] == 1.0


def test_errors():
    x = np.zeros((10, 4))
    with pytest.raises(ValueError, match=r"real features must be 2-D"):
        precision_recall(np.zeros(10), x)
    with pytest.raises(ValueError, match=r"differ in dimension: 4 vs 5"):
        precision_recall(x, np.zeros((10, 5)))
    with pytest.raises(ValueError, match=r"fake features need at least k \+ 1 = 4 samples, got 3"):
        precision_recall(x, np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"k must be a positive integer"):
        precision_recall(x, x, k=0)
    with pytest.raises(ValueError, match=r"batch_size must be a positive integer"):
        knn_radii(x, batch_size=0)


def write_reference(path, features, **extra):
    np.savez(path, mu=features.mean(axis=0), sigma=np.cov(features, rowvar=False), **extra)


def test_reference_batch_gives_the_direct_frechet_distance(tmp_path):
    rng = np.random.default_rng(13)
    real, fake = rng.normal(size=(120, 8)), rng.normal(size=(90, 8)) @ rng.normal(size=(8, 8)) * 0.5 + 0.2
    images = rng.integers(0, 256, size=(5, 4, 4, 3), dtype=np.uint8)
    write_reference(tmp_path / "ref.npz", real, arr_0=images, mu_s=np.zeros(3), sigma_s=np.eye(3))
    reference = load_reference_batch(tmp_path / "ref.npz")
    np.testing.assert_array_equal(reference.images, images)
    stats = RunningStatistics(8)
    stats.update(fake)
    mu1, mu2, c1, c2 = real.mean(axis=0), fake.mean(axis=0), np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    direct = np.sum((mu1 - mu2) ** 2) + np.trace(c1 + c2 - 2 * np.real(scipy.linalg.sqrtm(c1 @ c2)))
    assert fid_from_statistics(stats, reference.statistics) == pytest.approx(direct, rel=1e-6)
    assert fid_from_statistics(reference.statistics, stats) == pytest.approx(direct, rel=1e-6)
    assert load_reference_batch(tmp_path / "ref.npz", load_images=False).images is None
    write_reference(tmp_path / "no_images.npz", real)
    assert load_reference_batch(tmp_path / "no_images.npz").images is None


@pytest.mark.parametrize("arrays, message", [
    ({"sigma": np.eye(8)}, r"bad\.npz lacks mu"),
    ({"mu": np.zeros((1, 8)), "sigma": np.eye(8)}, r"mu must be 1-D, got shape \[1, 8\]"),
    ({"mu": np.zeros(8), "sigma": np.zeros((8, 7))}, r"sigma must be \[8, 8\] to match mu, got \[8, 7\]"),
    ({"mu": np.zeros(8), "sigma": np.eye(6)}, r"sigma must be \[8, 8\] to match mu, got \[6, 6\]"),
    ({"mu": np.zeros(8), "sigma": np.eye(8), "arr_0": np.zeros((2, 4, 4))}, r"arr_0 must be images"),
])
def test_reference_batch_errors(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        load_reference_batch(tmp_path / "bad.npz")

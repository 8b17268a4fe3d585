"""FID, IS and KID against closed forms and a scipy reference; streaming equals batch statistics."""

import numpy as np
import pytest
import scipy.linalg

from hit.eval.fid import (RunningInceptionScore, RunningStatistics, fid_from_statistics, frechet_distance,
                          kernel_inception_distance)


def stats_of(features, batch=37):
    stats = RunningStatistics(features.shape[1])
    for start in range(0, len(features), batch):
        stats.update(features[start:start + batch])
    return stats


def test_streaming_statistics_equal_batch_statistics():
    x = np.random.default_rng(0).normal(size=(500, 16)) * np.arange(1, 17) + 3.0
    stats = stats_of(x)
    np.testing.assert_allclose(stats.mean(), x.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(stats.covariance(), np.cov(x, rowvar=False, ddof=1), rtol=1e-8, atol=1e-10)


def test_closed_form_for_gaussians_with_diagonal_covariances():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.array([1.0, 2.0, 0.5]), np.array([2.0, 1.0, 0.5])  # standard deviations
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((s1 - s2) ** 2)
    assert frechet_distance(mu1, np.diag(s1**2), mu2, np.diag(s2**2)) == pytest.approx(expected, rel=1e-10)
    # Samples from those Gaussians converge to the same value.
    rng = np.random.default_rng(1)
    a, b = rng.normal(mu1, s1, size=(200_000, 3)), rng.normal(mu2, s2, size=(200_000, 3))
    assert fid_from_statistics(stats_of(a, 10_000), stats_of(b, 10_000)) == pytest.approx(expected, rel=0.01)


def test_fid_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(2).normal(size=(300, 64))
    assert abs(fid_from_statistics(stats_of(x), stats_of(x))) < 1e-8


def test_matches_scipy_sqrtm_on_random_features():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(400, 32)), rng.normal(size=(300, 32)) @ rng.normal(size=(32, 32)) * 0.3 + 0.5
    sa, sb = stats_of(a), stats_of(b)
    c1, c2 = sa.covariance(), sb.covariance()
    reference = np.sum((sa.mean() - sb.mean()) ** 2) + np.trace(c1 + c2 - 2 * np.real(scipy.linalg.sqrtm(c1 @ c2)))
    assert fid_from_statistics(sa, sb) == pytest.approx(reference, rel=1e-6)


def test_statistics_save_and_load(tmp_path):
    stats = stats_of(np.random.default_rng(4).normal(size=(50, 8)))
    stats.save(tmp_path / "real.npz")
    loaded = RunningStatistics.load(tmp_path / "real.npz")
    np.testing.assert_array_equal(loaded.covariance(), stats.covariance())
    with pytest.raises(ValueError, match=r"expected features of shape \[batch, 8\]"):
        stats.update(np.zeros((2, 7)))


def test_inception_score_on_constructed_logits():
    uniform = RunningInceptionScore(split_size=100)
    uniform.update(np.zeros((200, 10)))
    assert uniform.result()[0] == pytest.approx(1.0)
    confident = RunningInceptionScore(split_size=100)
    confident.update(np.eye(10)[np.arange(200) % 10] * 100.0)  # one-hot, the 10 classes equally often
    assert confident.result()[0] == pytest.approx(10.0, rel=1e-6)
    one_class = RunningInceptionScore(split_size=100)
    one_class.update(np.tile(np.eye(10)[3] * 100.0, (100, 1)))
    assert one_class.result()[0] == pytest.approx(1.0, rel=1e-6)  # confident but no diversity


def test_inception_score_splits_follow_arrival_order():
    scores = RunningInceptionScore(split_size=50)
    scores.update(np.zeros((30, 4)))  # batches straddle split boundaries
    scores.update(np.eye(4)[np.arange(70) % 4] * 100.0)
    assert [s[0] for s in scores.splits] == [50, 50]
    mean, std = scores.result()
    assert std > 0 and 1.0 < mean < 4.0


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(5)
    same = kernel_inception_distance(rng.normal(size=(400, 16)), rng.normal(size=(400, 16)), 20, 200)
    different = kernel_inception_distance(rng.normal(size=(400, 16)), rng.normal(0.5, 1, size=(400, 16)), 20, 200)
    assert abs(same[0]) < 0.05 and different[0] > 0.2

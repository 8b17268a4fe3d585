"""The demo's classifier: builds deterministically, trains briefly, saves and loads, and separates real from noise."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from hit.data import fashion_mnist
from hit.eval.classifier_distance import (DemoClassifier, build_demo_classifier, to_classifier_inputs,
                                          train_demo_classifier)
from hit.eval.fid import RunningStatistics, frechet_distance

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
debian = pytest.mark.skipif(not os.path.isdir(fashion_mnist.DEBIAN_DIR),
                            reason="Debian package dataset-fashion-mnist is not installed (CI installs it)")


@pytest.fixture(scope="module")
def trained():
    """A classifier after 80 steps of batch 64 (about 0.75 test accuracy) and its reported accuracy."""
    return train_demo_classifier(80, batch_size=64, seed=3)


def run_tool(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "tools/train_demo_classifier.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def statistics(features):
    stats = RunningStatistics(features.shape[1])
    stats.update(features)
    return stats.mean(), stats.covariance()


def test_build_is_seeded_and_maps_images_to_logits_and_features():
    weights = []
    for _ in range(2):
        keras.utils.set_random_seed(7)
        weights.append(build_demo_classifier(channels=1).get_weights())
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)
    classifier = DemoClassifier(channels=3)
    features, logits = classifier.features_and_logits(np.zeros([2, 32, 32, 3], np.float32))
    assert features.shape == (2, 128) and logits.shape == (2, 10) and features.dtype == "float32"
    gray = np.random.default_rng(0).uniform(-1, 1, [2, 32, 32, 1]).astype(np.float32)
    np.testing.assert_array_equal(classifier.features_and_logits(gray)[1],
                                  classifier.features_and_logits(np.tile(gray, [1, 1, 1, 3]))[1])
    with pytest.raises(ValueError, match=r"takes \[batch, 32, 32, 1 or 3\] images, got shape \(2, 28, 28, 1\)"):
        classifier.features_and_logits(np.zeros([2, 28, 28, 1]))
    with pytest.raises(ValueError, match="takes 1 or 3 channels"):
        build_demo_classifier(channels=2)


@pytest.mark.slow
@debian
def test_brief_training_reports_accuracy_and_save_load_round_trips(trained, tmp_path):
    classifier, accuracy = trained
    assert isinstance(accuracy, float) and 0.5 < accuracy <= 1.0  # 10 classes: chance is 0.1
    path = str(tmp_path / "sub" / "classifier.weights.h5")
    classifier.save(path)
    loaded = DemoClassifier.load(path)
    assert (loaded.channels, loaded.resolution, loaded.info["steps"]) == (3, 32, 80)
    assert loaded.info["test_accuracy"] == accuracy
    images = np.random.default_rng(1).uniform(-1, 1, [5, 32, 32, 3]).astype(np.float32)
    for a, b in zip(classifier.features_and_logits(images), loaded.features_and_logits(images)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.slow
@debian
def test_classifier_distance_is_small_between_real_halves_and_large_to_noise(trained):
    classifier, _ = trained
    images, _ = fashion_mnist.load_arrays("test")
    real = to_classifier_inputs(images[:2000], channels=3)
    noise = np.random.default_rng(2).uniform(-1, 1, [1000, 32, 32, 3]).astype(np.float32)
    first = statistics(classifier.features_and_logits(real[:1000])[0].numpy())
    second = statistics(classifier.features_and_logits(real[1000:])[0].numpy())
    noisy = statistics(classifier.features_and_logits(noise)[0].numpy())
    real_vs_real, real_vs_noise = frechet_distance(*first, *second), frechet_distance(*first, *noisy)
    assert 0 <= real_vs_real * 5 < real_vs_noise, (real_vs_real, real_vs_noise)


def test_missing_weights_are_a_one_line_error_saying_how_to_make_them(tmp_path):
    path = str(tmp_path / "absent.weights.h5")
    with pytest.raises(ValueError, match=r"absent\.weights\.h5 not found; create them with "
                                         r"`python tools/train_demo_classifier\.py --output=") as info:
        DemoClassifier.load(path)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"must be saved to a \*\.weights\.h5 file"):
        DemoClassifier(channels=1).save(str(tmp_path / "classifier.h5"))


@pytest.mark.slow
@debian
def test_tool_trains_saves_and_prints_one_json_line(tmp_path):
    output = tmp_path / "classifier.weights.h5"
    result = run_tool(f"--output={output}", "--steps=2", "--batch_size=8", "--channels=1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    report = json.loads(lines[0])
    assert report["output"] == str(output) and report["steps"] == 2 and 0 <= report["test_accuracy"] <= 1
    assert DemoClassifier.load(str(output)).channels == 1


@pytest.mark.slow
def test_tool_rejects_an_output_that_keras_cannot_write():
    result = run_tool("--output=classifier.h5")
    assert result.returncode != 0 and result.stdout == ""
    assert result.stderr.strip().splitlines()[-1] == "error: --output must end in .weights.h5, got classifier.h5"

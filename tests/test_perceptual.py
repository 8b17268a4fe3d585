"""The VGG perceptual distance of VQ-HiT's loss (hit.gan.perceptual), with random VGG weights (nothing is
downloaded)."""

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from hit.gan import perceptual


@pytest.fixture(scope="module")
def features():
    keras.utils.set_random_seed(7)
    return perceptual.VGGFeatures()


def images(batch, size=32, seed=0):
    return tf.random.stateless_uniform([batch, size, size, 3], [seed, 1], -1.0, 1.0)


def write_legacy_h5(model, path, layers=None):
    """A weights file in the legacy Keras format of the ImageNet file (layer groups loaded in order)."""
    layers = [layer for layer in model.layers if layer.weights][:layers]
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [layer.name.encode() for layer in layers]
        for layer in layers:
            names = [f"{layer.name}/{i}".encode() for i in range(len(layer.weights))]
            group = f.create_group(layer.name)
            group.attrs["weight_names"] = names
            for name, weight in zip(names, layer.weights):
                group.create_dataset(name.decode(), data=weight.numpy())


def test_preprocessing_equals_keras_caffe_mode():
    x = images(2, seed=3)
    expected = keras.applications.vgg16.preprocess_input((x.numpy() + 1.0) * 127.5)
    np.testing.assert_allclose(perceptual.to_vgg_input(x).numpy(), expected, rtol=1e-6, atol=1e-4)
    red = perceptual.to_vgg_input(tf.constant([[[[1.0, -1.0, -1.0]]]])).numpy().ravel()
    np.testing.assert_allclose(red, [-103.939, -116.779, 255.0 - 123.68], rtol=1e-6)  # BGR order


def test_features_come_from_the_five_lpips_layers(features):
    assert features.layers == perceptual.LPIPS_LAYERS == ("block1_conv2", "block2_conv2", "block3_conv3",
                                                          "block4_conv3", "block5_conv3")
    assert [t.name for t in features.model.outputs] == [features.model.get_layer(n).output.name
                                                        for n in perceptual.LPIPS_LAYERS]
    maps = features(images(1, size=64))
    assert [tuple(m.shape) for m in maps] == [(1, 64, 64, 64), (1, 32, 32, 128), (1, 16, 16, 256), (1, 8, 8, 512),
                                              (1, 4, 4, 512)]
    assert all(float(tf.reduce_min(m)) >= 0 for m in maps)  # after the ReLU
    assert [tuple(m.shape[1:3]) for m in features(images(1, size=48))] == [(48, 48), (24, 24), (12, 12), (6, 6),
                                                                          (3, 3)]


def test_distance_matches_a_numpy_reference(features):
    x, y = images(3, seed=1), images(3, seed=2)
    fx, fy = features(x), features(y)
    expected = np.zeros(3)
    for a, b in zip(fx, fy):
        a, b = a.numpy().astype(np.float64), b.numpy().astype(np.float64)
        a = a / np.sqrt((a ** 2).sum(-1, keepdims=True))
        b = b / np.sqrt((b ** 2).sum(-1, keepdims=True))
        expected += ((a - b) ** 2).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(perceptual.perceptual_distance(features, x, y).numpy(), expected, rtol=1e-4)


def test_distance_is_zero_for_identical_symmetric_and_positive_otherwise(features):
    x, y = images(2, seed=4), images(2, seed=5)
    np.testing.assert_allclose(perceptual.perceptual_distance(features, x, x).numpy(), 0.0, atol=1e-6)
    d_xy = perceptual.perceptual_distance(features, x, y).numpy()
    np.testing.assert_allclose(perceptual.perceptual_distance(features, y, x).numpy(), d_xy, rtol=1e-5)
    assert d_xy.shape == (2,) and np.all(d_xy > 0)
    near = perceptual.perceptual_distance(features, x, tf.clip_by_value(x + 0.02, -1.0, 1.0)).numpy()
    assert np.all(near < d_xy / 10)


def test_normalize_channels_gives_unit_vectors_and_finite_gradients_at_zero():
    feature = tf.constant([[[[3.0, 4.0, 0.0], [0.0, 0.0, 0.0]]]])
    np.testing.assert_allclose(perceptual.normalize_channels(feature).numpy(), [[[[0.6, 0.8, 0.0], [0, 0, 0]]]],
                               rtol=1e-6)

    @tf.function(jit_compile=True)
    def gradient(f):
        with tf.GradientTape() as tape:
            tape.watch(f)
            loss = tf.reduce_sum(tf.square(perceptual.normalize_channels(f) - 0.5))
        return tape.gradient(loss, f)

    assert np.all(np.isfinite(gradient(feature).numpy()))


def test_gradients_reach_the_inputs_and_the_vgg_is_frozen(features):
    x, y = images(2, seed=6), images(2, seed=7)
    with tf.GradientTape() as tape:
        tape.watch(y)
        loss = tf.reduce_mean(perceptual.perceptual_distance(features, x, y))
    gradient = tape.gradient(loss, y).numpy()
    assert np.all(np.isfinite(gradient)) and np.abs(gradient).max() > 0
    assert features.model.trainable_variables == [] and len(features.model.non_trainable_variables) == 26
    assert tape.watched_variables() == ()


def test_jit_compiled_distance_equals_eager(features):
    x, y = images(2, seed=8), images(2, seed=9)
    compiled = tf.function(lambda a, b: perceptual.perceptual_distance(features, a, b), jit_compile=True)
    np.testing.assert_allclose(compiled(x, y).numpy(), perceptual.perceptual_distance(features, x, y).numpy(),
                               rtol=1e-5)


@pytest.mark.slow
def test_features_equal_keras_vgg16_and_their_gradient_compiles_under_op_determinism(features):
    """The reshape-and-max pools give Keras' VGG16 outputs; unlike MaxPoolGrad, their gradient has an XLA kernel
    with op determinism on (tests/conftest.py turns it on, as --deterministic does)."""
    x, y = images(2, size=64, seed=10), images(2, size=64, seed=11)
    for ours, keras_vgg in zip(features(x), features.model(perceptual.to_vgg_input(x))):
        np.testing.assert_allclose(ours.numpy(), keras_vgg.numpy(), rtol=1e-5, atol=1e-5)

    def gradient(a, b):
        with tf.GradientTape() as tape:
            tape.watch(b)
            loss = tf.reduce_sum(perceptual.perceptual_distance(features, a, b))
        return tape.gradient(loss, b)

    compiled = tf.function(gradient, jit_compile=True)(x, y).numpy()
    assert np.all(np.isfinite(compiled)) and np.abs(compiled).max() > 0
    eager = gradient(x, y).numpy()  # equal up to rounding (a few of 24576 elements differ at a ReLU boundary)
    assert np.linalg.norm(compiled - eager) < 1e-3 * np.linalg.norm(eager)


def test_weights_file_is_loaded(features, tmp_path):
    path = str(tmp_path / perceptual.WEIGHTS_FILE)
    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 3))
    write_legacy_h5(base, path)
    loaded = perceptual.VGGFeatures(path)
    for a, b in zip(loaded.model.weights, base.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(loaded.model.weights[0].numpy(), features.model.weights[0].numpy())


def test_missing_or_wrong_weights_give_one_line_errors(tmp_path):
    missing = str(tmp_path / "nowhere" / perceptual.WEIGHTS_FILE)
    with pytest.raises(ValueError, match="not found at .*nowhere.*~/.keras/models") as error:
        perceptual.VGGFeatures(missing)
    assert "\n" not in str(error.value)
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not an hdf5 file")
    truncated = str(tmp_path / "truncated.h5")
    write_legacy_h5(keras.applications.VGG16(include_top=False, weights=None), truncated, layers=3)
    for path in (str(garbage), truncated):
        with pytest.raises(ValueError, match="is not Keras's VGG16") as error:
            perceptual.VGGFeatures(path)
        assert "\n" not in str(error.value) and path in str(error.value)

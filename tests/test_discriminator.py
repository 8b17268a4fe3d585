"""The StyleGAN2-like discriminator: exact parameter counts, blur pooling, residual blocks, options, errors."""

import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from hit.models.presets import DISCRIMINATOR_PRESETS, get_discriminator
from hit.models.stylegan_discriminator import StyleGANDiscriminator
from hit.models.stylegan_discriminator import BlurPool2D, MinibatchStddev, lrelu


def n_params(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


# Trainable parameters of the official discriminator (preset, overrides) -> count.
EXPECTED_COUNTS = {
    ("stylegan_d_128", None): 23_880_833,
    ("stylegan_d_256", None): 28_862_593,
    ("stylegan_d_1024", None): 29_008_673,
    ("stylegan_d_256", 1): 23_998_017,
    ("stylegan_d_1024", 1): 24_033_937,
}


@pytest.mark.parametrize("preset,multiplier", sorted(EXPECTED_COUNTS, key=str))
def test_exact_parameter_counts(preset, multiplier):
    keras.backend.clear_session()
    overrides = {} if multiplier is None else {"channel_multiplier": multiplier}
    discriminator = get_discriminator(preset, **overrides)
    assert n_params(discriminator.trainable_variables) == EXPECTED_COUNTS[preset, multiplier]
    assert not discriminator.non_trainable_variables  # the blur filter is a constant, not a variable


def test_every_paper_preset_has_an_expected_count():
    assert set(DISCRIMINATOR_PRESETS) - {"stylegan_d_tiny_32", "stylegan_d_demo_32"} == {p for p, _ in EXPECTED_COUNTS}


def test_layout_of_the_128_model():
    discriminator = get_discriminator("stylegan_d_128")
    assert discriminator.from_rgb.kernel.shape == (3, 3, 3, 128)
    assert [(b.name, b.in_channels, b.out_channels) for b in discriminator.blocks] == [
        ("block_128", 128, 256), ("block_64", 256, 512), ("block_32", 512, 512), ("block_16", 512, 512),
        ("block_8", 512, 512),
    ]
    head = discriminator.head
    assert head.conv.kernel.shape == (3, 3, 512, 512)
    assert head.dense_0.kernel.shape == (4 * 4 * 512, 512) and head.dense_1.kernel.shape == (512, 1)
    assert all(b.skip.bias is None for b in discriminator.blocks)  # the 1x1 skip conv has no bias


def test_plain_glorot_uniform_init_with_zero_biases():
    discriminator = get_discriminator("stylegan_d_tiny_32")
    for v in discriminator.trainable_variables:
        w = v.numpy()
        if v.path.endswith("bias"):
            assert not w.any(), v.path
        else:  # no equalized learning rate: the kernels are stored at their glorot_uniform scale
            receptive = int(np.prod(w.shape[:-2])) if w.ndim == 4 else 1
            limit = math.sqrt(6.0 / (receptive * (w.shape[-2] + w.shape[-1])))
            assert np.abs(w).max() <= limit + 1e-7 and np.abs(w).max() > 0.5 * limit, v.path


# ---- blur pooling and residual blocks --------------------------------------------------------------


def _blur_pool_reference(x):
    """Zero padding of 1, then a 4x4 [1,3,3,1] x [1,3,3,1] / 64 weighted sum at stride 2, one pixel at a time."""
    taps = np.array([1.0, 3.0, 3.0, 1.0])
    kernel = np.outer(taps, taps) / 64.0
    padded = np.pad(x.astype(np.float64), [(0, 0), (1, 1), (1, 1), (0, 0)])
    batch, height, width, channels = x.shape
    out = np.zeros([batch, height // 2, width // 2, channels])
    for b in range(batch):
        for i in range(height // 2):
            for j in range(width // 2):
                for c in range(channels):
                    out[b, i, j, c] = (padded[b, 2 * i:2 * i + 4, 2 * j:2 * j + 4, c] * kernel).sum()
    return out


def test_blur_pool_matches_a_slow_reference():
    x = np.random.default_rng(0).normal(size=[2, 8, 8, 3]).astype(np.float32)
    layer = BlurPool2D()
    np.testing.assert_allclose(layer(x).numpy(), _blur_pool_reference(x), atol=1e-5)
    assert not layer.weights


def test_blur_pool_keeps_a_constant_image_constant_inside():
    out = BlurPool2D()(tf.fill([1, 8, 8, 2], 3.0)).numpy()
    assert out.shape == (1, 4, 4, 2)
    np.testing.assert_allclose(out[:, 1:3, 1:3], 3.0, atol=1e-6)  # the filter sums to 1
    # Border outputs see one zero-padded row (and column): 1/8 of the filter's weight per padded side.
    np.testing.assert_allclose(out[:, 0, 1:3], 3.0 * 7 / 8, atol=1e-6)
    np.testing.assert_allclose(out[:, 0, 0], 3.0 * (7 / 8) ** 2, atol=1e-6)


def test_residual_block_averages_main_and_skip_paths():
    discriminator = get_discriminator("stylegan_d_tiny_32")
    block = discriminator.blocks[0]
    x = tf.random.normal([2, 32, 32, 32])
    main = lrelu(block.conv_1(block.down(lrelu(block.conv_0(x)))))
    skip = block.skip(block.down(x))
    out = block(x).numpy()
    assert out.shape == (2, 16, 16, 64)
    np.testing.assert_allclose(out, ((main + skip) / math.sqrt(2.0)).numpy(), atol=1e-5)
    assert isinstance(block.down, BlurPool2D)


# ---- forward passes and options --------------------------------------------------------------------


def test_tiny_preset_forward():
    discriminator = get_discriminator("stylegan_d_tiny_32")
    images = tf.random.uniform([4, 32, 32, 3], -1.0, 1.0)
    logits = discriminator(images, training=True)
    assert logits.shape == (4,) and logits.dtype == tf.float32
    assert np.isfinite(logits.numpy()).all()
    # No batch-dependent layers: training changes nothing and every sample is scored on its own.
    np.testing.assert_allclose(discriminator(images, training=False).numpy(), logits.numpy(), atol=1e-6)
    np.testing.assert_allclose(discriminator(images[:1]).numpy(), logits.numpy()[:1], atol=1e-5)


def test_no_output_activation():
    discriminator = get_discriminator("stylegan_d_tiny_32")
    last = discriminator.head.dense_1
    last.bias.assign([-7.0])
    last.kernel.assign(tf.zeros_like(last.kernel))
    np.testing.assert_allclose(discriminator(tf.zeros([2, 32, 32, 3])).numpy(), -7.0)  # a raw logit


def test_128_forward_at_batch_one():
    keras.backend.clear_session()
    discriminator = get_discriminator("stylegan_d_128")
    logits = discriminator(tf.random.uniform([1, 128, 128, 3], -1.0, 1.0), training=False)
    assert logits.shape == (1,) and np.isfinite(logits.numpy()).all()


def test_minibatch_stddev_adds_one_input_channel_to_the_head_conv():
    keras.backend.clear_session()
    base = n_params(get_discriminator("stylegan_d_128").trainable_variables)
    with_stddev = get_discriminator("stylegan_d_128", minibatch_stddev_group=4)
    assert n_params(with_stddev.trainable_variables) - base == 512 * 3 * 3
    assert with_stddev.head.conv.kernel.shape == (3, 3, 513, 512)


def test_minibatch_stddev_runs_and_couples_the_batch():
    discriminator = get_discriminator("stylegan_d_tiny_32", minibatch_stddev_group=2)
    images = tf.random.uniform([4, 32, 32, 3], -1.0, 1.0)
    logits = discriminator(images, training=True)
    assert logits.shape == (4,) and np.isfinite(logits.numpy()).all()
    # Sample 0 shares its group with sample 2 (StyleGAN grouping), so changing sample 2 changes its score.
    changed = tf.tensor_scatter_nd_update(images, [[2]], -images[2:3])
    assert abs(discriminator(changed).numpy()[0] - logits.numpy()[0]) > 1e-6
    assert discriminator(images[:1]).shape == (1,)  # the group shrinks to the batch


def test_minibatch_stddev_matches_numpy():
    x = np.random.default_rng(1).normal(size=[4, 2, 2, 3]).astype(np.float32)
    out = MinibatchStddev(2)(x).numpy()
    np.testing.assert_array_equal(out[..., :3], x)
    for i in range(4):
        group = x[[i % 2, i % 2 + 2]].astype(np.float64)  # [group, batch / group, ...]: i mod 2 picks the group
        expected = np.sqrt(group.var(axis=0) + 1e-8).mean()
        np.testing.assert_allclose(out[i, ..., 3], expected, rtol=1e-5)


def test_average_pool_resampling():
    reference = n_params(get_discriminator("stylegan_d_tiny_32").trainable_variables)
    discriminator = get_discriminator("stylegan_d_tiny_32", blur_resample=False)
    assert n_params(discriminator.trainable_variables) == reference
    assert isinstance(discriminator.blocks[0].down, keras.layers.AveragePooling2D)
    assert discriminator(tf.random.uniform([2, 32, 32, 3], -1.0, 1.0)).shape == (2,)


def test_stable_variable_paths():
    paths = [v.path for v in get_discriminator("stylegan_d_tiny_32").variables]
    assert paths[:2] == ["stylegan_discriminator/from_rgb/kernel", "stylegan_discriminator/from_rgb/bias"]
    assert "stylegan_discriminator/block_32/skip/kernel" in paths
    assert paths[-2:] == ["stylegan_discriminator/head/dense_1/kernel", "stylegan_discriminator/head/dense_1/bias"]


def test_config_round_trip_through_json():
    discriminator = get_discriminator("stylegan_d_tiny_32", minibatch_stddev_group=2)
    config = json.loads(json.dumps(discriminator.get_config()))  # the channel table's keys become strings
    clone = StyleGANDiscriminator.from_config(config).build_symbolic()
    assert [(v.path, v.shape) for v in clone.variables] == [(v.path, v.shape) for v in discriminator.variables]


# ---- one-line errors -------------------------------------------------------------------------------


def _one_line_error(fn, pattern):
    with pytest.raises(ValueError, match=pattern) as info:
        fn()
    assert "\n" not in str(info.value)


def test_one_line_errors():
    _one_line_error(lambda: get_discriminator("stylegan_d_512"),
                    r"unknown discriminator preset 'stylegan_d_512'; known: ")
    _one_line_error(lambda: get_discriminator("stylegan_d_tiny_32", width=3),
                    r"unknown discriminator option\(s\) \['width'\]")
    _one_line_error(lambda: get_discriminator("stylegan_d_128", resolution=96), r"bad resolution: 96")
    _one_line_error(lambda: get_discriminator("stylegan_d_128", resolution=4), r"bad resolution: 4")
    _one_line_error(lambda: get_discriminator("stylegan_d_1024", resolution=2048), r"bad resolution: 2048")
    _one_line_error(lambda: get_discriminator("stylegan_d_tiny_32", resolution=64), r"bad resolution: 64")
    _one_line_error(lambda: get_discriminator("stylegan_d_tiny_32", channels={4: 8, 16: 8, 32: 8}),
                    r"no width for resolution\(s\) \[8\]")
    _one_line_error(lambda: get_discriminator("stylegan_d_tiny_32", minibatch_stddev_group=-1),
                    r"minibatch_stddev_group must be an integer >= 0")
    discriminator = get_discriminator("stylegan_d_tiny_32")
    _one_line_error(lambda: discriminator(tf.zeros([1, 64, 64, 3])),
                    r"expects images of shape \[batch, 32, 32, 3\], got \[1, 64, 64, 3\]")
    _one_line_error(lambda: discriminator(tf.zeros([32, 32, 3])), r"got \[32, 32, 3\]")
    grouped = get_discriminator("stylegan_d_tiny_32", minibatch_stddev_group=4)
    _one_line_error(lambda: grouped(tf.zeros([6, 32, 32, 3])), r"minibatch_stddev_group 4 must divide the batch 6")


def test_lrelu_equals_the_leaky_relu_op_in_value_gradient_and_second_order_gradient():
    """lrelu avoids the LeakyRelu op (a grappler fusion of it fails with a logged error) but must be the same
    function for training: values, input gradients (slope 0.2 at exactly 0, as LeakyReluGrad) and the
    gradient of a squared input gradient (R1) with respect to weights."""
    x = tf.constant([[-2.0, -0.5, 0.0, 0.3, 4.0]])
    w = tf.Variable([[1.5, -1.0, 2.0, 0.5, -3.0]])

    def r1_and_grads(activation):
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                inner.watch(x)
                out = tf.reduce_sum(activation(x * w) * w)
            dx = inner.gradient(out, x)
            r1 = tf.reduce_sum(dx**2)
        return activation(x * w), dx, outer.gradient(r1, w)

    ours = r1_and_grads(lrelu)
    reference = r1_and_grads(lambda t: tf.nn.leaky_relu(t, alpha=0.2))
    for a, b in zip(ours, reference):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    _, dx, _ = r1_and_grads(lrelu)
    assert dx.numpy()[0, 2] == pytest.approx(0.2 * 2.0 * 2.0)  # at x*w == 0 the slope is 0.2, not 1

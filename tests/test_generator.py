"""The HiT generator: exact parameter counts, shapes, training modes, init, ablation switches, errors."""

import math
import zlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from hit.layers.mlp import MLP
from hit.layers.upsampling import SkipToRGB
from hit.models.hit_generator import HiTGenerator
from hit.models.presets import GENERATOR_PRESETS, get_generator


def n_params(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


# (trainable, non-trainable BN statistics or None where no source states it). Sources: hit-gan's models, built
# and counted (docs/fidelity.md, HiT), and issue 2.
EXPECTED_COUNTS = {
    "hit_imagenet_128": (32_866_627, 19_200),
    "hit_b_256": (46_217_670, 18_944),  # paper Table 4: 46.22M
    "hit_b_1024": (88_216_300, 19_456),
    "hit_l_256": (97_462_214, None),  # paper Table 4: 97.46M
    "hit_s_256": (34_727_078, None),  # Table 9 as written; Table 4 says 38.01M (see presets.py)
}


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(EXPECTED_COUNTS))
def test_exact_parameter_counts(preset):
    keras.backend.clear_session()
    generator = get_generator(preset)
    trainable, non_trainable = EXPECTED_COUNTS[preset]
    assert n_params(generator.trainable_variables) == trainable
    if non_trainable is not None:
        assert n_params(generator.non_trainable_variables) == non_trainable


def test_every_paper_preset_has_an_expected_count():
    assert set(GENERATOR_PRESETS) - {"hit_tiny_32", "hit_demo_32"} == set(EXPECTED_COUNTS)  # not paper models


@pytest.mark.slow
def test_hit_l_latent_tokens_are_as_wide_as_stage_one():
    generator = get_generator("hit_l_256")
    for stage in generator.stages:
        assert stage.cross_block.attention.key.kernel.shape[0] == 1024


@pytest.mark.slow
@pytest.mark.parametrize("preset,size", [("hit_imagenet_128", 128), ("hit_b_256", 256)])
def test_full_size_forward_at_batch_one(preset, size):
    keras.backend.clear_session()
    generator = get_generator(preset)
    images = generator(tf.random.normal([1, generator.latent_dim]), training=False)
    assert images.shape == (1, size, size, 3) and images.dtype == tf.float32
    assert np.isfinite(images.numpy()).all()


@pytest.mark.slow
def test_stage_shapes_of_the_256_model():
    shapes = get_generator("hit_b_256").stage_shapes()
    assert [s["features"] for s in shapes] == [
        [1, 16, 16, 512], [1, 32, 32, 256], [1, 64, 64, 128], [1, 128, 128, 64], [1, 256, 256, 64],
        [1, 256, 256, 64],
    ]
    # Skip-to-RGB in the two high-resolution stages only (hit-gan models/generators.py `HiTGenerator`).
    assert [s["image"] for s in shapes] == [None] * 4 + [[1, 128, 128, 3], [1, 256, 256, 3]]


def _moving_means(generator):
    return [v.numpy().copy() for v in generator.non_trainable_variables if "moving_mean" in v.path]


@pytest.mark.slow
def test_small_preset_forward_in_both_modes():
    generator = get_generator("hit_tiny_32")
    z = tf.random.normal([4, 32])
    before = _moving_means(generator)
    inference = generator(z, training=False)
    after_inference = _moving_means(generator)
    train = generator(z, training=True)
    after_training = _moving_means(generator)
    assert inference.shape == train.shape == (4, 32, 32, 3)
    assert np.isfinite(inference.numpy()).all() and np.isfinite(train.numpy()).all()
    # training=False uses and keeps the moving statistics; training=True normalises with batch statistics
    # and updates them, so the two outputs differ.
    assert all(np.array_equal(a, b) for a, b in zip(before, after_inference))
    assert any(not np.array_equal(a, b) for a, b in zip(before, after_training))
    assert np.abs(train.numpy() - inference.numpy()).max() > 1e-4
    np.testing.assert_array_equal(generator(z, training=False).numpy(), generator(z, training=False).numpy())


@pytest.mark.slow
def test_batch_statistics_make_samples_depend_on_the_batch():
    # BatchNorm in training mode normalises over (batch, tokens): a sample's output depends on its batch
    # mates; in inference it does not (docs/fidelity.md, HiT: BatchNorm).
    generator = get_generator("hit_tiny_32")
    z = tf.random.normal([4, 32])
    alone = generator(z[:2], training=False).numpy()
    together = generator(z, training=False).numpy()[:2]
    np.testing.assert_allclose(alone, together, atol=1e-5)
    assert np.abs(generator(z[:2], training=True).numpy() - generator(z, training=True).numpy()[:2]).max() > 1e-5


def test_initialisation_is_truncated_normal_002_with_zero_biases():
    generator = get_generator("hit_tiny_32")
    weights = [v.numpy() for v in generator.trainable_variables
               if v.path.endswith(("kernel", "embedding"))]
    pooled = np.concatenate([w.ravel() for w in weights])
    assert np.abs(pooled).max() <= 0.04 + 1e-6  # cut at 2 sigma
    assert 0.0170 < pooled.std() < 0.0182  # 0.02 * 0.8796 for a normal truncated at 2 sigma
    for v in generator.trainable_variables:
        if v.path.endswith(("bias", "beta")):
            assert not v.numpy().any(), v.path
        if v.path.endswith("gamma"):
            assert (v.numpy() == 1).all(), v.path


def test_mlp_uses_exact_gelu():
    layer = MLP(4)
    x = tf.random.normal([3, 4])
    y = layer(x).numpy()
    w1, b1, w2, b2 = (w.numpy().astype(np.float64) for w in layer.weights)
    hidden = x.numpy().astype(np.float64) @ w1 + b1
    gelu = 0.5 * hidden * (1 + np.vectorize(math.erf)(hidden / math.sqrt(2)))
    np.testing.assert_allclose(y, gelu @ w2 + b2, atol=1e-6)
    assert w1.shape == (4, 16)  # MLP ratio 4


def test_skip_to_rgb_adds_the_nearest_upsampled_previous_image():
    layer = SkipToRGB(3)
    x = tf.random.normal([2, 8, 8, 5])
    previous = tf.random.normal([2, 4, 4, 3])
    first = layer(x, training=False).numpy()
    summed = layer(x, previous, training=False).numpy()
    upsampled = np.kron(previous.numpy(), np.ones((1, 2, 2, 1)))
    np.testing.assert_allclose(summed - first, upsampled, atol=1e-6)


@pytest.mark.slow
def test_no_output_activation():
    generator = get_generator("hit_tiny_32")
    last = generator.stages[-1].to_rgb.dense
    last.bias.assign(tf.fill(last.bias.shape, 5.0))
    assert generator(tf.random.normal([2, 32]), training=False).numpy().min() > 4.0  # no tanh squashing


# ---- ablation switches (Tables 5, 6 and 8) -------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("attention_type", ["multi_axis", "axial", "blocked_local", "interleaved", "full"])
def test_attention_types_build_run_and_share_parameter_counts(attention_type):
    # The variants differ in which positions attend, not in weights (Table 5: 67.60M for all of them).
    # "interleaved" needs two layers per stage to alternate; use them for every variant.
    overrides = dict(num_layers=(2, 2, 1), num_heads=(4, 2, 2))
    reference = n_params(get_generator("hit_tiny_32", **overrides).trainable_variables)
    generator = get_generator("hit_tiny_32", attention_type=attention_type, **overrides)
    assert n_params(generator.trainable_variables) == reference
    assert generator(tf.random.normal([2, 32]), training=True).shape == (2, 32, 32, 3)


@pytest.mark.slow
def test_attention_types_compute_different_functions():
    overrides = dict(num_layers=(2, 2, 1))
    z = tf.random.normal([2, 32])
    outputs = {}
    base = get_generator("hit_tiny_32", **overrides)
    for kind in ["multi_axis", "axial", "blocked_local", "interleaved", "full"]:
        generator = get_generator("hit_tiny_32", attention_type=kind, **overrides)
        for a, b in zip(generator.variables, base.variables):
            a.assign(b)
        for v in generator.trainable_variables:  # move away from init so attention is not near-uniform
            v.assign(v + tf.random.stateless_normal(v.shape, [1, zlib.crc32(v.path.encode())]) * 0.3)
        outputs[kind] = generator(z, training=False).numpy()
    kinds = sorted(outputs)
    for i, a in enumerate(kinds):
        for b in kinds[i + 1:]:
            assert np.abs(outputs[a] - outputs[b]).max() > 1e-4, (a, b)


@pytest.mark.slow
def test_mha_adds_exactly_the_extra_key_and_value_heads():
    config = GENERATOR_PRESETS["hit_tiny_32"]
    mqa = n_params(get_generator("hit_tiny_32").trainable_variables)
    mha = n_params(get_generator("hit_tiny_32", multi_query=False).trainable_variables)
    token_channels = config["channels"][0]
    extra = 0
    for c, h, layers, block in zip(config["channels"], config["num_heads"], config["num_layers"],
                                   config["block_sizes"]):
        d = c // h
        extra += 2 * (h - 1) * (token_channels * d + d)  # cross-attention K and V
        if block is not None:
            extra += layers * 2 * (h - 1) * (c * d + d)  # self-attention K and V
    assert mha - mqa == extra


@pytest.mark.slow
def test_layer_norm_switch():
    generator = get_generator("hit_tiny_32", norm_type="layer")
    assert not generator.non_trainable_variables
    assert n_params(generator.trainable_variables) == n_params(get_generator("hit_tiny_32").trainable_variables)
    assert generator(tf.random.normal([2, 32]), training=True).shape == (2, 32, 32, 3)


def test_cross_attention_switch():
    generator = get_generator("hit_tiny_32", cross_attention=False)
    paths = [v.path for v in generator.variables]
    assert not any("cross_attention" in p or "latent_embedding" in p for p in paths)
    assert any("cross_block/mlp" in p for p in paths)  # the block keeps its MLP
    assert generator(tf.random.normal([2, 32]), training=True).shape == (2, 32, 32, 3)


@pytest.mark.parametrize("stages", [0, 1, 2])
def test_number_of_attention_stages(stages):
    generator = get_generator("hit_tiny_32", num_attention_stages=stages)
    with_attention = {p.split("/")[1] for p in (v.path for v in generator.variables) if "self_attention" in p}
    assert with_attention == {f"stage_{i}" for i in range(stages)}
    assert generator(tf.random.normal([2, 32]), training=False).shape == (2, 32, 32, 3)


@pytest.mark.slow
def test_config_round_trip():
    generator = get_generator("hit_tiny_32", multi_query=False)
    clone = HiTGenerator.from_config(generator.get_config()).build_symbolic()
    assert n_params(clone.trainable_variables) == n_params(generator.trainable_variables)
    assert [v.path.split("/", 1)[1] for v in clone.variables] == [v.path.split("/", 1)[1] for v in generator.variables]


# ---- one-line errors -------------------------------------------------------------------------------


def _one_line_error(fn, pattern):
    with pytest.raises(ValueError, match=pattern) as info:
        fn()
    assert "\n" not in str(info.value)


def test_one_line_errors():
    _one_line_error(lambda: get_generator("hit_xl_256"), r"unknown generator preset 'hit_xl_256'; known: ")
    _one_line_error(lambda: get_generator("hit_tiny_32", heads=3), r"unknown generator option\(s\) \['heads'\]")
    _one_line_error(lambda: get_generator("hit_b_256", output_size=512),
                    r"bad resolution: output_size 512 cannot come from 6 stages")
    _one_line_error(lambda: get_generator("hit_tiny_32", channels=(96, 48, 16), num_heads=(4, 3, 2)),
                    r"bad heads: multi_axis attention splits heads in 2, but stage 1 \(16x16, 48 channels\) has 3")
    _one_line_error(lambda: get_generator("hit_tiny_32", num_heads=(5, 2, 2)),
                    r"bad heads: 5 heads do not divide 64 channels in stage 0")
    _one_line_error(lambda: get_generator("hit_tiny_32", block_sizes=(3, 4, None)),
                    r"bad block size: 3 does not divide the 8x8 feature map of stage 0")
    _one_line_error(lambda: get_generator("hit_tiny_32", block_sizes=(4, 4, 4)), r"last stage must be")
    _one_line_error(lambda: get_generator("hit_tiny_32", attention_type="sparse"), r"unknown attention_type")
    _one_line_error(lambda: get_generator("hit_tiny_32", num_attention_stages=3),
                    r"num_attention_stages must be in \[0, 2\]")
    generator = get_generator("hit_tiny_32")
    _one_line_error(lambda: generator(tf.zeros([1, 31])), r"expects z of shape \[batch, 32\], got \[1, 31\]")
    _one_line_error(lambda: generator(tf.zeros([32])), r"expects z of shape \[batch, 32\], got \[32\]")


def test_odd_heads_are_fine_where_no_split_is_needed():
    generator = get_generator("hit_tiny_32", channels=(96, 48, 16), num_heads=(4, 3, 2),
                              attention_type="blocked_local")
    assert generator(tf.random.normal([1, 32]), training=False).shape == (1, 32, 32, 3)

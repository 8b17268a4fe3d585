"""The ConvNet-R1 baseline generator (SAGAN / BigGAN ResNet): parameter counts, shapes, attention init, errors,
mixed precision, XLA, gradients, config."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from hit.layers.normalization import GroupedBatchNormalization
from hit.models.convnet_generator import ConvNetGenerator, SelfAttention2D
from hit.models.presets import CONVNET_PRESETS, get_generator
from hit.train.precision import policy_scope


def n_params(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


def formula_counts(output_size, latent_dim, channels, attention_resolution=None, output_channels=3):
    """(trainable, BN statistics) by the architecture's formula, layer by layer."""
    trainable = (latent_dim + 1) * 16 * channels[0]  # Dense z -> 4x4xC0, with bias
    for c_in, c_out in zip(channels, channels[1:]):
        trainable += 2 * c_in + 9 * c_in * c_out + c_out  # BN(c_in), 3x3 conv
        trainable += 2 * c_out + 9 * c_out * c_out + c_out  # BN(c_out), 3x3 conv
        trainable += c_in * c_out + c_out  # 1x1 skip conv
    if attention_resolution is not None:
        c = channels[int(np.log2(attention_resolution // 4))]
        trainable += 2 * c * (c // 8) + 2 * c * (c // 2) + 1  # query, key; value, output (no biases); gamma
    trainable += 2 * channels[-1] + 9 * channels[-1] * output_channels + output_channels  # final BN, to RGB
    bn_channels = sum(channels[:-1]) + sum(channels[1:]) + channels[-1]
    return trainable, 2 * bn_channels


# (trainable, non-trainable BN statistics). convnet_demo_32 by hand, widths (192, 192, 96, 48), latent 64:
#   Dense 65*16*192 = 199,680
#   block 192->192: BN 384 + conv 331,968 + BN 384 + conv 331,968 + skip 37,056 = 701,760
#   block 192->96:  BN 384 + conv 165,984 + BN 192 + conv 83,040 + skip 18,528 = 268,128
#   block 96->48:   BN 192 + conv 41,520 + BN 96 + conv 20,784 + skip 4,656 = 67,248
#   attention at 16x16 (96 channels): 2*96*12 + 2*96*48 + 1 = 11,521
#   final BN 96 + to_rgb 9*48*3 + 3 = 1,395                         total 1,249,732
#   BN statistics: 2 * (192 + 192 + 192 + 96 + 96 + 48 + 48) = 1,728
EXPECTED_COUNTS = {"convnet_demo_32": (1_249_732, 1_728), "convnet_128": (32_171_268, 9_984)}
HIT_DEMO_32_TRAINABLE = 1_187_747  # tests/test_generator.py's preset, for the demo's size comparison


@pytest.mark.parametrize("preset", sorted(EXPECTED_COUNTS))
def test_exact_parameter_counts(preset):
    keras.backend.clear_session()
    generator = ConvNetGenerator(**CONVNET_PRESETS[preset]).build_symbolic()
    counts = (n_params(generator.trainable_variables), n_params(generator.non_trainable_variables))
    assert counts == EXPECTED_COUNTS[preset] == formula_counts(**CONVNET_PRESETS[preset])


@pytest.mark.slow
def test_demo_is_about_hit_demo_32s_size_and_built_by_get_generator():
    convnet, hit_demo = get_generator("convnet_demo_32"), get_generator("hit_demo_32")
    assert isinstance(convnet, ConvNetGenerator)
    assert n_params(hit_demo.trainable_variables) == HIT_DEMO_32_TRAINABLE
    assert abs(n_params(convnet.trainable_variables) / HIT_DEMO_32_TRAINABLE - 1) < 0.1


@pytest.mark.parametrize("preset,batch", [("convnet_demo_32", 2),
                                          pytest.param("convnet_128", 1, marks=pytest.mark.slow)])
def test_output_shapes(preset, batch):
    keras.backend.clear_session()
    generator = ConvNetGenerator(**CONVNET_PRESETS[preset])
    size = CONVNET_PRESETS[preset]["output_size"]
    z = tf.random.normal([batch, generator.latent_dim])
    for training in (True, False):
        image = generator(z, training=training)
        assert image.shape == (batch, size, size, 3) and image.dtype == tf.float32
        assert np.all(np.isfinite(image.numpy()))
    assert generator.get_config()["output_size"] == size


def test_attention_block_starts_as_the_identity():
    attention = SelfAttention2D(32)
    x = tf.random.normal([2, 8, 8, 32])
    np.testing.assert_array_equal(attention(x).numpy(), x.numpy())
    assert float(attention.gamma.numpy()) == 0.0
    attention.gamma.assign(1.0)  # the attention path itself is not a no-op
    assert not np.allclose(attention(x).numpy(), x.numpy())
    generator = ConvNetGenerator(**CONVNET_PRESETS["convnet_demo_32"]).build_symbolic()
    assert float(generator.attention.gamma.numpy()) == 0.0
    assert generator.attention.value.compute_output_shape((1, 16, 16, 96)) == (1, 16, 16, 48)


@pytest.mark.parametrize("kwargs,message", [
    (dict(output_size=48, channels=(8,) * 5), "bad resolution"),
    (dict(output_size=4, channels=(8,)), "bad resolution"),
    (dict(channels=(64, 32, 16)), "channels needs 4 widths"),
    (dict(attention_resolution=4), "not a block resolution"),
    (dict(attention_resolution=64), "not a block resolution"),
    (dict(channels=(64, 32, 20, 16)), "divisible by 8"),
    (dict(latent_dim=0), "sizes must be positive"),
    (dict(bn_group_size=0), "bad BatchNorm group size"),
    (dict(norm_type="group"), "unknown norm_type"),
])
def test_bad_arguments_give_one_line_errors(kwargs, message):
    config = {**dict(output_size=32, latent_dim=16, channels=(64, 32, 16, 16), attention_resolution=16), **kwargs}
    with pytest.raises(ValueError, match=message) as error:
        ConvNetGenerator(**config)
    assert "\n" not in str(error.value)


def test_bad_latent_shape_is_a_one_line_error():
    generator = ConvNetGenerator(**CONVNET_PRESETS["convnet_demo_32"])
    with pytest.raises(ValueError, match=r"expects z of shape \[batch, 64\]") as error:
        generator(tf.zeros([2, 32]))
    assert "\n" not in str(error.value)


def test_bfloat16_policy_gives_float32_images_and_variables():
    keras.backend.clear_session()
    with policy_scope("bfloat16"):
        generator = ConvNetGenerator(**CONVNET_PRESETS["convnet_demo_32"]).build_symbolic()
    generator.attention.gamma.assign(0.5)  # exercise the attention path in bfloat16 too
    image = generator(tf.random.normal([2, 64]), training=True)
    assert image.dtype == tf.float32 and np.all(np.isfinite(image.numpy()))
    assert {v.dtype for v in generator.variables} == {"float32"}
    assert generator.blocks[0].conv1.compute_dtype == "bfloat16"


@pytest.mark.slow
def test_xla_matches_graph():
    keras.backend.clear_session()
    generator = ConvNetGenerator(**CONVNET_PRESETS["convnet_demo_32"]).build_symbolic()
    generator.attention.gamma.assign(0.5)
    z = tf.random.normal([4, 64])
    for training in (False, True):  # inference: the initial moving statistics; training: batch statistics
        outputs = {}
        for jit in (False, True):
            fn = tf.function(lambda z: generator(z, training=training), jit_compile=jit)
            outputs[jit] = fn(z).numpy()
        np.testing.assert_allclose(outputs[True], outputs[False], rtol=1e-4, atol=1e-4)


def test_gradient_reaches_every_trainable_variable():
    keras.backend.clear_session()
    generator = ConvNetGenerator(**CONVNET_PRESETS["convnet_demo_32"]).build_symbolic()
    generator.attention.gamma.assign(0.5)  # at gamma = 0 only gamma itself gets a gradient from the attention path
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(generator(tf.random.normal([4, 64]), training=True) - 0.3))
    grads = tape.gradient(loss, generator.trainable_variables)
    missing = [v.path for v, g in zip(generator.trainable_variables, grads) if g is None or not np.any(g.numpy())]
    assert not missing


def test_bn_group_size_reaches_every_batch_norm():
    generator = ConvNetGenerator(**CONVNET_PRESETS["convnet_demo_32"], bn_group_size=2)
    norms = [layer for layer in generator._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 7 and all(isinstance(n, GroupedBatchNormalization) and n.group_size == 2 for n in norms)
    assert generator(tf.random.normal([4, 64]), training=True).shape == (4, 32, 32, 3)


def test_config_round_trips():
    generator = ConvNetGenerator(**CONVNET_PRESETS["convnet_demo_32"], bn_group_size=4, name="ema_generator")
    config = generator.get_config()
    assert config["latent_dim"] == 64 and config["channels"] == (192, 192, 96, 48) and config["bn_group_size"] == 4
    clone = ConvNetGenerator.from_config(config).build_symbolic()
    assert clone.name == "ema_generator" and clone.get_config() == config
    assert n_params(clone.trainable_variables) == EXPECTED_COUNTS["convnet_demo_32"][0]


@pytest.mark.slow
def test_baseline_gin_trains_one_step_and_samples_from_its_ema_generator(tmp_path):
    """gin/hit/imagenet_128_convnet_r1.gin on tiny settings: one step of the paper's recipe, a checkpoint, and
    sampling restores the ConvNet EMA generator from the run unchanged."""
    from hit.configs import parse_gin
    from hit.inference.runs import load_generator
    from hit.train.trainer import Trainer

    parse_gin(["gin/hit/imagenet_128_convnet_r1.gin"], [
        "GANTask.generator_preset = 'convnet_demo_32'", "GANTask.discriminator_preset = 'stylegan_d_tiny_32'",
        "DataSource.name = 'random'", "DataSource.resolution = 32", "Trainer.global_batch_size = 8",
        "Trainer.train_steps = 1", "Trainer.jit_compile = False", "Trainer.sample_every = 0"])
    trainer = Trainer(model_dir=str(tmp_path))
    metrics = trainer.train()
    assert set(metrics) >= {"d_loss", "g_loss", "r1_penalty"} and all(np.isfinite(list(metrics.values())))
    assert (trainer.task.r1_weight, trainer.task.bn_group_size) == (10.0, 8)
    generator = load_generator(str(tmp_path))
    assert isinstance(generator, ConvNetGenerator)
    images = generator(tf.zeros([2, generator.latent_dim]), training=False)
    assert images.shape == (2, 32, 32, 3)

"""VQGAN's encoder E (VQ-HiT, A.5): f16 parameter count and layout, numerics against a NumPy forward pass,
Downsample's right/bottom padding, PyTorch's default conv init, one-line errors."""

import math

import keras
import numpy as np
import pytest

from hit.models.vqgan_encoder import Downsample, VQGANEncoder

# resolution 32, two levels (32 -> 16), attention at 16: every kind of layer, with a width change (nin_shortcut).
SMALL = dict(resolution=32, in_channels=3, channels=16, channel_multipliers=(1, 2), num_res_blocks=2,
             attention_resolutions=(16,), z_channels=8, groups=8)


def n_params(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


@pytest.fixture(scope="module")
def f16():
    keras.utils.set_random_seed(7)
    return VQGANEncoder().build_symbolic()


@pytest.mark.slow
def test_f16_parameter_count_and_output_shape(f16):
    assert n_params(f16.trainable_variables) == 29_298_176
    assert not f16.non_trainable_variables
    assert f16.output_resolution == 16
    images = np.random.default_rng(0).uniform(-1, 1, (1, 256, 256, 3)).astype("float32")
    z = f16(images).numpy()
    assert z.shape == (1, 16, 16, 256) and z.dtype == np.float32 and np.isfinite(z).all()


@pytest.mark.slow
def test_f16_layer_names_follow_vqgan_modules(f16):
    down = []
    for i in range(5):
        down += [f"down_{i}_block_0", f"down_{i}_attn_0"] if i == 4 else [f"down_{i}_block_0"]
        down += [f"down_{i}_block_1", f"down_{i}_attn_1"] if i == 4 else [f"down_{i}_block_1"]
        down += [f"down_{i}_downsample"] if i < 4 else []
    mid = ["mid_block_1", "mid_attn_1", "mid_block_2"]
    assert [layer.name for layer in f16.layers] == ["conv_in", *down, *mid, "norm_out", "conv_out"]
    widths = [(f16.get_layer(f"down_{i}_block_0").in_channels, f16.get_layer(f"down_{i}_block_0").out_channels)
              for i in range(5)]
    assert widths == [(128, 128), (128, 128), (128, 256), (256, 256), (256, 512)]
    # a 1x1 nin_shortcut exactly where the width changes
    assert [f16.get_layer(f"down_{i}_block_0").nin_shortcut is not None for i in range(5)] == [
        False, False, True, False, True]
    assert f16.get_layer("down_2_block_0").nin_shortcut.kernel.shape == (1, 1, 128, 256)
    assert f16.get_layer("mid_attn_1").q.kernel.shape == (1, 1, 512, 512)
    assert f16.conv_out.kernel.shape == (3, 3, 512, 256)
    block, attn = f16.get_layer("down_4_block_1"), f16.get_layer("mid_attn_1")
    for norm in (block.norm1, block.norm2, attn.norm, f16.norm_out):  # VQGAN's Normalize
        assert (norm.groups, norm.epsilon, norm.center, norm.scale) == (32, 1e-6, True, True)


@pytest.mark.slow
def test_pytorch_default_conv_init(f16):
    variables = {v.path: v.numpy() for v in f16.trainable_variables}
    kernels = [p for p in variables if p.endswith("/kernel")]
    assert len(kernels) == 44  # 1 + 12 blocks x 2 + 2 nin_shortcut + 3 attn x 4 + 4 downsample + 1
    for path in kernels:
        kernel, bias = variables[path], variables[path[: -len("kernel")] + "bias"]
        bound = 1.0 / math.sqrt(np.prod(kernel.shape[:3]))  # fan_in = k * k * in_channels
        for w in (kernel, bias):
            assert np.abs(w).max() <= bound * (1 + 1e-6), path
            assert np.abs(w).max() > 0.9 * bound, path  # uniform over the whole range, not all zero
        assert abs(kernel.std() * math.sqrt(3) / bound - 1) < 0.1, path  # U(-b, b) has std b / sqrt(3)
    norms = [p for p in variables if p.endswith("/gamma")]
    assert len(norms) == 12 * 2 + 3 + 1
    for path in norms:
        assert (variables[path] == 1).all() and not variables[path[: -len("gamma")] + "beta"].any(), path


# A slow NumPy forward pass of VQGAN's Encoder, written from its PyTorch code, in float64.

def np_conv(x, layer, stride=1, pad=(1, 1)):
    """Conv with explicit padding (before, after) on H and W, as a sum over the kernel taps."""
    kernel, bias = layer.kernel.numpy().astype(np.float64), layer.bias.numpy().astype(np.float64)
    k = kernel.shape[0]
    x = np.pad(x, [(0, 0), pad, pad, (0, 0)])
    h, w = (x.shape[1] - k) // stride + 1, (x.shape[2] - k) // stride + 1
    out = np.zeros((x.shape[0], h, w, kernel.shape[-1]))
    for di in range(k):
        for dj in range(k):
            out += x[:, di: di + stride * h: stride, dj: dj + stride * w: stride, :] @ kernel[di, dj]
    return out + bias


def np_group_norm(x, layer, groups):
    b, h, w, c = x.shape
    g = x.reshape(b, h, w, groups, c // groups)
    mean, var = g.mean(axis=(1, 2, 4), keepdims=True), g.var(axis=(1, 2, 4), keepdims=True)
    g = (g - mean) / np.sqrt(var + 1e-6)
    return g.reshape(x.shape) * layer.gamma.numpy() + layer.beta.numpy()


def np_swish(x):
    return x / (1 + np.exp(-x))


def np_resnet_block(x, block, groups):
    h = np_conv(np_swish(np_group_norm(x, block.norm1, groups)), block.conv1)
    h = np_conv(np_swish(np_group_norm(h, block.norm2, groups)), block.conv2)
    shortcut = x if block.nin_shortcut is None else np_conv(x, block.nin_shortcut, pad=(0, 0))
    return shortcut + h


def np_attn_block(x, attn, groups):
    b, h, w, c = x.shape
    y = np_group_norm(x, attn.norm, groups)
    q, k, v = (np_conv(y, f, pad=(0, 0)).reshape(b, h * w, c) for f in (attn.q, attn.k, attn.v))
    scores = q @ k.transpose(0, 2, 1) / math.sqrt(c)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return x + np_conv((weights @ v).reshape(b, h, w, c), attn.proj_out, pad=(0, 0))


def np_encoder(x, encoder, config):
    groups, levels = config["groups"], len(config["channel_multipliers"])
    h = np_conv(x, encoder.conv_in)
    resolution = config["resolution"]
    for i in range(levels):
        for j in range(config["num_res_blocks"]):
            h = np_resnet_block(h, encoder.get_layer(f"down_{i}_block_{j}"), groups)
            if resolution in config["attention_resolutions"]:
                h = np_attn_block(h, encoder.get_layer(f"down_{i}_attn_{j}"), groups)
        if i + 1 < levels:
            h = np_conv(h, encoder.get_layer(f"down_{i}_downsample").conv, stride=2, pad=(0, 1))
            resolution //= 2
    h = np_resnet_block(h, encoder.get_layer("mid_block_1"), groups)
    h = np_attn_block(h, encoder.get_layer("mid_attn_1"), groups)
    h = np_resnet_block(h, encoder.get_layer("mid_block_2"), groups)
    return np_conv(np_swish(np_group_norm(h, encoder.norm_out, groups)), encoder.conv_out)


def test_small_encoder_matches_numpy_reference():
    encoder = VQGANEncoder(**SMALL).build_symbolic()
    rng = np.random.default_rng(1)
    for v in encoder.trainable_variables:  # non-trivial GroupNorm affines, so that they are checked too
        if v.path.endswith(("/gamma", "/beta")):
            v.assign(rng.normal(float(v.path.endswith("gamma")), 0.5, v.shape).astype("float32"))
    images = rng.uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    z = encoder(images).numpy()
    reference = np_encoder(images.astype(np.float64), encoder, SMALL)
    assert z.shape == (2, 16, 16, 8) == reference.shape
    assert np.abs(reference).max() > 0.1
    np.testing.assert_allclose(z, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())
    # the two images are encoded independently (no mixing across the batch)
    np.testing.assert_allclose(encoder(images[1:]).numpy(), z[1:], rtol=1e-5, atol=1e-5)


def test_attention_is_one_head_over_all_positions():
    """Full attention is equivariant to any reordering of the positions: transposing H and W transposes the
    output (a reshape that mixed positions with channels, or attention along one axis only, would not)."""
    encoder = VQGANEncoder(**SMALL).build_symbolic()
    attn = encoder.get_layer("mid_attn_1")
    x = np.random.default_rng(2).normal(size=(1, 16, 16, 32)).astype("float32")
    y = attn(x).numpy()
    transposed = attn(x.transpose(0, 2, 1, 3)).numpy()
    np.testing.assert_allclose(transposed, y.transpose(0, 2, 1, 3), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(y, np_attn_block(x.astype(np.float64), attn, 8), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("tap,expected", [
    ((0, 0), lambda x: x[0::2, 0::2]),  # symmetric padding 1 would shift this by one pixel: x[2i - 1, 2j - 1]
    ((2, 2), lambda x: np.pad(x[2::2, 2::2], [(0, 1), (0, 1)])),  # the last row and column see the zero pad
])
def test_downsample_pads_right_and_bottom(tap, expected):
    down = Downsample(1)
    down(np.zeros((1, 6, 6, 1), np.float32))  # creates the conv's weights
    kernel = np.zeros((3, 3, 1, 1), np.float32)
    kernel[tap] = 1.0
    down.conv.kernel.assign(kernel)
    down.conv.bias.assign(np.zeros(1, np.float32))
    x = np.arange(1, 37, dtype=np.float32).reshape(6, 6)
    y = down(x[None, :, :, None]).numpy()[0, :, :, 0]
    assert y.shape == (3, 3)
    np.testing.assert_array_equal(y, expected(x))


@pytest.mark.slow
def test_config_round_trip():
    encoder = VQGANEncoder(**SMALL)
    config = encoder.get_config()
    assert {k: config[k] for k in SMALL} == SMALL and config["name"] == "encoder"
    clone = VQGANEncoder.from_config(config).build_symbolic(batch_size=2)
    assert n_params(clone.trainable_variables) == n_params(encoder.build_symbolic().trainable_variables)
    assert clone.output_resolution == 16


@pytest.mark.parametrize("shape,message", [
    ((2, 16, 16, 3), "encoder expects images of shape [batch, 32, 32, 3], got [2, 16, 16, 3]"),
    ((2, 32, 32, 1), "encoder expects images of shape [batch, 32, 32, 3], got [2, 32, 32, 1]"),
    ((32, 32, 3), "encoder expects images of shape [batch, 32, 32, 3], got [32, 32, 3]"),
])
def test_image_shape_errors(shape, message):
    encoder = VQGANEncoder(**SMALL)
    with pytest.raises(ValueError) as error:
        encoder(np.zeros(shape, np.float32))
    assert str(error.value) == message


def test_image_shape_error_of_the_f16_config():
    with pytest.raises(ValueError) as error:
        VQGANEncoder()(np.zeros((2, 128, 128, 3), np.float32))
    assert str(error.value) == "encoder expects images of shape [batch, 256, 256, 3], got [2, 128, 128, 3]"


@pytest.mark.parametrize("overrides,match", [
    (dict(resolution=250), "bad resolution"),
    (dict(resolution=20, channel_multipliers=(1, 1, 2, 2)), "bad resolution"),
    (dict(channels=100), "bad groups"),
    (dict(groups=48), "bad groups"),
    (dict(channel_multipliers=()), "channel_multipliers must name"),
    (dict(channel_multipliers=(1, 0)), "positive integers"),
    (dict(num_res_blocks=0), "num_res_blocks"),
    (dict(z_channels=0), "positive integers"),
])
def test_config_errors(overrides, match):
    with pytest.raises(ValueError, match=match) as error:
        VQGANEncoder(**overrides)
    assert "\n" not in str(error.value)

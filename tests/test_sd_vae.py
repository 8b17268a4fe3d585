"""The Stable Diffusion VAE: parameter counts, encode / decode shapes and scaling, loading both checkpoint naming
schemes from .safetensors files, one-line loader errors, and numerics against a NumPy forward pass that reads the
PyTorch-layout state dict directly (so it checks the loader's mapping as well as the layers)."""

import math
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from safetensors.numpy import load_file, save_file

from hit.core.seeds import stateless_normal
from hit.models.latent_space import SCALE_FACTOR, sample_latents
from hit.models.sd_vae import SDVAE, Upsample
from hit.models.weights.sd_vae_torch import assign_weights, detect_scheme, load_sd_vae, weight_mapping

FULL = dict(channels=128, channel_multipliers=(1, 2, 4, 4), num_res_blocks=2, latent_channels=4, groups=32)
# Two equally wide decoder levels (up.2 and up.1), so applying them in the wrong order changes the numbers, not
# just the shapes; a width change (nin_shortcut) in both halves; factor 4: 16 x 16 images -> 4 x 4 latents.
SMALL = dict(channels=16, channel_multipliers=(1, 2, 2), num_res_blocks=1, latent_channels=4, groups=8)


# ---- the PyTorch state dicts, written here from ldm's Encoder / Decoder and diffusers' renaming ---------------

def ldm_shapes(channels, channel_multipliers, num_res_blocks, latent_channels, groups=None):
    """{ldm key: PyTorch shape} of an AutoencoderKL (in and out 3 channels)."""
    shapes = {}

    def conv(name, out, inp, k):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (out, inp, k, k), (out,)

    def norm(name, c):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (c,), (c,)

    def resnet(name, inp, out):
        norm(f"{name}.norm1", inp), conv(f"{name}.conv1", out, inp, 3)
        norm(f"{name}.norm2", out), conv(f"{name}.conv2", out, out, 3)
        if inp != out:
            conv(f"{name}.nin_shortcut", out, inp, 1)

    def mid(part, c):
        resnet(f"{part}.mid.block_1", c, c)
        norm(f"{part}.mid.attn_1.norm", c)
        for p in ("q", "k", "v", "proj_out"):
            conv(f"{part}.mid.attn_1.{p}", c, c, 1)
        resnet(f"{part}.mid.block_2", c, c)

    widths, levels, z = [channels * m for m in channel_multipliers], len(channel_multipliers), latent_channels
    conv("encoder.conv_in", channels, 3, 3)
    c = channels
    for i in range(levels):
        for j in range(num_res_blocks):
            resnet(f"encoder.down.{i}.block.{j}", c, widths[i])
            c = widths[i]
        if i < levels - 1:
            conv(f"encoder.down.{i}.downsample.conv", c, c, 3)
    mid("encoder", c)
    norm("encoder.norm_out", c), conv("encoder.conv_out", 2 * z, c, 3)
    conv("quant_conv", 2 * z, 2 * z, 1), conv("post_quant_conv", z, z, 1)
    conv("decoder.conv_in", c, z, 3)
    mid("decoder", c)
    for i in reversed(range(levels)):
        for j in range(num_res_blocks + 1):
            resnet(f"decoder.up.{i}.block.{j}", c, widths[i])
            c = widths[i]
        if i:
            conv(f"decoder.up.{i}.upsample.conv", c, c, 3)
    norm("decoder.norm_out", c), conv("decoder.conv_out", 3, c, 3)
    return shapes


def random_state_dict(shapes, seed, dtype=np.float32):
    """Random tensors: conv weights ~ N(0, 1 / fan_in), biases ~ N(0, 0.1), GroupNorm weights ~ N(1, 0.3)."""
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in shapes.items():
        if len(shape) > 1:
            value = rng.standard_normal(shape, dtype=np.float32) / math.sqrt(np.prod(shape[1:]))
        else:
            is_norm_weight = re.search(r"norm[^.]*\.weight$", key) is not None
            value = rng.normal(1.0 if is_norm_weight else 0.0, 0.3 if is_norm_weight else 0.1, shape)
        state[key] = value.astype(dtype)
    return state


def to_diffusers(state, levels, legacy=False):
    """ldm state dict -> diffusers naming (decoder levels numbered in the order they run; Linear attention)."""
    attention = ("query", "key", "value", "proj_attn") if legacy else ("to_q", "to_k", "to_v", "to_out.0")
    out = {}
    for key, value in state.items():
        new = re.sub(r"^encoder\.down\.(\d+)\.block\.", r"encoder.down_blocks.\1.resnets.", key)
        new = re.sub(r"^encoder\.down\.(\d+)\.downsample\.", r"encoder.down_blocks.\1.downsamplers.0.", new)
        new = re.sub(r"^decoder\.up\.(\d+)\.block\.", lambda m: f"decoder.up_blocks.{levels - 1 - int(m[1])}.resnets.",
                     new)
        new = re.sub(r"^decoder\.up\.(\d+)\.upsample\.",
                     lambda m: f"decoder.up_blocks.{levels - 1 - int(m[1])}.upsamplers.0.", new)
        new = new.replace(".nin_shortcut.", ".conv_shortcut.").replace(".norm_out.", ".conv_norm_out.")
        new = new.replace(".mid.block_1.", ".mid_block.resnets.0.").replace(".mid.block_2.", ".mid_block.resnets.1.")
        new = new.replace(".mid.attn_1.norm.", ".mid_block.attentions.0.group_norm.")
        for old, name in zip(("q", "k", "v", "proj_out"), attention):
            if f".mid.attn_1.{old}." in new:
                new = new.replace(f".mid.attn_1.{old}.", f".mid_block.attentions.0.{name}.")
                value = value[:2] if isinstance(value, tuple) else value.reshape(value.shape[:2])  # conv -> Linear
        out[new] = value
    return out


def n_params(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


@pytest.fixture(scope="module")
def full():
    keras.utils.set_random_seed(3)
    return SDVAE().build_symbolic()


@pytest.fixture(scope="module")
def small():
    """Shared by the loader and numerics tests: each load fills every weight, a failed one none."""
    return SDVAE(16, **SMALL).build_symbolic()


# ---- 1. sizes -------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_parameter_count_and_split(full):
    assert n_params(full.trainable_variables) == 83_653_863
    assert not full.non_trainable_variables
    # keras-cv's ImageEncoder (with quant_conv) has 34,163,664 and its Decoder (with post_quant_conv) 49,490,199
    assert full.parameter_counts() == {"encoder": 34_163_592, "quant_conv": 72, "post_quant_conv": 20,
                                       "decoder": 49_490_179}
    shapes = ldm_shapes(**FULL)
    assert len(shapes) == len(full.weights) == 248
    assert sum(int(np.prod(s)) for s in shapes.values()) == 83_653_863
    assert full.quant_conv.kernel.shape == (1, 1, 8, 8) and full.post_quant_conv.kernel.shape == (1, 1, 4, 4)
    assert full.encoder.conv_out.kernel.shape == (3, 3, 512, 8)  # double_z
    assert full.decoder.conv_in.kernel.shape == (3, 3, 4, 512) and full.decoder.conv_out.kernel.shape == (3, 3, 128, 3)
    # ldm's level order: up.3 runs first at 512 channels, up.0 last at 128, and has no upsample
    names = [layer.name for layer in full.decoder.body]
    assert names[:4] == ["mid_block_1", "mid_attn_1", "mid_block_2", "up_3_block_0"]
    assert names[-4:] == ["up_1_upsample", "up_0_block_0", "up_0_block_1", "up_0_block_2"]
    assert sum(isinstance(layer, Upsample) for layer in full.decoder.body) == 3
    assert full.decoder.get_layer("up_0_block_0").nin_shortcut.kernel.shape == (1, 1, 256, 128)
    # attention only in the mid blocks
    attention = [layer.path for layer in full._flatten_layers() if "attn" in layer.name]
    assert attention == ["sd_vae/encoder/mid_attn_1", "sd_vae/decoder/mid_attn_1"]
    for norm in (full.encoder.norm_out, full.decoder.get_layer("up_2_block_1").norm2):
        assert (norm.groups, norm.epsilon) == (32, 1e-6)


# ---- 2. encode / decode --------------------------------------------------------------------------------------

@pytest.mark.slow
def test_encode_decode_shapes_at_256(full):
    images = np.random.default_rng(0).uniform(-1, 1, (1, 256, 256, 3)).astype("float32")
    mean, std = full.encode(images)
    assert mean.shape == std.shape == (1, 32, 32, 4) and mean.dtype == std.dtype == "float32"
    assert (std.numpy() > 0).all() and np.isfinite(mean.numpy()).all()
    decoded = full.decode(sample_latents(mean, std, seed=0)).numpy()
    assert decoded.shape == (1, 256, 256, 3) and np.isfinite(decoded).all()


@pytest.mark.slow
def test_decode_divides_by_the_scale_factor_and_other_sizes(full):
    mean, std = full.encode(np.zeros((1, 24, 64, 3), np.float32))  # any H, W divisible by 8
    assert mean.shape == (1, 3, 8, 4)
    latents = np.random.default_rng(1).normal(size=(1, 3, 8, 4)).astype("float32")
    decoded = full.decode(latents).numpy()
    assert decoded.shape == (1, 24, 64, 3)
    np.testing.assert_allclose(decoded, full.decoder(full.post_quant_conv(latents / 0.18215)).numpy(), atol=1e-5)
    assert SCALE_FACTOR == 0.18215
    assert np.abs(decoded - full.decoder(full.post_quant_conv(latents)).numpy()).max() > 1e-3


def test_sample_latents_is_stateless_and_scaled():
    mean = np.random.default_rng(2).normal(size=(2, 32, 32, 4)).astype("float32")
    std = np.full_like(mean, 0.5)
    a, b, c = (sample_latents(mean, std, seed).numpy() for seed in (5, 5, 6))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0.1
    eps = (a / SCALE_FACTOR - mean) / 0.5
    assert abs(eps.mean()) < 0.03 and abs(eps.std() - 1) < 0.03
    np.testing.assert_allclose(sample_latents(mean, 0 * std, 5).numpy(), mean * SCALE_FACTOR, rtol=1e-6)
    # an int seed is the [2] seed (seed, 0), drawn with hit.core.seeds (the same with and without XLA)
    key = tf.constant([5, 0], tf.int64)
    np.testing.assert_array_equal(sample_latents(mean, std, key).numpy(), a)
    expected = (mean + std * stateless_normal([mean.size], key).numpy().reshape(mean.shape)) * SCALE_FACTOR
    np.testing.assert_allclose(a, expected, rtol=1e-6)
    traced = tf.function(sample_latents)(mean, std, tf.constant([5, 0], tf.int64))
    np.testing.assert_array_equal(traced.numpy(), a)
    np.testing.assert_allclose(sample_latents(mean, std, 5, scale_factor=0.5).numpy(), a / SCALE_FACTOR * 0.5,
                               rtol=1e-5, atol=1e-6)  # another VAE's scale factor (the demo VAE's)


def test_the_scale_factor_is_part_of_the_config():
    assert SDVAE(16, **SMALL).get_config()["scale_factor"] == SCALE_FACTOR == 0.18215
    vae = SDVAE(16, scale_factor=0.5, **SMALL)
    assert vae.scale_factor == vae.get_config()["scale_factor"] == 0.5 and vae.downsampling_factor == 4
    with pytest.raises(ValueError, match="scale_factor must be a positive number, got 0"):
        SDVAE(16, scale_factor=0, **SMALL)


@pytest.mark.parametrize("shape", [(1, 18, 16, 3), (1, 16, 16, 1), (16, 16, 3)])
def test_image_shape_errors(shape):
    vae = SDVAE(16, **SMALL)
    for call in (vae, vae.encode):
        with pytest.raises(ValueError) as error:
            call(np.zeros(shape, np.float32))
        assert str(error.value) == ("encoder expects images of shape [batch, H, W, 3] with H and W divisible by 4, "
                                    f"got {list(shape)}")


def test_latent_shape_error():
    vae = SDVAE(16, **SMALL)
    with pytest.raises(ValueError) as error:
        vae.decode(np.zeros((1, 4, 4, 8), np.float32))
    assert str(error.value) == "decoder expects latents of shape [batch, h, w, 4], got [1, 4, 4, 8]"


# ---- 3. loading ----------------------------------------------------------------------------------------------

def small_states(seed=0):
    ldm = random_state_dict(ldm_shapes(**SMALL), seed)
    levels = len(SMALL["channel_multipliers"])
    return {"ldm": ldm, "diffusers": to_diffusers(ldm, levels), "diffusers_legacy": to_diffusers(ldm, levels, True)}


@pytest.mark.slow
def test_mappings_name_every_tensor_of_the_real_checkpoints(full):
    ldm = ldm_shapes(**FULL)
    expected = {"ldm": ldm, "diffusers": to_diffusers(ldm, 4), "diffusers_legacy": to_diffusers(ldm, 4, True)}
    paths = {v.path for v in full.weights}
    for scheme, keys in expected.items():
        mapping = weight_mapping(full, scheme)
        assert set(mapping) == paths, scheme
        assert sorted(key for key, _ in mapping.values()) == sorted(keys), scheme
    diffusers = expected["diffusers"]
    assert diffusers["decoder.up_blocks.0.resnets.0.conv1.weight"] == (512, 512, 3, 3)
    assert diffusers["decoder.up_blocks.3.resnets.0.conv_shortcut.weight"] == (128, 256, 1, 1)
    assert diffusers["encoder.mid_block.attentions.0.to_q.weight"] == (512, 512)
    assert "decoder.up_blocks.3.upsamplers.0.conv.weight" not in diffusers
    mapping = weight_mapping(full, "diffusers")
    assert mapping["sd_vae/decoder/up_3_block_0/conv1/kernel"][0] == "decoder.up_blocks.0.resnets.0.conv1.weight"
    assert mapping["sd_vae/decoder/up_1_upsample/conv/bias"][0] == "decoder.up_blocks.2.upsamplers.0.conv.bias"


@pytest.mark.slow
def test_both_schemes_round_trip_to_the_same_weights(tmp_path, small):
    states, loaded = small_states(), {}
    for scheme, state in states.items():
        assert detect_scheme(state) == (scheme, "")
        path = str(tmp_path / f"{scheme}.safetensors")
        save_file(state, path)
        if scheme == "ldm":
            vae = load_sd_vae(path, resolution=16, **SMALL)
            assert vae.built and n_params(vae.weights) == n_params(small.weights)
        else:
            vae = small
            assert assign_weights(vae, load_file(path)) == scheme
        loaded[scheme] = {v.path: v.numpy() for v in vae.weights}
        for path, (key, transform) in weight_mapping(vae, scheme).items():  # each variable is its file tensor
            np.testing.assert_array_equal(loaded[scheme][path], transform(state[key]), err_msg=path)
    for scheme in ("diffusers", "diffusers_legacy"):
        assert loaded[scheme].keys() == loaded["ldm"].keys()
        for path, value in loaded["ldm"].items():
            np.testing.assert_array_equal(loaded[scheme][path], value, err_msg=f"{scheme} {path}")
    # layouts, independently of the mapping: conv OIHW -> HWIO, Linear [out, in] -> [1, 1, in, out], norms as is
    ldm, diffusers, weights = states["ldm"], states["diffusers"], loaded["ldm"]
    np.testing.assert_array_equal(weights["sd_vae/decoder/up_2_block_0/conv1/kernel"],
                                  ldm["decoder.up.2.block.0.conv1.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(weights["sd_vae/decoder/mid_attn_1/q/kernel"][0, 0],
                                  diffusers["decoder.mid_block.attentions.0.to_q.weight"].T)
    np.testing.assert_array_equal(weights["sd_vae/encoder/norm_out/gamma"], ldm["encoder.norm_out.weight"])


@pytest.mark.slow
def test_prefixed_checkpoints_and_ignored_keys(small):
    state, vae = small_states()["diffusers"], small
    prefixed = {f"vae.{k}": v for k, v in state.items()}
    prefixed["unet.conv_in.weight"] = np.zeros((1, 1), np.float32)  # another model of the same pipeline file
    assert assign_weights(vae, prefixed) == "diffusers"
    ldm = {f"first_stage_model.{k}": v for k, v in small_states()["ldm"].items()}
    ldm["first_stage_model.loss.discriminator.main.0.weight"] = np.zeros((2, 2), np.float32)
    ldm["model.diffusion_model.input_blocks.0.0.weight"] = np.zeros((2, 2), np.float32)
    assert assign_weights(vae, ldm) == "ldm"
    np.testing.assert_array_equal(vae.decoder.conv_in.bias.numpy(), ldm["first_stage_model.decoder.conv_in.bias"])


def loader_error(vae, state):
    before = [v.numpy() for v in vae.weights]
    with pytest.raises(ValueError) as error:
        assign_weights(vae, state)
    assert all((b == v.numpy()).all() for b, v in zip(before, vae.weights))  # nothing assigned
    assert "\n" not in str(error.value)
    return str(error.value)


@pytest.mark.slow
def test_missing_extra_and_misshapen_tensors_are_named(tmp_path, small):
    def error(state):
        return loader_error(small, state)

    state = small_states()["ldm"]
    missing = {k: v for k, v in state.items() if k != "decoder.up.0.block.1.conv2.bias"}
    assert error(missing) == "ldm weights: missing 1 tensor(s): 'decoder.up.0.block.1.conv2.bias'"
    no_up_0 = {k: v for k, v in state.items() if not k.startswith("decoder.up.0.")}
    assert error(no_up_0) == ("ldm weights: missing 18 tensor(s): 'decoder.up.0.block.0.conv1.bias', "
                              "'decoder.up.0.block.0.conv1.weight', 'decoder.up.0.block.0.conv2.bias', "
                              "'decoder.up.0.block.0.conv2.weight', 'decoder.up.0.block.0.nin_shortcut.bias', ... "
                              "(13 more)")
    extra = {**state, "decoder.up.0.block.2.conv1.weight": np.zeros((16, 16, 3, 3), np.float32)}
    assert error(extra) == "ldm weights: 1 unexpected tensor(s): 'decoder.up.0.block.2.conv1.weight'"
    assert "model.diffusion_model.x" in error({**state, "model.diffusion_model.x": np.zeros(1, np.float32)})
    bad = {**state, "decoder.conv_in.weight": np.zeros((32, 4, 1, 1), np.float32)}
    assert error(bad) == ("ldm weights: 1 tensor(s) of the wrong shape: 'decoder.conv_in.weight' expected "
                          "(32, 4, 3, 3), got (32, 4, 1, 1)")
    diffusers = {f"vae.{k}": v for k, v in small_states()["diffusers"].items()}
    diffusers["vae.encoder.mid_block.attentions.0.to_k.weight"] = np.zeros((32, 32, 1, 1), np.float32)
    assert error(diffusers) == ("diffusers weights: 1 tensor(s) of the wrong shape: "
                                "'vae.encoder.mid_block.attentions.0.to_k.weight' expected (32, 32), got "
                                "(32, 32, 1, 1)")
    mixed = {**state, "encoder.mid_block.attentions.0.to_q.weight": np.zeros((32, 32), np.float32)}
    assert error(mixed).startswith("cannot tell the naming scheme: expected exactly one of ")
    assert error({**state, "vae.encoder.conv_in.weight": state["encoder.conv_in.weight"]}) == (
        "expected one VAE (one key ending in 'encoder.conv_in.weight'), found 2: ['', 'vae.']")
    save_file({"unet.conv_in.weight": np.zeros(1, np.float32)}, str(tmp_path / "unet.safetensors"))
    with pytest.raises(ValueError, match=r"^expected one VAE \(one key ending in 'encoder.conv_in.weight'\), found 0"):
        load_sd_vae(str(tmp_path / "unet.safetensors"))


@pytest.mark.slow
def test_full_size_float16_checkpoint_loads(tmp_path, full):
    """The real names and shapes (the sd-vae-ft-mse ldm file in float16, as in a whole SD checkpoint)."""
    state = random_state_dict(ldm_shapes(**FULL), seed=4, dtype=np.float16)
    path = str(tmp_path / "vae.safetensors")
    save_file({f"first_stage_model.{k}": v for k, v in state.items()}, path)
    vae = full  # after the forward tests in this file, which do not depend on the weights' values
    assert assign_weights(vae, load_file(path)) == "ldm"
    kernel = vae.decoder.get_layer("up_3_block_2").conv2.kernel
    assert kernel.dtype == "float32"
    np.testing.assert_array_equal(kernel.numpy(), state["decoder.up.3.block.2.conv2.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(vae.decoder.get_layer("up_1_upsample").conv.bias.numpy(),
                                  state["decoder.up.1.upsample.conv.bias"])


# ---- 4. numerics against NumPy, in float64, from the ldm state dict -----------------------------------------

def np_conv(x, state, name, stride=1, pad=(1, 1)):
    weight, bias = state[f"{name}.weight"].astype(np.float64), state[f"{name}.bias"].astype(np.float64)
    k = weight.shape[-1]
    x = np.pad(x, [(0, 0), pad, pad, (0, 0)])
    h, w = (x.shape[1] - k) // stride + 1, (x.shape[2] - k) // stride + 1
    out = np.zeros((x.shape[0], h, w, weight.shape[0]))
    for di in range(k):
        for dj in range(k):
            out += x[:, di: di + stride * h: stride, dj: dj + stride * w: stride, :] @ weight[:, :, di, dj].T
    return out + bias


def np_norm(x, state, name, groups):
    b, h, w, c = x.shape
    g = x.reshape(b, h, w, groups, c // groups)
    g = (g - g.mean(axis=(1, 2, 4), keepdims=True)) / np.sqrt(g.var(axis=(1, 2, 4), keepdims=True) + 1e-6)
    return g.reshape(x.shape) * state[f"{name}.weight"] + state[f"{name}.bias"]


def np_swish(x):
    return x / (1 + np.exp(-x))


def np_resnet(x, state, name, groups):
    h = np_conv(np_swish(np_norm(x, state, f"{name}.norm1", groups)), state, f"{name}.conv1")
    h = np_conv(np_swish(np_norm(h, state, f"{name}.norm2", groups)), state, f"{name}.conv2")
    if f"{name}.nin_shortcut.weight" in state:
        x = np_conv(x, state, f"{name}.nin_shortcut", pad=(0, 0))
    return x + h


def np_attention(x, state, name, groups):
    b, h, w, c = x.shape
    y = np_norm(x, state, f"{name}.norm", groups)
    q, k, v = (np_conv(y, state, f"{name}.{p}", pad=(0, 0)).reshape(b, h * w, c) for p in "qkv")
    scores = q @ k.transpose(0, 2, 1) / math.sqrt(c)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return x + np_conv((weights @ v).reshape(b, h, w, c), state, f"{name}.proj_out", pad=(0, 0))


def np_mid(x, state, part, groups):
    x = np_resnet(x, state, f"{part}.mid.block_1", groups)
    return np_resnet(np_attention(x, state, f"{part}.mid.attn_1", groups), state, f"{part}.mid.block_2", groups)


def np_upsample(x, state, name):
    """Nearest neighbour: out[2i + a, 2j + b] = x[i, j]; then the 3x3 conv."""
    up = np.zeros((x.shape[0], 2 * x.shape[1], 2 * x.shape[2], x.shape[3]))
    for a in range(2):
        for b in range(2):
            up[:, a::2, b::2] = x
    return np_conv(up, state, name)


def np_encode(x, state, levels, blocks, groups):
    """-> (mean, raw logvar)."""
    h = np_conv(x, state, "encoder.conv_in")
    for i in range(levels):
        for j in range(blocks):
            h = np_resnet(h, state, f"encoder.down.{i}.block.{j}", groups)
        if i < levels - 1:
            h = np_conv(h, state, f"encoder.down.{i}.downsample.conv", stride=2, pad=(0, 1))
    h = np_mid(h, state, "encoder", groups)
    h = np_conv(np_swish(np_norm(h, state, "encoder.norm_out", groups)), state, "encoder.conv_out")
    moments = np_conv(h, state, "quant_conv", pad=(0, 0))
    return np.split(moments, 2, axis=-1)


def np_decode(z, state, levels, blocks, groups):
    h = np_conv(np_conv(z / 0.18215, state, "post_quant_conv", pad=(0, 0)), state, "decoder.conv_in")
    h = np_mid(h, state, "decoder", groups)
    for i in reversed(range(levels)):
        for j in range(blocks + 1):
            h = np_resnet(h, state, f"decoder.up.{i}.block.{j}", groups)
        if i:
            h = np_upsample(h, state, f"decoder.up.{i}.upsample.conv")
    return np_conv(np_swish(np_norm(h, state, "decoder.norm_out", groups)), state, "decoder.conv_out")


@pytest.mark.slow
def test_small_vae_matches_numpy_reference(small):
    state = small_states(seed=5)["diffusers"]  # loaded in diffusers naming, the reference reads ldm's
    ldm = small_states(seed=5)["ldm"]
    ldm["quant_conv.bias"][4:6] = state["quant_conv.bias"][4:6] = [40.0, -50.0]  # logvar channels 0, 1 clip
    vae = small
    assign_weights(vae, state)
    levels, blocks, groups = len(SMALL["channel_multipliers"]), SMALL["num_res_blocks"], SMALL["groups"]
    images = np.random.default_rng(6).uniform(-1, 1, (2, 16, 16, 3)).astype("float32")
    mean, std = (t.numpy() for t in vae.encode(images))
    ref_mean, ref_logvar = np_encode(images.astype(np.float64), ldm, levels, blocks, groups)
    assert mean.shape == std.shape == (2, 4, 4, 4)
    assert ref_logvar[..., 0].min() > 20 and ref_logvar[..., 1].max() < -30  # the clip acts
    assert np.abs(ref_logvar[..., 2:]).max() < 20
    ref_std = np.exp(0.5 * np.clip(ref_logvar, -30, 20))
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-4, atol=1e-4 * np.abs(ref_mean).max())
    np.testing.assert_allclose(std, ref_std, rtol=1e-4)
    np.testing.assert_allclose(std[..., 0], math.exp(10), rtol=1e-6)
    latents = np.random.default_rng(7).normal(0, 0.2, (2, 4, 4, 4)).astype("float32")
    decoded = vae.decode(latents).numpy()
    reference = np_decode(latents.astype(np.float64), ldm, levels, blocks, groups)
    assert decoded.shape == reference.shape == (2, 16, 16, 3) and np.abs(reference).max() > 0.1
    np.testing.assert_allclose(decoded, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())
    # model(images) reconstructs through the posterior mean
    np.testing.assert_allclose(vae(images).numpy(), vae.decode(mean * SCALE_FACTOR).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tap,expected", [
    ((1, 1), lambda up: up),  # the centre tap: plain nearest-neighbour 2x
    ((0, 0), lambda up: np.pad(up, [(1, 0), (1, 0)])[:-1, :-1]),  # padding 1 on every side, as PyTorch's
])
def test_upsample_is_nearest_then_conv(tap, expected):
    layer = Upsample(1)
    layer(np.zeros((1, 3, 3, 1), np.float32))
    kernel = np.zeros((3, 3, 1, 1), np.float32)
    kernel[tap] = 1.0
    layer.conv.kernel.assign(kernel)
    layer.conv.bias.assign(np.zeros(1, np.float32))
    x = np.arange(1, 10, dtype=np.float32).reshape(3, 3)
    y = layer(x[None, :, :, None]).numpy()[0, :, :, 0]
    up = np.kron(x, np.ones((2, 2), np.float32))
    assert y.shape == (6, 6) and up[1, 1] == 1 and up[2, 2] == 5
    np.testing.assert_array_equal(y, expected(up))

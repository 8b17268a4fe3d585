"""GAT generator and discriminator (hit.models.gat; official GAT models/): the layers against NumPy (2-D RoPE as complex
rotations, the sin-cos table, RMSNorm, SwiGLU, EqualLinear's lr multiplier, unpatchify), the parameter counts of the
official models, the gat_demo forward, truncation and w_avg, and the official-weight loader on tiny configs checked
against a NumPy forward of the official PyTorch models written from their state dicts."""

import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import safetensors.numpy
import tensorflow as tf

from hit.layers.equal_linear import EqualLinear
from hit.layers.mlp import SwiGLU, swiglu_hidden_dim
from hit.layers.normalization import QK_NORM_EPSILON, rms_norm, rms_norm_layer
from hit.layers.patches import patch_embedding, unpatchify
from hit.layers.rope import Rotary2D, rope_2d_tables, sincos_2d_table
from hit.models.gat import stack_levels
from hit.models.gat_discriminator import GATDiscriminator
from hit.models.gat_generator import GATGenerator
from hit.models.presets import get_discriminator, get_generator
from hit.models.weights.gat_official import load_official_weights, official_unused_tensors, official_weight_map
from hit.models.weights.state_dict import file_shape

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Tiny configs for the loader and the NumPy forward: a 4x4 token grid, head dim 32.
TINY_G = dict(resolution=8, patch_size=2, output_channels=4, width=64, depth=4, heads=2, num_classes=10,
              latent_dim=16)
TINY_D = dict(resolution=8, patch_size=2, channels=4, width=64, depth=4, heads=2, num_classes=10, projection_dim=32,
              repa=True, repa_hidden_dim=48, repa_dim=24)


def one_line(error):
    return "\n" not in str(error.value)


def assert_close_at_scale(actual, reference, rtol=1e-3, scale_tol=1e-5):
    """allclose with an absolute tolerance of scale_tol times the reference's largest magnitude: float32 sums of
    terms that large are off by a few 1e-6 of it everywhere, also in elements near 0 (the generator's hidden
    states reach ~1e4: a fixed atol of 1e-3 failed on an AMD EPYC)."""
    np.testing.assert_allclose(actual, reference, rtol=rtol, atol=scale_tol * np.abs(reference).max())


# ---- NumPy references ----------------------------------------------------------------------------------------------


def complex_rope(x, grid):
    """2-D RoPE of x [grid*grid, heads, head_dim] (row-major tokens): channel pairs (2j, 2j+1) as complex numbers
    times e^{i angle}; the first head_dim/4 pairs turn by row * f_j, the rest by col * f_(j - head_dim/4),
    f_j = 10000^(-2j / (head_dim/2))."""
    head_dim = x.shape[-1]
    quarter = head_dim // 4
    frequencies = 10000.0 ** (-2.0 * np.arange(quarter) / (head_dim / 2))
    pairs = x[..., 0::2] + 1j * x[..., 1::2]  # [T, H, head_dim/2]
    out = np.empty_like(x, dtype=np.float64)
    for t in range(grid * grid):
        row, col = divmod(t, grid)
        angles = np.concatenate([row * frequencies, col * frequencies])
        turned = pairs[t] * np.exp(1j * angles)
        out[t, :, 0::2], out[t, :, 1::2] = turned.real, turned.imag
    return out


def sincos_reference(width, grid):
    """MAE's 2-D table written out per token: [sin(col w), cos(col w), sin(row w), cos(row w)], w_k = 1e4^(-k/(C/4))."""
    quarter = width // 4
    omega = 10000.0 ** (-np.arange(quarter) / quarter)
    table = np.zeros((grid * grid, width))
    for t in range(grid * grid):
        row, col = divmod(t, grid)
        table[t] = np.concatenate([np.sin(col * omega), np.cos(col * omega), np.sin(row * omega), np.cos(row * omega)])
    return table


def np_rms(x, eps, weight=None):
    y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return y if weight is None else y * weight


def silu(x):
    return x / (1.0 + np.exp(-x))


class Official:
    """The official PyTorch forward, in float64 NumPy, from a state dict (PyTorch layouts)."""

    def __init__(self, tensors):
        self.t = {k: np.asarray(v, np.float64) for k, v in tensors.items()}

    def linear(self, name, x, lr=1.0):
        return x @ (lr * self.t[f"{name}.weight"]).T + lr * self.t[f"{name}.bias"]

    def attention(self, prefix, x, heads, grid):
        tokens, width = x.shape
        d = width // heads
        qkv = self.linear(f"{prefix}.qkv", x).reshape(tokens, 3, heads, d)
        q = np_rms(qkv[:, 0], QK_NORM_EPSILON, self.t[f"{prefix}.q_norm.weight"])
        k = np_rms(qkv[:, 1], QK_NORM_EPSILON, self.t[f"{prefix}.k_norm.weight"])
        n = grid * grid  # only the last n tokens turn
        q[-n:], k[-n:] = complex_rope(q[-n:], grid), complex_rope(k[-n:], grid)
        out = np.zeros((tokens, heads, d))
        for h in range(heads):
            logits = q[:, h] @ k[:, h].T / math.sqrt(d)
            a = np.exp(logits - logits.max(-1, keepdims=True))
            out[:, h] = (a / a.sum(-1, keepdims=True)) @ qkv[:, 2, h]
        return self.linear(f"{prefix}.proj", out.reshape(tokens, width))

    def swiglu(self, prefix, x):
        a, b = np.split(self.linear(f"{prefix}.w12", x), 2, axis=-1)
        return self.linear(f"{prefix}.w3", silu(a) * b)

    def generator(self, z, label, depth, heads, patch, channels):
        """-> (levels [4, H, W, c], w, last hidden)."""
        t = self.t
        e = t["y_embedder.embedding_table.weight"][label]
        c = np.concatenate([np_rms(e, 1e-8), np_rms(z, 1e-8)])  # class embedding first
        w = self.linear("latent_embedder.2", silu(self.linear("latent_embedder.0", c, 0.01)), 0.01)
        x = t["pos_embed"][0]
        grid = math.isqrt(x.shape[0])
        hidden = []
        for i in range(depth):
            s_a, g_a, s_m, g_m = np.split(self.linear(f"blocks.{i}.adaLN_modulation.1", silu(w)), 4)
            x = x + g_a * self.attention(f"blocks.{i}.attn", np_rms(x, 1e-6) * (1 + s_a), heads, grid)
            x = x + g_m * self.swiglu(f"blocks.{i}.mlp", np_rms(x, 1e-6) * (1 + s_m))
            hidden.append(x)
        levels, total = [], 0.0
        for k in range(4):
            scale = self.linear(f"final_layers.{k}.adaLN_modulation.1", silu(w))
            h = hidden[(k + 1) * (depth // 4) - 1]
            out = self.linear(f"final_layers.{k}.linear", np_rms(h, 1e-6) * (1 + scale))
            # the official unpatchify: (h, w, p, q, c) -> (c, h, p, w, q), then NCHW -> HWC
            image = np.einsum("hwpqc->chpwq", out.reshape(grid, grid, patch, patch, channels))
            total = total + image.reshape(channels, grid * patch, grid * patch).transpose(1, 2, 0)
            levels.append(total)
        return np.stack(levels), w, x

    def discriminator(self, stacked, label, depth, heads, patch):
        """-> (logit, hidden [1 + T, C], projector of cls, projector of patches); stacked [H, W, 4c]."""
        t = self.t
        weight = t["x_embedder.proj.weight"]  # [C, 4c, p, p]
        grid = stacked.shape[0] // patch
        patches = [stacked[r * patch:(r + 1) * patch, c * patch:(c + 1) * patch]
                   for r in range(grid) for c in range(grid)]
        x = np.stack([np.einsum("oiyx,yxi->o", weight, p) for p in patches]) + t["x_embedder.proj.bias"]
        x = np.concatenate([t["cls_token"][0], x + t["pos_embed"][0]])
        for i in range(depth):
            b = f"blocks.{i}"
            attention = self.attention(f"{b}.attn", np_rms(x, 1e-6, t[f"{b}.norm1.weight"]), heads, grid)
            x = x + attention * t[f"{b}.ls_attn"]
            x = x + self.swiglu(f"{b}.mlp", np_rms(x, 1e-6, t[f"{b}.norm2.weight"])) * t[f"{b}.ls_mlp"]
        y = t["y_embedder.embedding_table.weight"][label]
        y = self.linear("y_embedder.latent_embedder.2", silu(self.linear("y_embedder.latent_embedder.0", y, 0.01)),
                        0.01)
        logit = np.sum(self.linear("final_layer.1", np_rms(x[0], 1e-6, t["final_layer.0.weight"])) * y)

        def projector(h):
            return self.linear("proj.4", silu(self.linear("proj.2", silu(self.linear("proj.0", h)))))

        return logit, x, projector(x[0]), projector(x[1:])


def official_tensors(model, seed=0):
    """A synthetic official state dict for `model`: random weights (the EqualLinear ones x100, as their gain-100
    init), the fixed tables as the official code computes them, random values for G's unused patch conv."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, (variable, perm) in official_weight_map(model).items():
        scale = 30.0 if "latent_embedder" in name else 0.3
        tensors[name] = rng.normal(0, scale, file_shape(variable, perm)).astype(np.float32)
    for name, (shape, value) in official_unused_tensors(model).items():
        tensors[name] = (rng.normal(0, 1, shape) if value is None else value).astype(np.float32)
    return tensors


def generator_names(depth):
    """The official GAT generator's state-dict names, written out independently of the loader's map."""
    names = ["y_embedder.embedding_table.weight", "pos_embed", "w_avg", "feat_rope.freqs_cos", "feat_rope.freqs_sin",
             "x_embedder.proj.weight", "x_embedder.proj.bias"]
    names += [f"latent_embedder.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")]
    for i in range(depth):
        names += [f"blocks.{i}.attn.q_norm.weight", f"blocks.{i}.attn.k_norm.weight"]
        names += [f"blocks.{i}.{m}.{p}" for m in ("attn.qkv", "attn.proj", "mlp.w12", "mlp.w3", "adaLN_modulation.1")
                  for p in ("weight", "bias")]
    names += [f"final_layers.{k}.{m}.{p}" for k in range(4) for m in ("adaLN_modulation.1", "linear")
              for p in ("weight", "bias")]
    return sorted(names)


def discriminator_names(depth, repa):
    names = ["x_embedder.proj.weight", "x_embedder.proj.bias", "pos_embed", "cls_token", "feat_rope.freqs_cos",
             "feat_rope.freqs_sin", "final_layer.0.weight", "final_layer.1.weight", "final_layer.1.bias",
             "y_embedder.embedding_table.weight"]
    names += [f"y_embedder.latent_embedder.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")]
    for i in range(depth):
        names += [f"blocks.{i}.{n}" for n in ("norm1.weight", "norm2.weight", "attn.q_norm.weight",
                                              "attn.k_norm.weight", "ls_attn", "ls_mlp")]
        names += [f"blocks.{i}.{m}.{p}" for m in ("attn.qkv", "attn.proj", "mlp.w12", "mlp.w3")
                  for p in ("weight", "bias")]
    if repa:
        names += [f"proj.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")]
    return sorted(names)


# ---- layers --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", [0, 1])  # G's tokens; D's [cls] + tokens
def test_rope_is_a_complex_rotation_of_channel_pairs(prefix):
    grid, heads, head_dim = 4, 3, 16
    x = np.random.default_rng(0).normal(size=(2, prefix + grid * grid, heads, head_dim)).astype(np.float32)
    out = Rotary2D(head_dim, grid)(x).numpy()
    for b in range(2):
        np.testing.assert_allclose(out[b, prefix:], complex_rope(x[b, prefix:].astype(np.float64), grid), atol=2e-5)
        np.testing.assert_array_equal(out[b, :prefix], x[b, :prefix])  # [cls] does not turn
    # the tables: token (row 1, col 2), first pair turns by row * f_0 = 1, the first column pair by col * f_0 = 2
    cos, sin = rope_2d_tables(head_dim, grid)
    assert cos.shape == (grid * grid, head_dim) and cos.dtype == np.float32
    np.testing.assert_allclose(cos[6, [0, 1, 8, 9]], np.cos([1, 1, 2, 2]), atol=1e-6)
    np.testing.assert_allclose(sin[6, [0, 1, 8, 9]], np.sin([1, 1, 2, 2]), atol=1e-6)
    with pytest.raises(ValueError, match="divisible by 4"):
        rope_2d_tables(18, 4)


def test_sincos_table_matches_mae_layout():
    table = sincos_2d_table(16, 5)
    assert table.shape == (25, 16) and table.dtype == np.float32
    np.testing.assert_allclose(table, sincos_reference(16, 5), atol=1e-6)
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d_table(18, 4)


def test_rms_norms_match_numpy():
    x = np.random.default_rng(1).normal(0, 1e-3, (2, 5, 8)).astype(np.float32)  # small: epsilon matters
    np.testing.assert_allclose(rms_norm(x).numpy(), np_rms(x.astype(np.float64), 1e-6), rtol=1e-5)
    np.testing.assert_allclose(rms_norm(x, 1e-8).numpy(), np_rms(x.astype(np.float64), 1e-8), rtol=1e-5)
    layer = rms_norm_layer("norm", QK_NORM_EPSILON)
    layer.build(x.shape)
    scale = np.random.default_rng(2).normal(size=8).astype(np.float32)
    layer.scale.assign(scale)
    np.testing.assert_allclose(layer(x).numpy(), np_rms(x.astype(np.float64), 2.0 ** -23, scale), rtol=1e-5)
    assert QK_NORM_EPSILON == 2.0 ** -23 and [w.name for w in layer.weights] == ["scale"]


def test_swiglu_matches_numpy():
    assert [swiglu_hidden_dim(c) for c in (384, 768, 1024, 1152)] == [1024, 2048, 2730, 3072]
    layer = SwiGLU(8, 6)
    x = np.random.default_rng(3).normal(size=(2, 3, 8)).astype(np.float32)
    layer.build(x.shape)
    rng = np.random.default_rng(4)
    for v in layer.weights:
        v.assign(rng.normal(size=v.shape).astype(np.float32))
    a = x @ layer.w12.kernel.numpy()[:, :6] + layer.w12.bias.numpy()[:6]  # the first half goes through SiLU
    b = x @ layer.w12.kernel.numpy()[:, 6:] + layer.w12.bias.numpy()[6:]
    expected = (silu(a) * b) @ layer.w3.kernel.numpy() + layer.w3.bias.numpy()
    assert_close_at_scale(layer(x).numpy(), expected, rtol=1e-5)  # outputs reach ~40


def test_equal_linear_multiplier_scales_output_and_gradient():
    layer = EqualLinear(5, lr_multiplier=0.01)
    x = np.random.default_rng(5).normal(size=(4, 7)).astype(np.float32)
    layer.build(x.shape)
    limit = 100 * math.sqrt(6 / (7 + 5))  # xavier-uniform with gain 1 / 0.01
    kernel = layer.kernel.numpy()
    assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > limit / 2 and not layer.bias.numpy().any()
    layer.bias.assign(np.arange(5, dtype=np.float32))
    np.testing.assert_allclose(layer(x).numpy(), x @ (0.01 * kernel) + 0.01 * np.arange(5), rtol=1e-5, atol=1e-5)
    upstream = np.random.default_rng(6).normal(size=(4, 5)).astype(np.float32)
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(layer(x) * upstream)
    grad_kernel, grad_bias = tape.gradient(y, [layer.kernel, layer.bias])
    np.testing.assert_allclose(grad_kernel.numpy(), 0.01 * x.T @ upstream, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad_bias.numpy(), 0.01 * upstream.sum(0), rtol=1e-5)


def test_unpatchify_layout_and_patch_embedding_inverse():
    grid, p, c = 3, 2, 4
    tokens = np.zeros((1, grid * grid, p * p * c), np.float32)
    for t in range(grid * grid):
        for pr in range(p):
            for pc in range(p):
                for ch in range(c):  # the value names the (row, col, p_row, p_col, channel) it came from
                    tokens[0, t, (pr * p + pc) * c + ch] = 10000 * t + 100 * pr + 10 * pc + ch
    image = unpatchify(tf.constant(tokens), p, c).numpy()
    assert image.shape == (1, 6, 6, 4)
    row, col = 2, 1
    assert image[0, row * p + 1, col * p + 0, 3] == 10000 * (row * grid + col) + 100 * 1 + 10 * 0 + 3
    # the patch-embedding conv with an identity kernel is the inverse layout
    conv = patch_embedding(p * p * c, p, c, "patch_embed")
    conv.build((None, 6, 6, c))
    conv.kernel.assign(np.eye(p * p * c, dtype=np.float32).reshape(p, p, c, p * p * c))
    embedded = tf.reshape(conv(tf.constant(image)), (1, grid * grid, p * p * c))
    np.testing.assert_array_equal(embedded.numpy(), tokens)


# ---- presets ---------------------------------------------------------------------------------------------------------

# The official models' counts (docs/fidelity.md, GAT); G's include the zero-multiplied patch-embedding conv
# (16 C + C) that we leave out
OFFICIAL = {"s": (384, 29_263_040, 32_556_160, 6_558_464), "b": (768, 116_558_144, 97_135_360, 7_344_896),
            "l": (1024, 408_486_432, 314_904_544, 7_869_184), "xl": (1152, 601_956_224, 459_252_544, 8_131_328)}


@pytest.mark.slow
def test_parameter_counts_of_every_preset():
    """Every full-size preset, built in one subprocess by tools/model_summary.py's summarize (its weights are never
    drawn: the counts come from the variables' shapes)."""
    presets = [f"gat_{s}_{p}" for s in OFFICIAL for p in (2, 4, 8)] + ["gat_demo"]
    code = ("import json, sys; import tools.model_summary as m; "
            f"print(json.dumps({{p: m.summarize(p) for p in {presets!r}}}))")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    summaries = json.loads(result.stdout.strip().splitlines()[-1])
    for size, (width, g, d, repa) in OFFICIAL.items():
        s = summaries[f"gat_{size}_2"]
        assert s["generator_params"] == g - (16 * width + width), size
        assert (s["discriminator_params"], s["repa_projector_params"]) == (d, repa), size
        assert s["generator_non_trainable_params"] == 1000 * width  # w_avg
        assert s["tokens"] == 256 and s["latent_shape"] == [32, 32, 4]
        assert s["discriminator_input_shape"] == [32, 32, 16]
        for p in (4, 8):  # only the patch-size dependent layers change
            other = summaries[f"gat_{size}_{p}"]
            assert other["tokens"] == (32 // p) ** 2
            assert other["generator_params"] - s["generator_params"] == 4 * (width + 1) * 4 * (p * p - 4)
            assert other["discriminator_params"] - s["discriminator_params"] == 16 * width * (p * p - 4)
    assert summaries["gat_xl_2"]["head_blocks"] == [6, 13, 20, 27]
    assert summaries["gat_l_2"]["head_blocks"] == [5, 11, 17, 23]
    assert summaries["gat_s_2"]["head_blocks"] == [2, 5, 8, 11]
    demo = summaries["gat_demo"]
    assert demo["latent_shape"] == [32, 32, 1] and demo["discriminator_input_shape"] == [32, 32, 4]
    assert not demo["preset_has_repa"] and summaries["gat_b_2"]["preset_has_repa"]


@pytest.mark.slow
def test_model_summary_prints_gat_counts():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "tools/model_summary.py", "--preset=gat_s_2"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert (summary["generator_params"], summary["discriminator_params"], summary["repa_projector_params"]) == (
        29_256_512, 32_556_160, 6_558_464)


def test_factories_dispatch_and_check_options():
    g, d = get_generator("gat_demo"), get_discriminator("gat_demo")
    assert isinstance(g, GATGenerator) and isinstance(d, GATDiscriminator) and g.built and d.built
    assert g.parameter_counts() == {"generator": 296_288}
    assert d.parameter_counts() == {"discriminator": 352_016, "repa_projector": 0}
    with pytest.raises(ValueError, match=r"unknown generator option\(s\) \['depths'\]") as error:
        get_generator("gat_demo", depths=2)
    assert one_line(error)
    with pytest.raises(ValueError, match="unknown discriminator preset 'gat_xxl_2'; known: .*gat_b_2.*stylegan_d_128"):
        get_discriminator("gat_xxl_2")


@pytest.mark.parametrize("kind, config, message", [
    ("g", dict(width=64, heads=3), "bad heads: 3 heads do not divide width 64"),
    ("g", dict(width=36, heads=2), "head dim divisible by 4, got 18"),
    ("g", dict(depth=6), "depth must be divisible by 4, got 6"),
    ("g", dict(resolution=9), "patch size 2 does not divide the 9x9 input"),
    ("d", dict(patch_size=3), "patch size 3 does not divide the 8x8 input"),
    ("d", dict(heads=0), "must be positive integers"),
])
def test_bad_configs_are_one_line_errors(kind, config, message):
    with pytest.raises(ValueError, match=message) as error:
        GATGenerator(**{**TINY_G, **config}) if kind == "g" else GATDiscriminator(**{**TINY_D, **config})
    assert one_line(error)


def test_bad_inputs_are_one_line_errors():
    g, d = GATGenerator(**TINY_G).build_symbolic(), GATDiscriminator(**TINY_D).build_symbolic()
    z, labels = np.zeros((2, 16), np.float32), np.array([1, 2])
    cases = [(lambda: g(np.zeros((2, 8), np.float32), labels), r"expects z of shape \[batch, 16\], got \[2, 8\]"),
             (lambda: g(z, labels[:, None]), r"labels of shape \[batch\] = \[2\], got \[2, 1\]"),
             (lambda: g.levels(z, np.array([1, 2, 3])), r"got \[3\]"),
             (lambda: d(np.zeros((2, 8, 8, 4), np.float32), labels),
              r"stacked levels of shape \[batch, 8, 8, 16\], got \[2, 8, 8, 4\]"),
             (lambda: d.forward_with_features(np.zeros((2, 8, 8), np.float32), labels), r"got \[2, 8, 8\]")]
    for call, message in cases:
        with pytest.raises(ValueError, match=message) as error:
            call()
        assert one_line(error)


# ---- the demo models -------------------------------------------------------------------------------------------------


def test_demo_forward_levels_accumulate_and_truncation():
    g, d = get_generator("gat_demo"), get_discriminator("gat_demo", repa=True)
    W = g.width
    z = np.random.default_rng(7).normal(size=(2, 64)).astype(np.float32)
    labels = np.array([3, 7])
    out = g.forward_with_features(z, labels)
    levels = out["levels"]
    assert len(levels) == 4 and all(level.shape == (2, 32, 32, 1) and level.dtype == tf.float32 for level in levels)
    assert out["hidden"].shape == (2, 256, W) and out["w"].shape == (2, W)
    np.testing.assert_allclose(g(z, labels).numpy(), levels[-1].numpy(), atol=1e-5)
    # each level adds one head's output on the hidden state of block (k + 1) * depth/4 - 1 (every block here)
    x = tf.broadcast_to(g.position_table[None], (2, 256, W))
    previous = 0.0
    for k, block in enumerate(g.blocks):
        x = block(x, out["w"], rope=g.rope)
        head = unpatchify(g.output_heads[k](x, out["w"]), 2, 1).numpy()
        np.testing.assert_allclose(levels[k].numpy() - previous, head, atol=1e-4)
        previous = levels[k].numpy()
    np.testing.assert_allclose(x.numpy(), out["hidden"].numpy(), atol=1e-5)

    features = d.forward_with_features(stack_levels(levels), labels)
    assert features["logits"].shape == (2,) and features["hidden"].shape == (2, 257, W)
    assert features["repa_cls"].shape == (2, 768) and features["repa_patches"].shape == (2, 256, 768)
    np.testing.assert_allclose(d(stack_levels(levels), labels).numpy(), features["logits"].numpy(), atol=1e-5)

    # truncation: psi 1 gives w_avg[c], psi 0.5 the midpoint; w_avg moves per class with beta 0.995
    w_avg = np.random.default_rng(8).normal(size=(10, W)).astype(np.float32)
    g.w_avg.assign(w_avg)
    np.testing.assert_allclose(g.mapping(z, labels, truncation_psi=1.0).numpy(), w_avg[labels], atol=1e-5)
    w = g.mapping(z, labels).numpy()
    np.testing.assert_allclose(g.mapping(z, labels, truncation_psi=0.5).numpy(), (w + w_avg[labels]) / 2, atol=1e-5)
    assert not np.allclose(g(z, labels, truncation_psi=1.0).numpy(), levels[-1].numpy(), atol=1e-3)
    # guidance scale 0 gives the mean of w over all classes for the same z
    every = np.stack([g.mapping(z, np.full(2, c)).numpy() for c in range(10)])
    np.testing.assert_allclose(g.mapping(z, labels, guidance_scale=0.0).numpy(), every.mean(0), atol=1e-5)

    g.w_avg.assign(np.zeros((10, W), np.float32))
    ws = np.random.default_rng(9).normal(size=(3, W)).astype(np.float32)
    g.update_w_avg(ws, np.array([1, 1, 4]))
    expected = np.zeros((10, W))
    expected[1], expected[4] = 0.005 * ws[:2].mean(0), 0.005 * ws[2]
    np.testing.assert_allclose(g.w_avg.numpy(), expected, rtol=1e-4, atol=1e-7)
    g.update_w_avg(ws[:1], np.array([4]))
    expected[4] = 0.995 * expected[4] + 0.005 * ws[0]
    np.testing.assert_allclose(g.w_avg.numpy(), expected, rtol=1e-4, atol=1e-7)
    assert not g.w_avg.trainable and all(v is not g.w_avg for v in g.trainable_variables)


def test_mixed_precision_gradients_are_finite():
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        g, d = GATGenerator(**TINY_G).build_symbolic(), GATDiscriminator(**TINY_D).build_symbolic()
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    z, labels = tf.random.normal((2, 16)), tf.constant([1, 2])
    with tf.GradientTape() as tape:
        out = d.forward_with_features(stack_levels(g.levels(z, labels)), labels)
        loss = tf.reduce_sum(out["logits"]) + tf.reduce_sum(out["repa_cls"])
    assert out["logits"].dtype == tf.float32 and out["hidden"].dtype == tf.bfloat16
    grads = tape.gradient(loss, g.trainable_variables + d.trainable_variables)
    assert all(grad is not None and np.isfinite(tf.convert_to_tensor(grad).numpy()).all() for grad in grads)


# ---- official weights ----------------------------------------------------------------------------------------------


def test_weight_maps_name_every_official_tensor():
    g, d = GATGenerator(**TINY_G).build_symbolic(), GATDiscriminator(**TINY_D).build_symbolic()
    assert sorted([*official_weight_map(g), *official_unused_tensors(g)]) == generator_names(4)
    assert sorted([*official_weight_map(d), *official_unused_tensors(d)]) == discriminator_names(4, repa=True)
    d_plain = GATDiscriminator(**{**TINY_D, "repa": False}).build_symbolic()
    assert sorted([*official_weight_map(d_plain), *official_unused_tensors(d_plain)]) == discriminator_names(4, False)
    shapes = {n: file_shape(v, p) for n, (v, p) in official_weight_map(g).items()}
    assert shapes["blocks.0.attn.qkv.weight"] == (192, 64) and shapes["blocks.0.mlp.w12.weight"] == (2 * 170, 64)
    assert shapes["latent_embedder.0.weight"] == (64, 32) and shapes["final_layers.3.linear.weight"] == (16, 64)
    assert official_unused_tensors(g)["x_embedder.proj.weight"][0] == (64, 4, 2, 2)
    assert file_shape(*official_weight_map(d)["x_embedder.proj.weight"]) == (64, 16, 2, 2)


def test_generator_loader_round_trip_and_numpy_forward(tmp_path):
    tensors = official_tensors(GATGenerator(**TINY_G).build_symbolic(), seed=10)
    path = tmp_path / "g.safetensors"
    safetensors.numpy.save_file(tensors, str(path))
    g = load_official_weights(GATGenerator(**TINY_G), path)  # built by the loader
    for name, (variable, perm) in official_weight_map(g).items():
        expected = tensors[name] if perm is None else np.transpose(tensors[name], perm)
        np.testing.assert_array_equal(variable.numpy(), expected, err_msg=name)
    np.testing.assert_array_equal(g.mapping_layers[0].kernel.numpy()[3, 5], tensors["latent_embedder.0.weight"][5, 3])
    z = np.random.default_rng(11).normal(size=(2, 16)).astype(np.float32)
    labels = np.array([4, 9])
    out = g.forward_with_features(z, labels)
    for b in range(2):
        levels, w, hidden = Official(tensors).generator(z[b].astype(np.float64), labels[b], 4, 2, 2, 4)
        np.testing.assert_allclose(out["w"].numpy()[b], w, rtol=1e-4, atol=1e-5)
        assert_close_at_scale(out["hidden"].numpy()[b], hidden)
        assert_close_at_scale(np.stack([lv.numpy()[b] for lv in out["levels"]]), levels)
    # the official truncation, w.lerp(w_avg[c], psi), with the loaded w_avg
    w_plain = g.mapping(z, labels).numpy()
    np.testing.assert_allclose(g.mapping(z, labels, truncation_psi=0.7).numpy(),
                               w_plain + 0.7 * (tensors["w_avg"][labels] - w_plain), rtol=1e-5, atol=1e-5)


def test_discriminator_loader_round_trip_and_numpy_forward(tmp_path):
    tensors = official_tensors(GATDiscriminator(**TINY_D).build_symbolic(), seed=12)
    path = tmp_path / "d.safetensors"
    safetensors.numpy.save_file(tensors, str(path))
    d = load_official_weights(GATDiscriminator(**TINY_D), path)
    for name, (variable, perm) in official_weight_map(d).items():
        expected = tensors[name] if perm is None else np.transpose(tensors[name], perm)
        np.testing.assert_array_equal(variable.numpy(), expected, err_msg=name)
    np.testing.assert_array_equal(d.patch_embed.kernel.numpy()[1, 0, 13, 5],
                                  tensors["x_embedder.proj.weight"][5, 13, 1, 0])
    stacked = np.random.default_rng(13).normal(size=(2, 8, 8, 16)).astype(np.float32)
    labels = np.array([0, 6])
    out = d.forward_with_features(stacked, labels)
    for b in range(2):
        logit, hidden, repa_cls, repa_patches = Official(tensors).discriminator(stacked[b].astype(np.float64),
                                                                                labels[b], 4, 2, 2)
        assert_close_at_scale(out["hidden"].numpy()[b], hidden)
        assert_close_at_scale(out["logits"].numpy()[b], logit)
        assert_close_at_scale(out["repa_cls"].numpy()[b], repa_cls)
        assert_close_at_scale(out["repa_patches"].numpy()[b], repa_patches)


@pytest.mark.parametrize("change, message", [
    ("missing", "missing 1 tensor(s): 'blocks.3.mlp.w3.bias'"),
    ("missing_unused", "missing 1 tensor(s): 'x_embedder.proj.weight'"),
    ("extra", "1 unexpected tensor(s): 'blocks.4.attn.qkv.weight'"),
    ("shape", "'blocks.0.mlp.w12.weight' expected (340, 64), got (64, 340)"),
    ("table", "'pos_embed' differs from this model's fixed table"),
])
def test_generator_loader_errors_name_the_tensor(tmp_path, change, message):
    tensors = official_tensors(GATGenerator(**TINY_G).build_symbolic())
    if change == "missing":
        del tensors["blocks.3.mlp.w3.bias"]
    elif change == "missing_unused":
        del tensors["x_embedder.proj.weight"]
    elif change == "extra":
        tensors["blocks.4.attn.qkv.weight"] = np.zeros((192, 64), np.float32)
    elif change == "shape":
        tensors["blocks.0.mlp.w12.weight"] = tensors["blocks.0.mlp.w12.weight"].T.copy()
    else:
        tensors["pos_embed"] = tensors["pos_embed"][:, ::-1].copy()  # tokens in the other order
    path = tmp_path / "bad.safetensors"
    safetensors.numpy.save_file(tensors, str(path))
    with pytest.raises(ValueError) as error:
        load_official_weights(GATGenerator(**TINY_G), path)
    assert message in str(error.value) and one_line(error)


def test_discriminator_loader_needs_repa_for_a_file_with_the_projector(tmp_path):
    path = tmp_path / "d.safetensors"
    safetensors.numpy.save_file(official_tensors(GATDiscriminator(**TINY_D).build_symbolic()), str(path))
    with pytest.raises(ValueError, match=r"6 unexpected tensor\(s\): 'proj.0.bias'.*repa=True") as error:
        load_official_weights(GATDiscriminator(**{**TINY_D, "repa": False}), path)
    assert one_line(error)
    with pytest.raises(ValueError, match="GATGenerator or GATDiscriminator"):
        official_weight_map(keras.layers.Dense(3))
    not_safetensors = tmp_path / "g.pt"
    not_safetensors.write_bytes(b"PK\x03\x04 a torch zip archive")
    with pytest.raises(ValueError, match="cannot read GAT weights .*g.pt") as error:
        load_official_weights(GATGenerator(**TINY_G), not_safetensors)
    assert one_line(error)

"""DINOv2 ViT-B/14 for REPA: parameter count and shapes, PyTorch's bicubic resize matrix, the antialiased
position-table resampling, the Hugging Face safetensors loader, and a small config against a NumPy forward."""

import math

import numpy as np
import pytest
import safetensors.numpy
import tensorflow as tf

from hit.models.dinov2 import (DINOv2, IMAGENET_MEAN, IMAGENET_STD, bicubic_matrix, preprocess,
                               resample_position_embeddings)
from hit.models.weights.dinov2_hf import hf_weight_map, load_dinov2, load_weights
from hit.models.weights.state_dict import file_shape

# Same naming as dinov2-base; a 3x3 position table resampled to the 2x2 grid of a 28 px input.
SMALL = dict(image_size=28, patch_size=14, width=64, depth=2, heads=4, mlp_ratio=4, position_grid=3)


@pytest.fixture(scope="module")
def base():
    return DINOv2()


def torch_bicubic_resize_slow(signal, out_size, a=-0.75):
    """PyTorch's upsample_bicubic (align_corners=False), one output pixel at a time, on axis 0 of `signal`."""
    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    in_size = signal.shape[0]
    out = np.zeros((out_size,) + signal.shape[1:])
    for dst in range(out_size):
        src = (dst + 0.5) * in_size / out_size - 0.5
        base = math.floor(src)
        t = src - base
        coefficients = (far(t + 1), near(t), near(1 - t), far(2 - t))
        for tap, weight in zip(range(base - 1, base + 3), coefficients):
            out[dst] += weight * signal[min(max(tap, 0), in_size - 1)]
    return out


def resize_2d_slow(image, size):
    """[H, W, C] -> [size, size, C] with the slow resize, rows then columns."""
    rows = torch_bicubic_resize_slow(image, size)
    return np.swapaxes(torch_bicubic_resize_slow(np.swapaxes(rows, 0, 1), size), 0, 1)


def antialiased_bicubic_matrix_slow(in_size, out_size, a=-0.5):
    """PyTorch's bicubic with antialias=True (PIL's resampling), the resample timm uses for position tables:
    the kernel is widened by the downscale factor and the weights in range are normalised to sum 1."""
    def kernel(x):
        x = abs(x)
        return ((a + 2) * x - (a + 3)) * x * x + 1 if x < 1 else (((x - 5) * x + 8) * x * a - 4 * a if x < 2 else 0.0)

    scale = in_size / out_size
    support, inv = 2.0 * max(scale, 1.0), 1.0 / max(scale, 1.0)
    matrix = np.zeros((out_size, in_size))
    for i in range(out_size):
        center = scale * (i + 0.5)
        lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), in_size)
        weights = np.array([kernel((j - center + 0.5) * inv) for j in range(lo, hi)])
        matrix[i, lo:hi] = weights / weights.sum()
    return matrix


def random_file_tensors(model, seed=0):
    """Random tensors in the file's layout for every name the loader expects."""
    rng = np.random.default_rng(seed)
    return {name: rng.normal(0, 0.3, file_shape(v, perm)).astype(np.float32)
            for name, (v, perm) in hf_weight_map(model).items()}


def brief_names(depth):
    """The Hugging Face Dinov2Model tensor names, written out independently of the loader's map."""
    names = ["embeddings.cls_token", "embeddings.mask_token", "embeddings.position_embeddings",
             "embeddings.patch_embeddings.projection.weight", "embeddings.patch_embeddings.projection.bias",
             "layernorm.weight", "layernorm.bias"]
    per_layer = ["norm1", "attention.attention.query", "attention.attention.key", "attention.attention.value",
                 "attention.output.dense", "norm2", "mlp.fc1", "mlp.fc2"]
    for i in range(depth):
        names += [f"encoder.layer.{i}.{m}.{p}" for m in per_layer for p in ("weight", "bias")]
        names += [f"encoder.layer.{i}.layer_scale1.lambda1", f"encoder.layer.{i}.layer_scale2.lambda1"]
    return sorted(names)


def test_base_parameter_count_and_file_layout(base):
    assert sum(int(np.prod(v.shape)) for v in base.weights) == 86_580_480
    shapes = {name: file_shape(v, perm) for name, (v, perm) in hf_weight_map(base).items()}
    assert sorted(shapes) == brief_names(12) and len(shapes) == 223
    assert shapes["embeddings.cls_token"] == (1, 1, 768)
    assert shapes["embeddings.mask_token"] == (1, 768)
    assert shapes["embeddings.position_embeddings"] == (1, 37 * 37 + 1, 768)
    assert shapes["embeddings.patch_embeddings.projection.weight"] == (768, 3, 14, 14)
    assert shapes["encoder.layer.11.attention.attention.query.weight"] == (768, 768)
    assert shapes["encoder.layer.11.mlp.fc1.weight"] == (3072, 768)
    assert shapes["encoder.layer.11.mlp.fc2.weight"] == (768, 3072)
    assert shapes["encoder.layer.0.layer_scale1.lambda1"] == (768,)
    assert base.projection.kernel.shape == (14, 14, 3, 768) and base.projection.strides == (14, 14)
    assert all(n.epsilon == 1e-6 for n in [base.layernorm] + [b.norm1 for b in base.blocks])


def test_base_features_shapes(base):
    images = np.random.default_rng(0).integers(0, 256, (1, 256, 256, 3), dtype=np.uint8)
    cls, patches = base.features(images)
    assert cls.shape == (1, 768) and patches.shape == (1, 256, 768) and cls.dtype == tf.float32
    assert np.isfinite(patches.numpy()).all()
    assert base.position_table.shape == (1, 257, 768)
    # the final LayerNorm's output (gamma 1, beta 0 at init): zero mean, unit variance per token
    np.testing.assert_allclose(patches.numpy().mean(-1), 0, atol=1e-4)
    np.testing.assert_allclose(cls.numpy().std(-1), 1, atol=1e-3)


@pytest.mark.parametrize("in_size, out_size", [(256, 224), (10, 7), (7, 10), (5, 5), (1, 3), (3, 1)])
def test_bicubic_matrix_matches_slow_pytorch_bicubic(in_size, out_size):
    matrix = bicubic_matrix(in_size, out_size)
    assert matrix.shape == (out_size, in_size) and matrix.dtype == np.float32
    np.testing.assert_allclose(matrix, torch_bicubic_resize_slow(np.eye(in_size), out_size), atol=1e-6)
    np.testing.assert_allclose(matrix.sum(axis=1), 1, atol=1e-6)


def test_bicubic_matrix_known_values_and_errors():
    # 8 -> 16: src = dst / 2 - 0.25. dst 5: src 2.25, taps 1..4 at distances 1.25, 0.25, 0.75, 1.75 with A = -0.75
    np.testing.assert_allclose(bicubic_matrix(8, 16)[5], [0, -0.10546875, 0.87890625, 0.26171875, -0.03515625, 0, 0, 0],
                               atol=1e-7)
    # dst 2: src 0.75, taps -1..2; tap -1 is clamped onto pixel 0, which gets -0.03515625 + 0.26171875
    np.testing.assert_allclose(bicubic_matrix(8, 16)[2], [0.2265625, 0.87890625, -0.10546875, 0, 0, 0, 0, 0], atol=1e-7)
    np.testing.assert_allclose(bicubic_matrix(6, 6), np.eye(6), atol=1e-7)
    with pytest.raises(ValueError, match="positive integers"):
        bicubic_matrix(0, 4)


def test_tf_bicubic_is_not_pytorch_bicubic():
    image = np.random.default_rng(1).uniform(0, 1, (1, 256, 256, 3)).astype(np.float32)
    matrix = bicubic_matrix(256, 224)
    ours = np.einsum("oh,pw,bhwc->bopc", matrix, matrix, image, optimize=True)
    for antialias in (False, True):
        tf_bicubic = tf.image.resize(image, (224, 224), method="bicubic", antialias=antialias).numpy()
        assert np.abs(tf_bicubic - ours).max() > 1e-2


def test_preprocess_matches_slow_reference_and_order_commutes():
    images = np.random.default_rng(2).integers(0, 256, (2, 20, 30, 3), dtype=np.uint8)
    out = preprocess(images, size=28).numpy()
    assert out.shape == (2, 28, 28, 3) and out.dtype == np.float32
    normalised = (images / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(out, np.stack([resize_2d_slow(image, 28) for image in normalised]), atol=1e-5)
    # resize-then-normalise is the same affine map (rows of the matrices sum to 1): equal up to rounding
    resized = np.stack([resize_2d_slow(image / 255.0, 28) for image in images])
    np.testing.assert_allclose(out, (resized - IMAGENET_MEAN) / IMAGENET_STD, atol=1e-5)
    with pytest.raises(ValueError, match="uint8") as error:
        preprocess(images.astype(np.float32))
    assert "\n" not in str(error.value)


def test_position_table_resampling_is_antialiased_bicubic():
    table = np.random.default_rng(3).normal(size=(1, 1 + 37 * 37, 8)).astype(np.float32)
    out = resample_position_embeddings(table, 16).numpy()
    assert out.shape == (1, 257, 8)
    np.testing.assert_array_equal(out[:, 0], table[:, 0])
    grid = table[:, 1:].reshape(1, 37, 37, 8)
    tf_resized = tf.image.resize(grid, (16, 16), method="bicubic", antialias=True).numpy().reshape(1, 256, 8)
    np.testing.assert_allclose(out[:, 1:], tf_resized, atol=1e-6)
    # and that is PyTorch's antialiased bicubic (timm's resample_abs_pos_embed), written out independently
    matrix = antialiased_bicubic_matrix_slow(37, 16)
    np.testing.assert_allclose(out[0, 1:].reshape(16, 16, 8), np.einsum("oh,pw,hwc->opc", matrix, matrix, grid[0]),
                               atol=1e-5)
    plain = tf.image.resize(grid, (16, 16), method="bicubic", antialias=False).numpy().reshape(1, 256, 8)
    assert np.abs(out[:, 1:] - plain).max() > 0.1
    np.testing.assert_array_equal(resample_position_embeddings(table, 37).numpy(), table)


def test_loader_round_trips_every_weight(tmp_path):
    model = DINOv2(**SMALL)
    tensors = random_file_tensors(model)
    path = tmp_path / "dinov2.safetensors"
    safetensors.numpy.save_file(tensors, str(path))
    loaded = load_dinov2(path, **SMALL)
    assert not loaded.trainable_weights and len(loaded.weights) == len(tensors)
    mapping = hf_weight_map(loaded)
    assert sorted(mapping) == brief_names(2)
    for name, (variable, perm) in mapping.items():
        expected = tensors[name] if perm is None else np.transpose(tensors[name], perm)
        np.testing.assert_array_equal(variable.numpy(), expected, err_msg=name)
    np.testing.assert_array_equal(loaded.projection.kernel.numpy()[1, 2, 0, 5],
                                  tensors["embeddings.patch_embeddings.projection.weight"][5, 0, 1, 2])
    np.testing.assert_array_equal(loaded.blocks[1].fc1.kernel.numpy()[3, 7],
                                  tensors["encoder.layer.1.mlp.fc1.weight"][7, 3])
    positions = tensors["embeddings.position_embeddings"]
    np.testing.assert_allclose(loaded.position_table.numpy(), resample_position_embeddings(positions, 2).numpy())
    assert loaded.position_embeddings.shape == (1, 10, 64) and loaded.position_table.shape == (1, 5, 64)


@pytest.mark.parametrize("change, message", [
    ("missing", "missing 1 tensor(s): 'encoder.layer.1.mlp.fc2.bias'"),
    ("extra", "1 unexpected tensor(s): 'encoder.layer.2.norm1.weight'"),
    ("shape", "'encoder.layer.0.mlp.fc1.weight' expected (256, 64), got (64, 256)"),
    ("mask", "'embeddings.mask_token' expected (1, 64), got (1, 1, 64)"),
])
def test_loader_errors_name_the_tensor(tmp_path, change, message):
    model = DINOv2(**SMALL)
    tensors = random_file_tensors(model)
    if change == "missing":
        del tensors["encoder.layer.1.mlp.fc2.bias"]
    elif change == "extra":
        tensors["encoder.layer.2.norm1.weight"] = np.ones(64, np.float32)
    elif change == "shape":
        tensors["encoder.layer.0.mlp.fc1.weight"] = tensors["encoder.layer.0.mlp.fc1.weight"].T.copy()
    else:
        tensors["embeddings.mask_token"] = tensors["embeddings.mask_token"][None]
    path = tmp_path / "bad.safetensors"
    safetensors.numpy.save_file(tensors, str(path))
    with pytest.raises(ValueError) as error:
        load_dinov2(path, **SMALL)
    assert message in str(error.value) and "\n" not in str(error.value)


def numpy_layer_norm(x, gamma, beta):
    mean = x.mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + 1e-6) * gamma + beta


def numpy_forward(t, pixels, depth, heads, grid):
    """DINOv2 on normalised pixels [H, W, 3] from the file tensors `t` (PyTorch layouts), float64."""
    t = {k: v.astype(np.float64) for k, v in t.items()}
    weight = t["embeddings.patch_embeddings.projection.weight"]  # [O, I, p, p]
    width, _, p, _ = weight.shape
    patches = [pixels[r * p:(r + 1) * p, c * p:(c + 1) * p] for r in range(grid) for c in range(grid)]
    x = np.stack([np.einsum("oiyx,yxi->o", weight, patch) for patch in patches])
    x = x + t["embeddings.patch_embeddings.projection.bias"]
    x = np.concatenate([t["embeddings.cls_token"][0], x])
    table = t["embeddings.position_embeddings"][0]
    g_in = int(round(math.sqrt(len(table) - 1)))
    m = antialiased_bicubic_matrix_slow(g_in, grid)
    resampled = np.einsum("oh,pw,hwc->opc", m, m, table[1:].reshape(g_in, g_in, width)).reshape(-1, width)
    x = x + np.concatenate([table[:1], resampled])
    erf = np.vectorize(math.erf)
    hd = width // heads
    for i in range(depth):
        layer = {k[len(f"encoder.layer.{i}."):]: v for k, v in t.items() if k.startswith(f"encoder.layer.{i}.")}

        def lin(name, v):
            return v @ layer[f"{name}.weight"].T + layer[f"{name}.bias"]

        h = numpy_layer_norm(x, layer["norm1.weight"], layer["norm1.bias"])
        q, k, v = (lin(f"attention.attention.{f}", h) for f in ("query", "key", "value"))
        heads_out = []
        for j in range(heads):
            s = slice(j * hd, (j + 1) * hd)
            scores = q[:, s] @ k[:, s].T / math.sqrt(hd)
            a = np.exp(scores - scores.max(-1, keepdims=True))
            heads_out.append((a / a.sum(-1, keepdims=True)) @ v[:, s])
        x = x + layer["layer_scale1.lambda1"] * lin("attention.output.dense", np.concatenate(heads_out, 1))
        h = lin("mlp.fc1", numpy_layer_norm(x, layer["norm2.weight"], layer["norm2.bias"]))
        h = 0.5 * h * (1 + erf(h / math.sqrt(2)))
        x = x + layer["layer_scale2.lambda1"] * lin("mlp.fc2", h)
    return numpy_layer_norm(x, t["layernorm.weight"], t["layernorm.bias"])


def test_small_config_matches_numpy_forward():
    model = DINOv2(**SMALL)
    tensors = random_file_tensors(model, seed=5)
    load_weights(model, tensors)
    images = np.random.default_rng(6).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    cls, patches = model.features(images)
    assert cls.shape == (2, 64) and patches.shape == (2, 4, 64)
    for b in range(2):
        pixels = resize_2d_slow((images[b] / 255.0 - IMAGENET_MEAN) / IMAGENET_STD, 28)
        expected = numpy_forward(tensors, pixels, depth=2, heads=4, grid=2)
        np.testing.assert_allclose(cls.numpy()[b], expected[0], atol=1e-4)
        np.testing.assert_allclose(patches.numpy()[b], expected[1:], atol=1e-4)


def test_config_and_input_errors():
    with pytest.raises(ValueError, match="bad DINOv2 config"):
        DINOv2(image_size=30, patch_size=14)
    model = DINOv2(**SMALL)
    with pytest.raises(ValueError, match=r"expects pixels of shape \[batch, 28, 28, 3\], got \[1, 32, 32, 3\]"):
        model(np.zeros((1, 32, 32, 3), np.float32))

"""Einsum attention (Alg. 2, Sec. 3.3) against a slow per-position softmax reference in numpy.

The reference works in image coordinates: a pixel's regional keys are the pixels of its p x p block, its
dilated keys the pixels at the same offset inside every block (stride p). It never calls the blocking code,
so these tests also pin the blocking convention that gives the two axes their meaning.
"""

import numpy as np
import pytest
import tensorflow as tf

from hit.layers.attention import CrossAttention, MultiAxisAttention
from hit.layers.attention import DILATED, GLOBAL, REGIONAL
from hit.layers.blocking import block_images, unblock_images


def _weights(layer):
    q, k, v, o = layer.query, layer.key, layer.value, layer.output_projection
    return [w.numpy().astype(np.float64) for w in (q.kernel, q.bias, k.kernel, k.bias, v.kernel, v.bias,
                                                   o.kernel, o.bias)]


def _softmax_attend(query, keys, values):
    logits = keys @ query
    weights = np.exp(logits - logits.max())
    return (weights / weights.sum()) @ values


def _project_heads(x, kernel, bias, num_heads, multi_query):
    """x (..., C) -> (..., heads, d); a multi-query projection is repeated to every head."""
    if multi_query:
        return np.repeat((x @ kernel + bias)[..., None, :], num_heads, axis=-2)
    return np.einsum("...c,chd->...hd", x, kernel) + bias


def _key_mask(kind, i, j, height, width, p):
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    if kind == REGIONAL:
        return (rows // p == i // p) & (cols // p == j // p)
    if kind == DILATED:
        return (rows % p == i % p) & (cols % p == j % p)
    return np.ones((height, width), bool)


def reference_self_attention(image, weights, num_heads, head_axes, p, multi_query):
    """Loops over batch, head and query pixel; the heads are split evenly over head_axes in order."""
    wq, bq, wk, bk, wv, bv, wo, bo = weights
    b_size, height, width, _ = image.shape
    d = wq.shape[-1]
    q = np.einsum("bhwc,cnd->bhwnd", image, wq) + bq
    k = _project_heads(image, wk, bk, num_heads, multi_query)
    v = _project_heads(image, wv, bv, num_heads, multi_query)
    out = np.zeros(q.shape)
    per_group = num_heads // len(head_axes)
    for b in range(b_size):
        for h in range(num_heads):
            kind = head_axes[h // per_group]
            for i in range(height):
                for j in range(width):
                    mask = _key_mask(kind, i, j, height, width, p)
                    query = q[b, i, j, h] / np.sqrt(d)
                    out[b, i, j, h] = _softmax_attend(query, k[b][mask][:, h], v[b][mask][:, h])
    return np.einsum("bhwnd,ndc->bhwc", out, wo) + bo


@pytest.mark.parametrize("multi_query", [True, False], ids=["mqa", "mha"])
@pytest.mark.parametrize("head_axes", [(REGIONAL, DILATED), (REGIONAL,), (DILATED,), (GLOBAL,)],
                         ids=["multi_axis", "regional", "dilated", "global"])
def test_blocked_self_attention_matches_slow_reference(head_axes, multi_query):
    height, width, p, channels, heads = 8, 8, 4, 12, 4
    image = tf.random.normal([2, height, width, channels])
    layer = MultiAxisAttention(channels, heads, head_axes=head_axes, multi_query=multi_query)
    out = unblock_images(layer(block_images(image, p)), height, width).numpy()
    for w in layer.weights:  # random biases too, so a missing bias term cannot hide
        w.assign(tf.random.normal(w.shape, stddev=0.3))
    out = unblock_images(layer(block_images(image, p)), height, width).numpy()
    image64 = image.numpy().astype(np.float64)
    ref = reference_self_attention(image64, _weights(layer), heads, head_axes, p, multi_query)
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)


def test_regional_and_dilated_heads_really_differ():
    # Guard against a reference that is blind to the axis: the two single-axis layers disagree.
    image = block_images(tf.random.normal([1, 8, 8, 8]), 4)
    regional = MultiAxisAttention(8, 2, head_axes=(REGIONAL,))
    dilated = MultiAxisAttention(8, 2, head_axes=(DILATED,))
    regional(image)
    dilated(image)
    for a, b in zip(regional.weights, dilated.weights):
        b.assign(a)
    assert np.abs(regional(image).numpy() - dilated(image).numpy()).max() > 1e-3


@pytest.mark.parametrize("multi_query", [True, False], ids=["mqa", "mha"])
def test_cross_attention_matches_slow_reference(multi_query):
    heads, channels, token_channels = 4, 8, 12
    x = tf.random.normal([2, 3, 5, channels])
    tokens = tf.random.normal([2, 16, token_channels])
    layer = CrossAttention(channels, heads, multi_query=multi_query)
    layer(x, tokens)
    for w in layer.weights:
        w.assign(tf.random.normal(w.shape, stddev=0.3))
    out = layer(x, tokens).numpy()
    wq, bq, wk, bk, wv, bv, wo, bo = _weights(layer)
    x64, t64 = x.numpy().astype(np.float64), tokens.numpy().astype(np.float64)
    q = np.einsum("bmnc,chd->bmnhd", x64, wq) + bq
    k = _project_heads(t64, wk, bk, heads, multi_query)
    v = _project_heads(t64, wv, bv, heads, multi_query)
    ref = np.zeros(q.shape)
    for b in range(2):
        for m in range(3):
            for n in range(5):
                for h in range(heads):
                    query = q[b, m, n, h] / np.sqrt(channels // heads)
                    ref[b, m, n, h] = _softmax_attend(query, k[b, :, h], v[b, :, h])
    ref = np.einsum("bmnhd,hdc->bmnc", ref, wo) + bo
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)


def test_multi_query_shares_one_key_and_value_head():
    layer = MultiAxisAttention(16, 4)
    layer(tf.zeros([1, 4, 4, 16]))
    assert layer.query.kernel.shape == (16, 4, 4)
    assert layer.key.kernel.shape == (16, 4) and layer.value.kernel.shape == (16, 4)
    assert layer.output_projection.kernel.shape == (4, 4, 16)
    assert [w.shape for w in (layer.query.bias, layer.key.bias, layer.output_projection.bias)] == [(4, 4), (4,), (16,)]


def test_bad_heads_are_one_line_errors():
    with pytest.raises(ValueError, match=r"3 heads cannot be split evenly over 2 attention axes"):
        MultiAxisAttention(12, 3)
    with pytest.raises(ValueError, match=r"5 heads do not divide 12 channels"):
        CrossAttention(12, 5)
    layer = MultiAxisAttention(8, 2)
    with pytest.raises(ValueError, match=r"expected a \[batch, M, N, 8\] query"):
        layer(tf.zeros([1, 4, 4, 6]))

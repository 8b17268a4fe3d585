"""DiffAugment for bCR (official hit-gan utils/diff_augment.py) and for GAT's latents (official GAT
losses/diffaug.py) in core TensorFlow: stateless, static shapes, XLA-compilable.

Images are NHWC floats in [-1, 1]. The official policy "color,translation,cutout" does, per sample, in this order:
    brightness   x + U(-0.5, 0.5)
    saturation   mean_c + (x - mean_c) * U(0, 2),          mean_c = per-pixel mean over channels
    contrast     mean_a + (x - mean_a) * U(0.5, 1.5),      mean_a = per-sample mean over H, W, C
    translation  out[i, j] = x[i - dy, j - dx], 0 outside; dy, dx integers in [-s, s], s = round(0.125 * size)
    cutout       a round(0.5 * H) x round(0.5 * W) rectangle around a uniform integer center, clipped, set to 0;
                 the center row is in [0, H] for an even side, [0, H - 1] for an odd one (columns alike)
"flip" (mirror with probability 0.5) runs last and only when the policy names it: the paper mentions flips but
the official policy has none. Nothing is clipped afterwards, as in the official code; 0 is mid-gray.

GAT (official GAT losses/diffaug.py) applies "color,translation,cutout,flip" to 4-channel latents with flip
probability 0.4 and its own colour op, `rand_brightness_saturation_contrast` (p = 0.5): one coin per sample
(`color_mask`); a chosen sample gets all three, the others none, and both means are those of the op's INPUT (before
the brightness shift):
    y = x + b;  y = m_s + (y - m_s) * s;  y = m_c + (y - m_c) * c;  out = y where color_mask else x
with m_s = mean over channels of x, m_c = mean over H, W, C of x. Parameters drawn for one input are re-applied to
others (GAT's lower levels, the perturbed inputs of aR1 / aR2) with the STORED means, as the official code does:
`with_input_means` stores them (saturation_mean [B, H, W, 1], contrast_mean [B, 1, 1, 1]), and apply_augment uses
stored means when present.

Each op's parameters are drawn apart from its application, so they can be replayed (docs/architecture.md,
"Seeds"). `draw_augment_params` returns per-sample tensors (axis 0 is the sample), `apply_augment` applies them,
and `slice_params` cuts one replica's rows out of parameters drawn for the global batch.

Every draw is a pure function of a [2] integer seed, bit-identical with and without `jit_compile=True`: Philox
and floats from 24 random integer bits (hit.core.seeds explains why).
"""

import tensorflow as tf

from hit.core.seeds import RNG, stateless_uniform

DEFAULT_POLICY = "color,translation,cutout"
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5
# Policy op -> the parameters it draws.
_POLICY_OPS = {
    "color": ("brightness", "saturation", "contrast"),
    "translation": ("translation",),
    "cutout": ("cutout_center",),
    "flip": ("flip",),
}
# Canonical order of application. A parameter's position is also its fold-in index, so adding or removing an op
# never changes what the others draw.
_ORDER = ("brightness", "saturation", "contrast", "translation", "cutout_center", "flip")
_COLOR_MASK_FOLD = len(_ORDER)  # folded into the brightness seed: GAT's colour coin
_MEANS = ("saturation_mean", "contrast_mean")  # GAT's colour op: the means of the input it was drawn for
_KNOWN = _ORDER + ("color_mask",) + _MEANS


def _images(x):
    x = tf.convert_to_tensor(x)
    if x.shape.rank != 4 or x.shape[1] is None or x.shape[2] is None or not x.dtype.is_floating:
        raise ValueError(
            f"DiffAugment expects float [batch, H, W, C] images with static H and W, got {x.dtype.name} {x.shape}"
        )
    return x


def _per_sample(values, x):
    """[B] parameters -> [B, 1, 1, 1] in the image dtype."""
    return tf.reshape(tf.cast(values, x.dtype), [-1, 1, 1, 1])


def _inside(index, low, high):
    return (index >= low) & (index < high)


def _scaled(size, ratio):
    """round(ratio * size) with halves rounded up; no half occurs for sizes divisible by 8."""
    return int(size * ratio + 0.5)


def cutout_size(height, width):
    """Side lengths (rows, cols) of the cutout rectangle: round(0.5 * H), round(0.5 * W)."""
    return _scaled(height, CUTOUT_RATIO), _scaled(width, CUTOUT_RATIO)


def cutout_center_range(height, width):
    """Largest cutout center (row, col). The official draw is uniform in [0, H + 1 - h % 2): [0, H] inclusive
    when the side h is even (a center one past the last row still cuts h // 2 rows), [0, H - 1] when odd."""
    size_h, size_w = cutout_size(height, width)
    return height - size_h % 2, width - size_w % 2


def max_translation(height, width):
    """Largest shift (rows, cols): round(0.125 * H), round(0.125 * W)."""
    return _scaled(height, TRANSLATION_RATIO), _scaled(width, TRANSLATION_RATIO)


def adjust_brightness(x, delta):
    """x + delta, with `delta` [B] (drawn from U(-0.5, 0.5))."""
    x = _images(x)
    return x + _per_sample(delta, x)


def adjust_saturation(x, factor):
    """Scales each pixel's deviation from its mean over channels by `factor` [B] (drawn from U(0, 2))."""
    x = _images(x)
    mean = tf.reduce_mean(x, axis=3, keepdims=True)
    return mean + (x - mean) * _per_sample(factor, x)


def adjust_contrast(x, factor):
    """Scales each sample's deviation from its mean over H, W, C by `factor` [B] (drawn from U(0.5, 1.5))."""
    x = _images(x)
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    return mean + (x - mean) * _per_sample(factor, x)


def translate(x, shift):
    """out[b, i, j] = x[b, i - dy, j - dx] where that pixel exists, else 0; `shift` is [B, 2] integers (dy, dx)."""
    x = _images(x)
    _, height, width, _ = x.shape
    shift = tf.cast(shift, tf.int32)
    rows = tf.range(height)[None, :] - shift[:, :1]  # [B, H]: the source row of each output row
    cols = tf.range(width)[None, :] - shift[:, 1:]  # [B, W]
    x = tf.gather(x, tf.clip_by_value(rows, 0, height - 1), axis=1, batch_dims=1)
    x = tf.gather(x, tf.clip_by_value(cols, 0, width - 1), axis=2, batch_dims=1)
    found = _inside(rows, 0, height)[:, :, None] & _inside(cols, 0, width)[:, None, :]
    return tf.where(found[..., None], x, tf.zeros([], x.dtype))


def cutout(x, center, size):
    """Sets to 0 the rows [cy - h // 2, cy - h // 2 + h) x cols [cx - w // 2, cx - w // 2 + w), clipped.

    `center` is [B, 2] integers (cy, cx); `size` is (h, w) or one int for a square.
    """
    x = _images(x)
    _, height, width, _ = x.shape
    size_h, size_w = (size, size) if isinstance(size, int) else size
    center = tf.cast(center, tf.int32)
    top, left = center[:, :1] - size_h // 2, center[:, 1:] - size_w // 2
    in_rows = _inside(tf.range(height)[None, :], top, top + size_h)  # [B, H]
    in_cols = _inside(tf.range(width)[None, :], left, left + size_w)  # [B, W]
    hole = in_rows[:, :, None] & in_cols[:, None, :]
    return tf.where(hole[..., None], tf.zeros([], x.dtype), x)


def flip_left_right(x, flip):
    """Mirrors the columns of the samples where `flip` [B] is true."""
    x = _images(x)
    return tf.where(tf.reshape(tf.cast(flip, tf.bool), [-1, 1, 1, 1]), tf.reverse(x, axis=[2]), x)


def _cutout_centered(x, center):
    return cutout(x, center, cutout_size(x.shape[1], x.shape[2]))


_APPLY = {
    "brightness": adjust_brightness,
    "saturation": adjust_saturation,
    "contrast": adjust_contrast,
    "translation": translate,
    "cutout_center": _cutout_centered,
    "flip": flip_left_right,
}


def policy_ops(policy):
    """A policy such as "color,translation,cutout" (or a list of names) -> its list of ops, each name checked."""
    ops = [op.strip() for op in policy.split(",") if op.strip()] if isinstance(policy, str) else list(policy)
    for op in ops:
        if op not in _POLICY_OPS:
            raise ValueError(
                f"unknown augmentation op {op!r} in policy {policy!r}; known ops: {', '.join(_POLICY_OPS)}"
            )
    return ops


def _seed(seed):
    seed = tf.convert_to_tensor(seed)
    if seed.shape != (2,) or seed.dtype not in (tf.int32, tf.int64):
        raise ValueError(f"seed must be an int32 or int64 tensor of shape [2], got {seed.dtype.name} {seed.shape}")
    return seed


def _fold(seed, data):
    return tf.random.experimental.stateless_fold_in(seed, tf.constant(data, tf.int32), alg=RNG)


def _uniform(seed, batch_size, low, high):
    """[B] floats in [low, high) from 24 random bits each, so XLA and eager draw the same values."""
    return low + (high - low) * stateless_uniform([batch_size], seed)


def _uniform_ints(seed, batch_size, ranges):
    """[B, len(ranges)] integers, column k uniform in ranges[k] = (low, high), both ends included."""
    columns = [
        tf.random.stateless_uniform(
            [batch_size], _fold(seed, k), minval=low, maxval=high + 1, dtype=tf.int32, alg=RNG
        )
        for k, (low, high) in enumerate(ranges)
    ]
    return tf.stack(columns, axis=1)


def draw_augment_params(seed, batch_size, height, width, policy=DEFAULT_POLICY, flip_probability=0.5,
                        color_probability=None):
    """Per-sample parameters for the policy's ops, a pure function of `seed` ([2] int32 / int64).

    Returns a dict with, for the ops in the policy: brightness (the shift), saturation, contrast (the factors; [B]
    float32), translation ([B, 2] int32 (dy, dx)), cutout_center ([B, 2] int32 (cy, cx)), flip ([B] bool).
    color_probability None: the original DiffAugment's colour ops, each on every sample (HiT's bCR); a number p:
    GAT's colour op, on the samples of color_mask ([B] bool, true with probability p; the module docstring).
    """
    if not (0.0 <= flip_probability <= 1.0 and (color_probability is None or 0.0 <= color_probability <= 1.0)):
        raise ValueError(f"augmentation probabilities must be in [0, 1], got flip {flip_probability}, "
                         f"color {color_probability}")
    ops = policy_ops(policy)
    seed = _seed(seed)
    names = [name for op in _POLICY_OPS if op in ops for name in _POLICY_OPS[op]]
    seeds = {name: _fold(seed, _ORDER.index(name)) for name in names}
    shift_h, shift_w = max_translation(height, width)
    center_h, center_w = cutout_center_range(height, width)
    draw = {
        "brightness": lambda s: _uniform(s, batch_size, -0.5, 0.5),
        "saturation": lambda s: _uniform(s, batch_size, 0.0, 2.0),
        "contrast": lambda s: _uniform(s, batch_size, 0.5, 1.5),
        "translation": lambda s: _uniform_ints(s, batch_size, [(-shift_h, shift_h), (-shift_w, shift_w)]),
        "cutout_center": lambda s: _uniform_ints(s, batch_size, [(0, center_h), (0, center_w)]),
        "flip": lambda s: _uniform(s, batch_size, 0.0, 1.0) < flip_probability,
    }
    params = {name: draw[name](seeds[name]) for name in _ORDER if name in seeds}
    if "brightness" in params and color_probability is not None:
        coin = _uniform(_fold(seeds["brightness"], _COLOR_MASK_FOLD), batch_size, 0.0, 1.0)
        params["color_mask"] = coin < color_probability
    return params


def with_input_means(images, params):
    """`params` plus the means GAT's colour op takes from `images` (saturation_mean [B, H, W, 1], contrast_mean
    [B, 1, 1, 1]), so the same op can be re-applied to other inputs; unchanged without a color_mask."""
    if "color_mask" not in params:
        return params
    x = _images(images)
    return {**params, "saturation_mean": tf.reduce_mean(x, axis=3, keepdims=True),
            "contrast_mean": tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)}


def _gat_color(x, params):
    """official GAT losses/diffaug.py `rand_brightness_saturation_contrast`, given its parameters."""
    means = with_input_means(x, params) if "saturation_mean" not in params else params
    saturation_mean = tf.cast(means["saturation_mean"], x.dtype)
    contrast_mean = tf.cast(means["contrast_mean"], x.dtype)
    y = x + _per_sample(params["brightness"], x)
    y = (y - saturation_mean) * _per_sample(params["saturation"], x) + saturation_mean
    y = (y - contrast_mean) * _per_sample(params["contrast"], x) + contrast_mean
    return tf.where(tf.reshape(tf.cast(params["color_mask"], tf.bool), [-1, 1, 1, 1]), y, x)


def apply_augment(images, params):
    """Applies the ops whose parameters are in `params`, in canonical order: color, translation, cutout, flip.
    With a color_mask, the colour ops are GAT's (stored means used when present); without, DiffAugment's."""
    unknown = sorted(set(params) - set(_KNOWN))
    if unknown:
        raise ValueError(f"unknown augmentation parameters {unknown}; known: {', '.join(_KNOWN)}")
    x = _images(images)
    gat_color = "color_mask" in params
    if gat_color:
        missing = [name for name in ("brightness", "saturation", "contrast") if name not in params]
        if missing or (set(_MEANS) & set(params) and not set(_MEANS) <= set(params)):
            raise ValueError(f"GAT's colour op needs brightness, saturation, contrast and both means or neither; "
                             f"got {sorted(params)}")
        x = _gat_color(x, params)
    for name in _ORDER:
        if name in params and not (gat_color and name in _POLICY_OPS["color"]):
            x = _APPLY[name](x, params[name])
    return x


def diff_augment(images, seed, policy=DEFAULT_POLICY, flip_probability=0.5, color_probability=None):
    """(augmented images, parameters) = apply_augment(images, draw_augment_params(seed, ...)); the parameters
    carry the input's means for GAT's colour op (with_input_means), ready to be re-applied to another input."""
    x = _images(images)
    batch_size = x.shape[0] if x.shape[0] is not None else tf.shape(x)[0]
    params = with_input_means(x, draw_augment_params(seed, batch_size, x.shape[1], x.shape[2], policy,
                                                     flip_probability, color_probability))
    return apply_augment(x, params), params


def slice_params(params, start, size):
    """Rows [start, start + size) of every parameter, e.g. one replica's share of a global-batch draw.

    `start` may be a tensor (replica id times per-replica batch); `size` is a Python int, so shapes stay static.
    """
    def rows(value):
        value = tf.convert_to_tensor(value)
        if isinstance(start, int) and value.shape[0] is not None and not 0 <= start <= value.shape[0] - size:
            raise ValueError(f"rows [{start}, {start + size}) are outside a batch of {value.shape[0]}")
        begin = tf.pad(tf.reshape(tf.cast(start, tf.int32), [1]), [[0, value.shape.rank - 1]])
        return tf.slice(value, begin, [size] + value.shape[1:].as_list())

    return {name: rows(value) for name, value in params.items()}

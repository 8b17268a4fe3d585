"""DiffAugment for bCR (official hit-gan utils/diff_augment.py): ranges, geometry, numpy equivalence, stateless
replay, XLA."""

import numpy as np
import pytest
import tensorflow as tf

from hit.gan import augment
from hit.gan.augment import (adjust_brightness, adjust_contrast, adjust_saturation, apply_augment, cutout, diff_augment,
                             draw_augment_params, flip_left_right, slice_params, translate)

ALL_OPS = "color,translation,cutout,flip"


def images(batch=4, height=16, width=12, channels=3, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (batch, height, width, channels)).astype(np.float32)


def translate_loop(x, shift):
    """out[b, i, j] = x[b, i - dy, j - dx] where that exists, else 0."""
    out = np.zeros_like(x)
    _, height, width, _ = x.shape
    for b, (dy, dx) in enumerate(shift):
        for i in range(height):
            for j in range(width):
                if 0 <= i - dy < height and 0 <= j - dx < width:
                    out[b, i, j] = x[b, i - dy, j - dx]
    return out


@pytest.mark.parametrize("dtype", [tf.float32, tf.bfloat16, tf.float16])
def test_each_op_and_the_policy_keep_shape_and_dtype(dtype):
    x = tf.cast(images(), dtype)
    batch = [4]
    for y in [
        adjust_brightness(x, tf.fill(batch, 0.25)),
        adjust_saturation(x, tf.fill(batch, 1.5)),
        adjust_contrast(x, tf.fill(batch, 0.75)),
        translate(x, tf.fill([4, 2], 1)),
        cutout(x, tf.fill([4, 2], 3), (8, 6)),
        flip_left_right(x, tf.constant([True, False, True, False])),
        diff_augment(x, [1, 2])[0],
        diff_augment(x, [1, 2], ALL_OPS)[0],
    ]:
        assert y.shape == x.shape and y.dtype == dtype


@pytest.mark.slow
def test_jit_compiled_draws_the_same_parameters_and_images_as_eager():
    x = tf.constant(images())
    seed = tf.constant([3, 7], tf.int64)
    eager, eager_params = diff_augment(x, seed, ALL_OPS)
    compiled, compiled_params = tf.function(lambda x, s: diff_augment(x, s, ALL_OPS), jit_compile=True)(x, seed)
    assert set(eager_params) == set(compiled_params) == set(augment._ORDER)
    for name in eager_params:
        np.testing.assert_array_equal(compiled_params[name].numpy(), eager_params[name].numpy(), err_msg=name)
    # Only the order of the mean reductions may differ.
    np.testing.assert_allclose(compiled.numpy(), eager.numpy(), atol=2e-6)
    geometry = tf.function(lambda x, p: apply_augment(x, p), jit_compile=True)
    kept = {name: eager_params[name] for name in ("translation", "cutout_center", "flip")}
    np.testing.assert_array_equal(geometry(x, kept).numpy(), apply_augment(x, kept).numpy())


def test_draws_stay_in_their_ranges_and_reach_both_ends():
    height, width = 32, 24  # s = 4 rows, 3 columns; cutout sides 16 x 12, even: centers in [0, 32] x [0, 24]
    drawn = draw_augment_params([5, 6], 512, height, width, ALL_OPS)
    params = {name: value.numpy() for name, value in drawn.items()}
    for name, low, high in [("brightness", -0.5, 0.5), ("saturation", 0.0, 2.0), ("contrast", 0.5, 1.5)]:
        value = params[name]
        assert value.shape == (512,) and value.dtype == np.float32, name
        margin = 0.1 * (high - low)  # e.g. brightness reaches below -0.4 and above 0.4
        assert low <= value.min() < low + margin and high - margin < value.max() < high, name
    for name, low, high in [("translation", (-4, -3), (4, 3)), ("cutout_center", (0, 0), (height, width))]:
        value = params[name]
        assert value.shape == (512, 2) and value.dtype == np.int32, name
        np.testing.assert_array_equal(value.min(axis=0), low, err_msg=name)
        np.testing.assert_array_equal(value.max(axis=0), high, err_msg=name)
    assert params["flip"].dtype == bool and 0.4 < params["flip"].mean() < 0.6


def test_cutout_centers_reach_one_past_the_edge_only_for_even_sides():
    """The official draw: uniform in [0, size + 1 - side % 2) for each axis."""
    for height, width in [(32, 24), (10, 14), (6, 7)]:  # sides (16, 12), (5, 7), (3, 4)
        center = draw_augment_params([0, 2], 2048, height, width, "cutout")["cutout_center"].numpy()
        sides = augment.cutout_size(height, width)
        np.testing.assert_array_equal(center.min(axis=0), [0, 0])
        np.testing.assert_array_equal(center.max(axis=0), [height + 1 - sides[0] % 2 - 1, width + 1 - sides[1] % 2 - 1])
    assert augment.cutout_center_range(10, 14) == (9, 13) and augment.cutout_center_range(6, 7) == (5, 7)


def test_translation_range_is_a_rounded_eighth_of_each_side():
    for height, width in [(8, 64), (12, 20), (256, 128)]:
        shift = draw_augment_params([0, 1], 2048, height, width, "translation")["translation"].numpy()
        s = augment.max_translation(height, width)
        assert s == (int(height * 0.125 + 0.5), int(width * 0.125 + 0.5))
        np.testing.assert_array_equal(shift.min(axis=0), [-s[0], -s[1]])
        np.testing.assert_array_equal(shift.max(axis=0), s)


def test_color_ops_equal_numpy_with_the_drawn_parameters():
    x = images(batch=8)
    params = {name: value.numpy() for name, value in draw_augment_params([2, 3], 8, 16, 12, "color").items()}
    per_sample = {name: value[:, None, None, None] for name, value in params.items()}

    brightened = x + per_sample["brightness"]
    np.testing.assert_allclose(adjust_brightness(x, params["brightness"]).numpy(), brightened, atol=1e-6)
    channel_mean = brightened.mean(axis=3, keepdims=True)
    saturated = channel_mean + (brightened - channel_mean) * per_sample["saturation"]
    np.testing.assert_allclose(adjust_saturation(brightened, params["saturation"]).numpy(), saturated, atol=1e-5)
    sample_mean = saturated.mean(axis=(1, 2, 3), keepdims=True)
    contrasted = sample_mean + (saturated - sample_mean) * per_sample["contrast"]
    np.testing.assert_allclose(adjust_contrast(saturated, params["contrast"]).numpy(), contrasted, atol=1e-5)
    # "color" is brightness, then saturation, then contrast; nothing is clipped afterwards.
    np.testing.assert_allclose(apply_augment(x, params).numpy(), contrasted, atol=1e-5)


def test_translation_matches_the_numpy_loop():
    x = images(batch=6, height=8, width=10)
    shift = np.array([[0, 0], [1, -2], [-3, 4], [7, 0], [0, -9], [8, 10]], np.int32)  # up to and past the edges
    np.testing.assert_array_equal(translate(x, shift).numpy(), translate_loop(x, shift))
    np.testing.assert_array_equal(translate(x, np.zeros([6, 2], np.int32)).numpy(), x)
    drawn = draw_augment_params([4, 4], 6, 8, 10, "translation")["translation"].numpy()
    np.testing.assert_array_equal(apply_augment(x, {"translation": drawn}).numpy(), translate_loop(x, drawn))


def test_translation_then_cutout_only_moves_values_or_zeroes_them():
    x = images(batch=8, height=16, width=16) + 2.0  # no zeros in the input
    y, _ = diff_augment(x, [9, 9], "translation,cutout")
    for original, augmented in zip(x, y.numpy()):
        assert set(augmented.ravel()) <= set(original.ravel()) | {0.0}
        assert (augmented == 0).any()  # the cutout always leaves a hole


@pytest.mark.parametrize(
    "center,size",
    [((8, 6), (8, 6)), ((0, 0), (8, 6)), ((15, 11), (8, 6)), ((1, 10), (5, 5)), ((14, 2), 7), ((3, 3), 1)],
)
def test_cutout_zeroes_exactly_the_clipped_rectangle(center, size):
    height, width = 16, 12
    size_h, size_w = (size, size) if isinstance(size, int) else size
    top, left = center[0] - size_h // 2, center[1] - size_w // 2
    expected = np.ones([height, width], bool)
    expected[max(top, 0):max(top + size_h, 0), max(left, 0):max(left + size_w, 0)] = False
    x = np.ones([2, height, width, 3], np.float32)
    y = cutout(x, np.array([center, [0, 0]], np.int32), size).numpy()
    np.testing.assert_array_equal(y[0], np.repeat(expected[..., None].astype(np.float32), 3, axis=2))
    assert (y[1] == 0).any() and (y[1] == 1).any()  # the other sample has its own hole


def test_cutout_in_the_policy_is_half_of_each_side():
    params = {"cutout_center": np.array([[10, 10], [0, 23]], np.int32)}
    holes = apply_augment(np.ones([2, 20, 24, 1], np.float32), params).numpy()[..., 0] == 0
    assert augment.cutout_size(20, 24) == (10, 12)
    assert holes[0].sum() == 10 * 12 and holes[0][5:15, 4:16].all()
    assert holes[1].sum() == 5 * 7 and holes[1][:5, 17:].all()  # rows [-5, 5), columns [17, 29), clipped


def test_flip_mirrors_only_the_flagged_samples():
    x = images(batch=3)
    y = flip_left_right(x, np.array([True, False, True])).numpy()
    np.testing.assert_array_equal(y[[0, 2]], x[[0, 2], :, ::-1])
    np.testing.assert_array_equal(y[1], x[1])


def test_samples_differ_and_seeds_replay():
    x = images(batch=8)
    y, params = diff_augment(x, [1, 2], ALL_OPS)
    for name in ("brightness", "saturation", "contrast"):
        assert len(set(params[name].numpy())) == 8, name
    for name in ("translation", "cutout_center"):
        assert len({tuple(row) for row in params[name].numpy()}) > 1, name
    y_again, params_again = diff_augment(x, tf.constant([1, 2], tf.int64), ALL_OPS)
    np.testing.assert_array_equal(y_again.numpy(), y.numpy())
    for name in params:
        np.testing.assert_array_equal(params_again[name].numpy(), params[name].numpy())
    y_other, params_other = diff_augment(x, [1, 3], ALL_OPS)
    assert not np.array_equal(params_other["brightness"].numpy(), params["brightness"].numpy())
    assert not np.array_equal(y_other.numpy(), y.numpy())


def test_each_op_draws_the_same_whatever_else_the_policy_holds_or_its_order():
    full = draw_augment_params([8, 1], 16, 32, 32, ALL_OPS)
    for policy in ("color", "translation", "cutout,color", "flip,translation"):
        part = draw_augment_params([8, 1], 16, 32, 32, policy)
        for name in part:
            np.testing.assert_array_equal(part[name].numpy(), full[name].numpy(), err_msg=f"{policy}: {name}")
    x = images()
    np.testing.assert_array_equal(
        diff_augment(x, [8, 1], "cutout,color")[0].numpy(), diff_augment(x, [8, 1], "color,cutout")[0].numpy()
    )


def test_slices_of_global_batch_params_augment_like_the_whole_batch():
    x = images(batch=8)
    params = draw_augment_params([6, 6], 8, 16, 12, ALL_OPS)
    whole = apply_augment(x, params).numpy()
    halves = [apply_augment(x[start:start + 4], slice_params(params, start, 4)).numpy() for start in (0, 4)]
    np.testing.assert_allclose(np.concatenate(halves), whole, atol=1e-6)
    # A replica's start is a tensor inside a compiled step; shapes stay static.
    sliced = tf.function(lambda p, start: slice_params(p, start, 4), jit_compile=True)(params, tf.constant(4))
    for name in params:
        assert sliced[name].shape[0] == 4
        np.testing.assert_array_equal(sliced[name].numpy(), params[name].numpy()[4:], err_msg=name)
    with pytest.raises(ValueError, match=r"^rows \[6, 10\) are outside a batch of 8$"):
        slice_params(params, 6, 4)


def test_bad_policy_seed_or_images_are_one_line_errors():
    with pytest.raises(ValueError, match=r"^unknown augmentation op 'blur' in policy 'color,blur'; known ops: "
                                         r"color, translation, cutout, flip$"):
        draw_augment_params([0, 0], 2, 8, 8, "color,blur")
    with pytest.raises(ValueError, match="^seed must be an int32 or int64 tensor of shape \\[2\\]"):
        diff_augment(images(), [1, 2, 3])
    with pytest.raises(ValueError, match="^unknown augmentation parameters \\['hue'\\]"):
        apply_augment(images(), {"hue": tf.zeros([4])})
    with pytest.raises(ValueError, match="^DiffAugment expects float \\[batch, H, W, C\\] images"):
        diff_augment(np.zeros([4, 8, 8], np.float32), [1, 2])
    assert diff_augment(images(), [1, 2], "")[1] == {}


def test_gat_latent_diffaugment_equals_the_official_function_with_reuse():
    """apply_augment with a color_mask is official GAT losses/diffaug.py's DiffAugment given the same parameters
    (tests/gat_reference.py states it): all three colour ops on the masked half only, both means taken before the
    brightness shift; and parameters drawn on one input and re-applied to another keep the first input's means."""
    from tests import gat_reference

    drawn = {k: v.numpy() for k, v in draw_augment_params([7, 1], 64, 16, 16, ALL_OPS, flip_probability=0.4,
                                                          color_probability=0.5).items()}
    mask = drawn["color_mask"]
    assert 0 < mask.sum() < 64 and drawn["flip"].any() and (np.abs(drawn["translation"]).sum(1) > 0).any()
    first, second = images(64, 16, 16, 4, seed=1), images(64, 16, 16, 4, seed=2)

    out, params = diff_augment(first, [7, 1], ALL_OPS, flip_probability=0.4, color_probability=0.5)
    expected = gat_reference.diffaug(first, gat_reference.input_means(first, drawn))
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6, atol=1e-6)
    # Re-applied: the stored means of `first`, not those of `second` (which differ).
    reused = apply_augment(second, params).numpy()
    np.testing.assert_allclose(reused, gat_reference.diffaug(second, gat_reference.input_means(first, drawn)),
                               rtol=1e-6, atol=1e-6)
    own_means = gat_reference.diffaug(second, gat_reference.input_means(second, drawn))
    assert not np.allclose(reused[mask], own_means[mask], atol=1e-3)
    np.testing.assert_array_equal(reused[~mask], own_means[~mask])  # unmasked samples see no colour op at all
    with pytest.raises(ValueError, match="both means or neither"):
        apply_augment(first, {k: v for k, v in params.items() if k != "contrast_mean"})

"""The VQ-HiT autoencoder (hit.models.vq_hit): the paper configuration's parts and counts, a batch-1 pass
256 -> 16x16 codes -> 256, the decoder's HiT-B stages, encode/decode against the whole model, and one-line
errors for bad images and codes."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from hit.models.presets import get_generator, get_vqhit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def paper_model():
    return get_vqhit("vqhit_imagenet_256")


@pytest.fixture(scope="module")
def tiny():
    return get_vqhit("vqhit_tiny_32")


@pytest.mark.slow
def test_the_paper_configuration_has_vqgans_encoder_and_codebook(paper_model):
    assert paper_model.parameter_counts() == {
        "encoder": 29_298_176,   # VQGAN f16 up to its output conv (A.5: "the same encoder E as VQGAN")
        "quant_conv": 65_792,    # 1x1, 256 -> 256
        "codebook": 262_144,     # 1024 codes x 256 (Table 2: "16, 1024")
        "decoder": 17_389_830,   # HiT-B's stages 1-5 (Table 9) + input projection + grid tokens
    }
    assert (paper_model.grid_size, paper_model.num_codes) == (16, 1024)


@pytest.mark.slow
def test_the_decoder_is_hit_b_from_its_16x16_stage_on(paper_model):
    """Stages 1-5 of HiT-B hold the same weights shapes as the decoder's stages 0-4."""
    hit_b = get_generator("hit_b_256")

    def shapes(stage):
        return sorted((re.sub(r"^.*?stage_\d+/", "", v.path), tuple(v.shape)) for v in stage.variables)

    # Cross-attention keys/values come from tokens as wide as each model's first stage: 512 in both.
    for decoder_stage, generator_stage in zip(paper_model.decoder.stages, hit_b.stages[1:]):
        assert shapes(decoder_stage) == shapes(generator_stage)
    assert len(paper_model.decoder.stages) == 5


@pytest.mark.slow
def test_a_batch_of_one_goes_256_to_16x16_codes_to_256(paper_model):
    images = tf.random.stateless_uniform([1, 256, 256, 3], [1, 2], -1.0, 1.0)
    codes = paper_model.encode(images)
    assert codes.shape == (1, 16, 16) and codes.dtype == tf.int32
    assert 0 <= int(tf.reduce_min(codes)) and int(tf.reduce_max(codes)) < 1024
    decoded = paper_model.decode(codes)
    assert decoded.shape == (1, 256, 256, 3) and bool(tf.reduce_all(tf.math.is_finite(decoded)))


@pytest.mark.slow
def test_decoding_the_codes_equals_the_whole_model(tiny):
    images = tf.random.stateless_uniform([3, 32, 32, 3], [3, 4], -1.0, 1.0)
    codes = tiny.encode(images)
    assert codes.shape == (3, 8, 8)
    # z + (e - z) rounds differently from e: equal up to float32 rounding.
    np.testing.assert_allclose(tiny.decode(codes).numpy(), tiny(images, training=False).numpy(), atol=1e-4)
    reconstructions, same_codes, losses = tiny.reconstruct(images, training=True)
    np.testing.assert_array_equal(same_codes.numpy(), codes.numpy())
    assert set(losses) == {"codebook_loss", "commitment_loss"} and reconstructions.shape == images.shape


@pytest.mark.slow
def test_grid_tokens_summarise_regions_in_row_major_order(tiny):
    """Token t reads the mean of region (t // s, t % s): changing one region of the grid moves only its token
    (before the norm, which mixes tokens in training mode only)."""
    tokens = tiny.decoder.tokens
    grid = tf.random.stateless_normal([1, 8, 8, 16], [5, 6])
    bumped = tf.tensor_scatter_nd_add(grid, [[0, 5, 1, 0]], [3.0])  # row 5, column 1: region (1, 0) of 2x2
    before, after = (tokens(g, training=False).numpy()[0] for g in (grid, bumped))
    moved = np.abs(after - before).max(axis=1) > 1e-6
    np.testing.assert_array_equal(moved, [False, False, True, False])


@pytest.mark.slow
def test_bad_images_and_codes_are_one_line_errors(tiny):
    shape_error = r"^vq_hit expects images of shape \[batch, 32, 32, 3\], got "
    with pytest.raises(ValueError, match=shape_error + r"\[2, 64, 64, 3\]$"):
        tiny(tf.zeros([2, 64, 64, 3]))
    with pytest.raises(ValueError, match=shape_error + r"\[2, 32, 32, 1\]$"):
        tiny.encode(tf.zeros([2, 32, 32, 1]))
    with pytest.raises(ValueError, match=r"^codes must be in \[0, 32\), got values in \[32, 32\]$"):
        tiny.decode(tf.fill([1, 8, 8], 32))
    with pytest.raises(ValueError, match=r"^codes must be in \[0, 32\), got values in \[-1, 0\]$"):
        tiny.decode(tf.concat([tf.fill([1, 8, 4], -1), tf.zeros([1, 8, 4], tf.int32)], axis=2))
    with pytest.raises(ValueError, match=r"^vq_hit decodes codes of shape \[batch, 8, 8\], got \[1, 4, 4\]$"):
        tiny.decode(tf.zeros([1, 4, 4], tf.int32))
    with pytest.raises(ValueError, match=r"^vq_hit decodes integer codes, got float32$"):
        tiny.decode(tf.zeros([1, 8, 8]))
    decode = tf.function(tiny.decode, input_signature=[tf.TensorSpec([None, 8, 8], tf.int32)])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"codes must be in \[0, 32\)"):
        decode(tf.fill([1, 8, 8], 40))
    with pytest.raises(ValueError, match=r"^bad token count: 5 tokens must be a square grid"):
        get_vqhit("vqhit_tiny_32", num_latent_tokens=5)
    with pytest.raises(ValueError, match=r"^unknown VQ-HiT option\(s\) \['codes'\]"):
        get_vqhit("vqhit_tiny_32", codes=3)


@pytest.mark.slow
def test_model_summary_prints_the_parts_of_a_vqhit_preset():
    result = subprocess.run([sys.executable, "tools/model_summary.py", "--preset=vqhit_tiny_32"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    tiny = get_vqhit("vqhit_tiny_32")
    assert {k: summary[f"{k}_params"] for k in tiny.parameter_counts()} == tiny.parameter_counts()
    assert summary["codebook_shape"] == [32, 16] and summary["code_grid"] == [8, 8]
    assert summary["trainable_params"] == sum(tiny.parameter_counts().values())

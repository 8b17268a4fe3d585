"""REPA on GAT's discriminator (official GAT models/discriminator.py `build_mlp`, losses/Rp_PT_loss.py): D's final
class and patch tokens, through a projector, are aligned with frozen DINOv2 ViT-B/14 features of the same real image.

    L_REPA = mean over the batch of (1 - cos(P(h_cls), dino_cls)) + mean over patches (1 - cos(P(h_i), dino_i))

on the real (augmented, MNG-noised) pass of the D step only, weight 1.0. The targets are DINOv2's 16x16 patch
grid at 224 px, which matches D's grid for patch 2; other grids get the targets resized bicubically (PyTorch's
bicubic, as F.interpolate). The official targets follow the real sample's flip; its translation reaches them
as offset // 7 (integer division by 224 / 32), so they are almost unshifted: pre-extracted features of the
image and of its mirror image (tools/extract_latents.py --flipped) reproduce that closely.
"""

import tensorflow as tf

from hit.models.dinov2 import bicubic_matrix


def cosine_distance(a, b):
    """1 - cos(a, b) along the last axis, each side normalised as F.normalize does (x / max(|x|, 1e-12))."""
    def normalize(x):
        x = tf.cast(x, tf.float32)
        return x / tf.maximum(tf.norm(x, axis=-1, keepdims=True), 1e-12)

    return 1.0 - tf.reduce_sum(normalize(a) * normalize(b), axis=-1)


def resize_patch_features(patches, grid):
    """[B, g * g, C] patch tokens (row-major) -> [B, grid * grid, C] with PyTorch's bicubic; unchanged if g == grid."""
    side = int(round(patches.shape[1] ** 0.5))
    if side * side != patches.shape[1]:
        raise ValueError(f"patch features must form a square grid, got {patches.shape[1]} tokens")
    if side == grid:
        return patches
    matrix = tf.constant(bicubic_matrix(side, grid), patches.dtype)
    x = tf.reshape(patches, [-1, side, side, patches.shape[-1]])
    x = tf.einsum("ih,bhwc->biwc", matrix, x)
    x = tf.einsum("jw,biwc->bijc", matrix, x)
    return tf.reshape(x, [-1, grid * grid, patches.shape[-1]])


def repa_loss(projected_cls, projected_patches, target_cls, target_patches):
    """The REPA term, averaged over the batch: [B, C] / [B, N, C] projections against [B, C] / [B, M, C] targets
    (targets resized to N tokens when M != N)."""
    grid = int(round(projected_patches.shape[1] ** 0.5))
    target_patches = resize_patch_features(tf.cast(target_patches, tf.float32), grid)
    per_sample = (cosine_distance(projected_cls, target_cls)
                  + tf.reduce_mean(cosine_distance(projected_patches, target_patches), axis=1))
    return tf.reduce_mean(per_sample)


def flip_patch_features(patches):
    """The patch grid mirrored left-right: targets for a flipped sample when no mirror-image features exist."""
    side = int(round(patches.shape[1] ** 0.5))
    x = tf.reshape(patches, [-1, side, side, patches.shape[-1]])
    return tf.reshape(tf.reverse(x, axis=[2]), tf.shape(patches))

"""The official GAT training step written out plainly, for tests: a statement of official GAT losses/diffaug.py
(`DiffAugment` with aug_params), losses/Rp_PT_loss.py (`apply_gaussian_list_cumulative`, `step_disc`, `step_gen`,
`approximated_gradient_penalty`), train.py (`update_ema`, clip_grad_norm_, torch.optim.AdamW) and models/generator.py
(the w_avg update), line by line on NHWC arrays, independent of hit.gan.augment, hit.gan.mng and hit.tasks.gat.

Array code takes `xp`: numpy for values, tensorflow.experimental.numpy where a gradient must flow through it (G's
levels into D). The models' forward passes are ours (checked against the official models elsewhere); gradients of
the reference losses come from tf.GradientTape. Parameters use hit.gan.augment's names; the official translation
index is x_pad[i + tx + 1] with tx = -dy (our dy: out[i] = x[i - dy]).
"""

import math

import numpy as np
import tensorflow as tf
import tensorflow.experimental.numpy as tnp

NOISE_INFO_MIN, NOISE_OFFSET, LEVELS = 0.125, 1e-2, 4


def _np(value):
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def input_means(x, params, xp=np):
    """The means rand_brightness_saturation_contrast stores: x.mean(dim=1) and x.mean(dim=[1, 2, 3]) (NCHW)."""
    return {**params, "saturation_mean": xp.mean(x, axis=3, keepdims=True),
            "contrast_mean": xp.mean(x, axis=(1, 2, 3), keepdims=True)}


def diffaug(x, params, xp=np):
    """DiffAugment(x, policy='color,translation,cutout,flip', aug_params=params) on [B, H, W, C]."""
    batch, height, width, _ = x.shape
    column = lambda v: _np(v).reshape(-1, 1, 1, 1).astype(np.float32)  # noqa: E731
    # color: rand_brightness_saturation_contrast with its stored params (mask, noises, means)
    mask = _np(params["color_mask"]).astype(bool).reshape(-1, 1, 1, 1)
    x_aug = x + column(params["brightness"])
    x_aug = (x_aug - params["saturation_mean"]) * column(params["saturation"]) + params["saturation_mean"]
    x_aug = (x_aug - params["contrast_mean"]) * column(params["contrast"]) + params["contrast_mean"]
    x = xp.where(mask, x_aug, x)
    # translation: grid = clamp(i + t + 1, 0, H + 1) into x padded by one zero on each side
    shift = _np(params["translation"]).astype(np.int64)
    rows = np.clip(np.arange(height)[None, :] - shift[:, :1] + 1, 0, height + 1)  # [B, H]
    cols = np.clip(np.arange(width)[None, :] - shift[:, 1:] + 1, 0, width + 1)  # [B, W]
    x_pad = xp.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="constant")
    x = xp.take_along_axis(x_pad, rows[:, :, None, None], axis=1)
    x = xp.take_along_axis(x, cols[:, None, :, None], axis=2)
    # cutout: mask[grid_batch, clamp(grid + offset - size // 2, 0, H - 1), ...] = 0
    size = int(height * 0.5 + 0.5), int(width * 0.5 + 0.5)
    center = _np(params["cutout_center"]).astype(np.int64)
    hole = np.ones([batch, height, width], np.float32)
    for b in range(batch):
        r = np.clip(np.arange(size[0]) + center[b, 0] - size[0] // 2, 0, height - 1)
        c = np.clip(np.arange(size[1]) + center[b, 1] - size[1] // 2, 0, width - 1)
        hole[b][np.ix_(r, c)] = 0
    x = x * hole[..., None]
    # flip: x_out[mask] = x[mask].flip(3) (width)
    flip = _np(params["flip"]).astype(bool).reshape(-1, 1, 1, 1)
    return xp.where(flip, xp.flip(x, axis=2), x)


def augment_levels(levels, params, xp=np):
    """step_disc / step_gen on G's levels [L, B, H, W, C]: the last level's parameters (and means) on every level."""
    params = input_means(levels[-1], params, xp)
    return xp.stack([diffaug(level, params, xp) for level in levels]), params


def noise_schedule():
    """info_per_layer(N=4, Imin=0.125) + 1e-2."""
    lam = np.arange(LEVELS) / (LEVELS - 1)
    return 1.0 - NOISE_INFO_MIN ** (1 - lam) + NOISE_OFFSET


def gaussian_cumulative(xs, seed_noise, xp=np):
    """apply_gaussian_list_cumulative(xs, seed_noise): xs [L, B, ...], seed_noise [L, B, ...] fresh N(0, I)."""
    schedule = [float(t) for t in noise_schedule()][::-1]  # Python floats: float32 arithmetic, as torch's
    xs = [xs[i] for i in range(LEVELS)][::-1]
    cumulative, prev_t_squared, prev_t, out = 0.0, 0.0, 0.0, []
    for idx, t in enumerate(schedule):
        decay = (1.0 - t) / (1.0 - prev_t)
        incremental = t ** 2 - prev_t_squared * decay ** 2
        cumulative = cumulative * decay + _np(seed_noise[idx]).astype(np.float32) * math.sqrt(incremental)
        out.append(xs[idx] * (1 - t) + cumulative)
        prev_t_squared, prev_t = t ** 2, t
    return xp.stack(out[::-1])


def stack_channels(levels, xp=np):
    """forward_encoder: torch.cat(xs, dim=1), level-major channels."""
    return xp.concatenate([levels[i] for i in range(LEVELS)], axis=-1)


def softplus(x):
    return tf.math.softplus(x)


def cosine_distance(a, b):
    """1 - F.cosine_similarity(a, b, dim=-1)."""
    norm = tf.maximum(tf.norm(a, axis=-1) * tf.norm(b, axis=-1), 1e-8)
    return 1.0 - tf.reduce_sum(a * b, axis=-1) / norm


def discriminator_loss(discriminator, real, levels, labels, draws, targets, r1_weight=0.05, r2_weight=0.05,
                       repa_weight=1.0, sigma=0.01):
    """step_disc with approximate=True: the per-sample loss's batch mean and its terms; inside the caller's tape."""
    real_params = input_means(real, draws["d_real_augment"])
    real_aug = np.stack([diffaug(real, real_params)] * LEVELS)
    fake_aug, fake_params = augment_levels(levels, draws["d_fake_augment"])
    real_stack = stack_channels(gaussian_cumulative(real_aug, draws["d_real_noise"]))
    fake_stack = stack_channels(gaussian_cumulative(fake_aug, draws["d_fake_noise"]))
    fake_logits = discriminator(fake_stack, labels)
    real_out = discriminator.forward_with_features(real_stack, labels)
    real_logits = real_out["logits"]
    disc = softplus(-(real_logits - fake_logits))
    # approximated_gradient_penalty: aug(data + randn * std, aug_params) (stored means), the same MNG seed noise
    real_perturbed = diffaug(real + _np(draws["r1_noise"]) * sigma, real_params)
    real_perturbed = stack_channels(gaussian_cumulative(np.stack([real_perturbed] * LEVELS), draws["d_real_noise"]))
    r1 = tf.square((real_logits - discriminator(real_perturbed, labels)) / sigma)
    fake_perturbed = np.stack([diffaug(levels[i] + _np(draws["r2_noise"][i]) * sigma, fake_params)
                               for i in range(LEVELS)])
    fake_perturbed = stack_channels(gaussian_cumulative(fake_perturbed, draws["d_fake_noise"]))
    r2 = tf.square((fake_logits - discriminator(fake_perturbed, labels)) / sigma)
    # REPA against the features of the image as flipped (our pre-extracted stand-in for encode_feature)
    flip = _np(draws["d_real_augment"]["flip"]).astype(bool)
    target_cls = np.where(flip[:, None], targets["dino_cls_flip"], targets["dino_cls"])
    target_patches = np.where(flip[:, None, None], targets["dino_patches_flip"], targets["dino_patches"])
    repa = (cosine_distance(real_out["repa_cls"], target_cls)
            + tf.reduce_mean(cosine_distance(real_out["repa_patches"], target_patches), axis=1))
    loss = disc + repa * repa_weight + r1_weight * r1 + r2_weight * r2
    terms = {"d_loss": disc, "ar1_penalty": r1, "ar2_penalty": r2, "repa_loss": repa, "d_total_loss": loss}
    return {name: tf.reduce_mean(value) for name, value in terms.items()}


def generator_loss(generator, discriminator, real, labels, draws):
    """step_gen: (batch mean loss, w); G's levels flow through the augmentation and MNG into D."""
    real_aug = diffaug(real, input_means(real, draws["g_real_augment"]))
    real_stack = stack_channels(gaussian_cumulative(np.stack([real_aug] * LEVELS), draws["g_real_noise"]))
    real_logits = tf.stop_gradient(discriminator(real_stack, labels))
    out = generator.forward_with_features(tf.constant(_np(draws["z"])), labels)
    levels = tnp.stack(out["levels"])
    fake_aug, _ = augment_levels(levels, draws["g_fake_augment"], tnp)
    fake_stack = stack_channels(gaussian_cumulative(fake_aug, draws["g_fake_noise"], tnp), tnp)
    gen_logits = discriminator(fake_stack, labels)
    return tf.reduce_mean(softplus(-(gen_logits - real_logits))), out["w"]


def clip_grad_norm(grads, max_norm=1.0):
    """torch.nn.utils.clip_grad_norm_: coef = max_norm / (total_norm + 1e-6), clamped to 1."""
    total = np.sqrt(sum(np.sum(np.square(g.astype(np.float64))) for g in grads))
    coef = min(max_norm / (total + 1e-6), 1.0)
    return [g * coef for g in grads]


def adamw_first_step(params, grads, lr, beta1=0.0, beta2=0.99, eps=1e-8, weight_decay=0.0):
    """torch.optim.AdamW's first step from zero moments."""
    out = []
    for p, g in zip(params, grads):
        p = p * (1 - lr * weight_decay)
        m = (1 - beta1) * g
        v = (1 - beta2) * g * g
        denom = np.sqrt(v) / np.sqrt(1 - beta2) + eps
        out.append(p - lr / (1 - beta1) * m / denom)
    return out


def update_w_avg(w_avg, w, labels, beta=0.995):
    """models/generator.py: w_avg[label] <- lerp(mean of c over the label's samples, w_avg[label], beta)."""
    w_avg = w_avg.copy()
    for label in np.unique(labels):
        mean = w[labels == label].mean(axis=0)
        w_avg[label] = mean + beta * (w_avg[label] - mean)
    return w_avg


def update_ema(ema, params, decay=0.999):
    """train.py update_ema: ema.mul_(decay).add_(param, alpha=1 - decay)."""
    return [e * decay + p * (1 - decay) for e, p in zip(ema, params)]

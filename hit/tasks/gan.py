"""The HiT GAN task: models, optimizers and ONE train step (paper Sec. 4.2, A.4; official hit-gan
trainers/gan_trainer.py).

D loss = non-saturating (or hinge) + r1_weight * R1 on reals + bcr_weight * bCR.   G loss = non-saturating.
Adam(beta1=0, beta2=0.99). By default G and D are updated simultaneously from one forward pass, as the
official code does (G's gradient uses the pre-update D); `update="alternating"` updates D first, then G
against the updated D.

Everything the official step does on a TPU core happens in the replica step (`train_step`, inside
`strategy.run`): gradients, both updates, the BatchNorm statistics' replica mean and the EMA generator. Nothing
per step runs in cross-replica code, which on a TPU would be the host.

Randomness is stateless and keyed by (seed, step) over the *global* batch; each replica takes its rows. With
`bn_group_size` (BatchNorm statistics over fixed groups of samples, as the official 8 images per TPU core) a run
is therefore the same on any number of replicas that the groups tile, and reproducible across resumes.
"""

import gin
import tensorflow as tf

from hit.core.seeds import seed_range
from hit.gan import augment, losses, penalties
from hit.gan.ema import ExponentialMovingAverage
from hit.models.presets import get_discriminator, get_generator
from hit.models.samples import seed_images
from hit.tasks.base import TwoOptimizers, average_replica_statistics, per_replica_batch
from hit.train.optimizers import Adam
from hit.train.precision import check_precision, inner_gradient_scale, loss_scaled, policy_scope

UPDATE_SCHEMES = ("simultaneous", "alternating")


@gin.configurable(module="hit.tasks")
class GANTask(TwoOptimizers):
    """Unconditional HiT GAN. The trainer calls build, then train_step in every replica.

    bn_group_size: the generator's BatchNorm statistics come from fixed groups of this many samples of each
    replica's batch (the paper gins: 8, the official per-core batch); None: each replica's whole batch.
    precision: "float32" (the official code), "bfloat16" (TPU): Keras' mixed_bfloat16 policy for G, the EMA G and
    D (variables float32; BatchNorm, softmax, D's logits, the losses and R1's sum of squares in float32), or
    "float16" (GPU): the same with mixed_float16 and dynamic loss scaling (hit.train.precision.DynamicLossScale; R1's
    input gradient is taken of the scaled logits too). What sampling, evaluation and export restore
    (eval_generator) computes in float32 either way.
    """

    metric_names = ("d_loss", "g_loss", "r1_penalty", "bcr_loss", "d_total_loss", "real_logits", "fake_logits")
    sample_name = "ema_generator"

    def __init__(self, generator_preset=gin.REQUIRED, discriminator_preset=gin.REQUIRED,
                 generator_overrides=None, discriminator_overrides=None,
                 generator_lr=1e-4, discriminator_lr=1e-4, beta1=0.0, beta2=0.99, adam_epsilon=1e-7,
                 loss_type="non_saturating", r1_weight=10.0, r1_interval=1,
                 bcr_weight=0.0, augment_policy="color,translation,cutout",
                 update="simultaneous", ema_decay=0.999, ema_start_step=10, bn_group_size=None,
                 precision="float32"):
        check_precision(precision)
        self.precision = precision
        if update not in UPDATE_SCHEMES:
            raise ValueError(f"unknown update scheme {update!r}; expected one of {UPDATE_SCHEMES}")
        if r1_interval < 1:
            raise ValueError(f"r1_interval must be >= 1, got {r1_interval}")
        # Validate everything now (no weights are created), so a bad config fails before training starts.
        losses.discriminator_loss(tf.zeros([1]), tf.zeros([1]), loss_type)
        self.generator_overrides = dict(generator_overrides or {})
        if bn_group_size is not None:
            self.generator_overrides["bn_group_size"] = bn_group_size
        self.bn_group_size = self.generator_overrides.get("bn_group_size")
        get_generator(generator_preset, build=False, **self.generator_overrides)
        get_discriminator(discriminator_preset, build=False, **(discriminator_overrides or {}))
        augment.draw_augment_params(tf.constant([0, 0], tf.int64), 1, 8, 8, augment_policy)
        self.generator_preset, self.discriminator_preset = generator_preset, discriminator_preset
        self.discriminator_overrides = dict(discriminator_overrides or {})
        self.generator_lr, self.discriminator_lr = generator_lr, discriminator_lr
        self.beta1, self.beta2, self.adam_epsilon = beta1, beta2, adam_epsilon
        self.loss_type = loss_type
        self.r1_weight, self.r1_interval = r1_weight, r1_interval
        self.bcr_weight, self.augment_policy = bcr_weight, augment_policy
        self.update = update
        self.ema_decay, self.ema_start_step = ema_decay, ema_start_step

    # ---- set-up ------------------------------------------------------------------------------------

    def build(self, strategy, global_batch_size, seed=0, jit_compile=True):
        """Create models and optimizers inside the strategy's scope (optimizers built before any step)."""
        self.strategy = strategy
        self.global_batch_size = global_batch_size
        self.num_replicas = strategy.num_replicas_in_sync
        self.per_replica_batch = per_replica_batch("GANTask", global_batch_size, self.num_replicas,
                                                   self.bn_group_size)
        self.seed = seed
        with strategy.scope():
            with policy_scope(self.precision):
                self.generator = get_generator(self.generator_preset, **self.generator_overrides)
                self.ema_generator = get_generator(self.generator_preset, name="ema_generator",
                                                   **self.generator_overrides)
                self.discriminator = get_discriminator(self.discriminator_preset, **self.discriminator_overrides)
            adam = dict(beta_1=self.beta1, beta_2=self.beta2, epsilon=self.adam_epsilon)
            self.generator_optimizer = loss_scaled(Adam(self.generator_lr, **adam), self.precision)
            self.discriminator_optimizer = loss_scaled(Adam(self.discriminator_lr, **adam),
                                                       self.precision)
            self.generator_optimizer.build(self.generator.trainable_variables)
            self.discriminator_optimizer.build(self.discriminator.trainable_variables)
        self.ema = ExponentialMovingAverage(self.generator, self.ema_generator, self.ema_decay, self.ema_start_step)
        self.latent_dim = self.generator.latent_dim
        self.resolution = self.generator.get_config()["output_size"]
        compile_ = tf.function(jit_compile=True) if jit_compile else (lambda fn: fn)
        self._simultaneous_gradients = compile_(self._simultaneous_gradients_fn)
        self._discriminator_gradients = compile_(self._discriminator_gradients_fn)
        self._generator_gradients = compile_(self._generator_gradients_fn)
        self._update_ema = compile_(self.ema.update)

    def checkpoint_items(self):
        return {
            "generator": self.generator, "discriminator": self.discriminator,
            "ema_generator": self.ema_generator,
            "generator_optimizer": self.generator_optimizer,
            "discriminator_optimizer": self.discriminator_optimizer,
        }

    # ---- the step -----------------------------------------------------------------------------------

    def _latents(self, step, replica_id):
        return self.step_normal([self.global_batch_size, self.latent_dim], step, 0, replica_id)

    def _augment_fn(self, step, replica_id):
        """T(.) on [reals; fakes] of this replica, with per-sample draws made for the global batch."""
        def draw(stream):
            params = augment.draw_augment_params(self.step_seed(step, stream),
                                                 self.global_batch_size, self.resolution, self.resolution,
                                                 self.augment_policy)
            return augment.slice_params(params, replica_id * self.per_replica_batch, self.per_replica_batch)

        real, fake = draw(1), draw(2)
        params = {key: tf.concat([real[key], fake[key]], axis=0) for key in real}
        return lambda images: augment.apply_augment(images, params)

    def _discriminator_terms(self, real_images, fake_images, step, replica_id):
        """D loss terms from one pass of D over reals (inside the R1 tape) and fakes."""
        fake_logits = self.discriminator(fake_images, training=True)
        scale = inner_gradient_scale(self.discriminator_optimizer)
        if self.r1_interval == 1:
            real_logits, r1 = penalties.r1_penalty(self.discriminator, real_images, scale)
            r1_weight = self.r1_weight
        else:  # lazy regularisation: every r1_interval steps, weighted by the interval (StyleGAN2)
            real_logits, r1 = tf.cond(
                step % self.r1_interval == 0,
                lambda: penalties.r1_penalty(self.discriminator, real_images, scale),
                lambda: (self.discriminator(real_images, training=True), tf.constant(0.0)),
            )
            r1_weight = self.r1_weight * self.r1_interval
        d_loss = losses.discriminator_loss(real_logits, fake_logits, self.loss_type)
        bcr = tf.constant(0.0)
        if self.bcr_weight:
            bcr = penalties.consistency_loss(self.discriminator, real_images, fake_images, real_logits,
                                             fake_logits, self._augment_fn(step, replica_id))
        total = d_loss + r1_weight * r1 + self.bcr_weight * bcr
        metrics = {"d_loss": d_loss, "r1_penalty": r1, "bcr_loss": bcr, "d_total_loss": total,
                   "real_logits": tf.reduce_mean(real_logits), "fake_logits": tf.reduce_mean(fake_logits)}
        return total, fake_logits, metrics

    def _simultaneous_gradients_fn(self, real_images, step, replica_id):
        """Both gradients from one forward pass (official scheme). Losses / replicas: the optimizer sums."""
        z = self._latents(step, replica_id)
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            fake_images = self.generator(z, training=True)
            d_total, fake_logits, metrics = self._discriminator_terms(real_images, fake_images, step, replica_id)
            g_loss = losses.generator_loss(fake_logits, self.loss_type)
            # Scaled inside the tapes (a tape records only what runs in it); the optimizer sums replicas (and
            # under float16 divides the loss scale back out).
            g_scaled = self.generator_optimizer.scale_loss(g_loss / self.num_replicas)
            d_scaled = self.discriminator_optimizer.scale_loss(d_total / self.num_replicas)
        g_grads = g_tape.gradient(g_scaled, self.generator.trainable_variables)
        d_grads = d_tape.gradient(d_scaled, self.discriminator.trainable_variables)
        return g_grads, d_grads, {**metrics, "g_loss": g_loss}

    def _discriminator_gradients_fn(self, real_images, step, replica_id):
        fake_images = self.generator(self._latents(step, replica_id), training=True)
        with tf.GradientTape() as tape:
            d_total, _, metrics = self._discriminator_terms(real_images, tf.stop_gradient(fake_images), step,
                                                            replica_id)
            scaled = self.discriminator_optimizer.scale_loss(d_total / self.num_replicas)
        return tape.gradient(scaled, self.discriminator.trainable_variables), metrics

    def _generator_gradients_fn(self, step, replica_id):
        with tf.GradientTape() as tape:
            fake_images = self.generator(self._latents(step, replica_id), training=True)
            g_loss = losses.generator_loss(self.discriminator(fake_images, training=True), self.loss_type)
            scaled = self.generator_optimizer.scale_loss(g_loss / self.num_replicas)
        return tape.gradient(scaled, self.generator.trainable_variables), g_loss

    def train_step(self, batch, step, replica_id):
        """One step on one replica (inside strategy.run); returns this replica's metrics."""
        real_images = batch["image"]
        g_vars, d_vars = self.generator.trainable_variables, self.discriminator.trainable_variables
        if self.update == "simultaneous":
            g_grads, d_grads, metrics = self._simultaneous_gradients(real_images, step, replica_id)
            self.generator_optimizer.apply_gradients(zip(g_grads, g_vars))
            self.discriminator_optimizer.apply_gradients(zip(d_grads, d_vars))
        else:
            d_grads, metrics = self._discriminator_gradients(real_images, step, replica_id)
            self.discriminator_optimizer.apply_gradients(zip(d_grads, d_vars))
            g_grads, g_loss = self._generator_gradients(step, replica_id)
            self.generator_optimizer.apply_gradients(zip(g_grads, g_vars))
            metrics = {**metrics, "g_loss": g_loss}
        average_replica_statistics(self.generator.non_trainable_variables, self.num_replicas)
        # Every replica updates its own copy of the EMA generator from identical values (the official EMA:
        # hit-gan trainers/gan_trainer.py `_update_ema_model`).
        self._update_ema(step + 1)
        return metrics

    # ---- sampling and evaluation --------------------------------------------------------------------

    def eval_generator(self):
        """(checkpoint name, a fresh generator to restore it into): what evaluation and sampling use."""
        return "ema_generator", get_generator(self.generator_preset, name="ema_generator", **self.generator_overrides)

    def sampling_generator(self):
        return self.ema_generator

    def sample_images(self, num_samples, real_images=None):
        """The EMA generator's samples of seeds 0, 1, ... (hit.models.samples), in [-1, 1]."""
        del real_images
        return seed_images(self.ema_generator, seed_range(0, num_samples))

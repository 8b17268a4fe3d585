"""The GAT task (official GAT train.py, losses/Rp_PT_loss.py `RpGANPTLoss`): models, optimizers and ONE train
step for the generic trainer.

Per step, on the same real batch, z and labels (fakes always take the real batch's labels), as
official GAT train.py and `RpGANPTLoss.step_disc` / `step_gen`:
  D step   G's four levels (no gradient) and the reals are augmented (GAT's DiffAugment on latents, hit.gan.augment:
           reals once; the parameters and colour means of the deepest fake level reused on the three others) and
           MNG-noised (hit.gan.mng; independent draws for real and fake), then
             L_D = RpGAN(D(real~), D(fake~)) + 0.05 aR1 + 0.05 aR2 + 1.0 REPA(real~)
           aR1 / aR2: the clean real / each clean fake level + N(0, 0.01^2), with the same augmentation (stored means
           included) and noise, finite differences of D (hit.gan.penalties) in the compute precision, as the
           official bfloat16 autocast (penalty_precision 'compute'), or in float32; REPA only with DINOv2 features.
  G step   with the updated D: fresh augmentation and noise for both sides, D(real~) without gradient,
             L_G = RpGAN_G(D(real~), D(G(z, c)~));  then w_avg (per class, 0.995) and the EMA generator (0.999).
AdamW(beta 0, 0.99, eps 1e-8, weight decay 0) for both, the gradient of the whole batch clipped to norm 1.0
(hit.train.optimizers), constant width-aware learning rates 2e-4 * 768 / width (official train.py,
scripts/train_256_B2.sh), G and D each their own.

The data are SD-VAE latents (DataSource 'latents': batch["latent"], DINOv2 features for REPA) or, for the
pixel-space demo, images (batch["image"]: the identity autoencoder). Randomness is stateless, keyed by (seed, step,
stream) and drawn for the global batch; each replica takes its rows, so a run is the same on any replica count.
`step_draws` makes one step's draws (DRAWS lists them); `train_step(..., draws=...)` takes them from its caller
instead, so a step can be checked against a reference computed on the same draws (tests/test_gat_reference_step.py).
"""

import contextlib
import os

import gin
import tensorflow as tf

from hit.core.seeds import seed_range
from hit.gan import augment, losses, mng, penalties, repa
from hit.gan.ema import ExponentialMovingAverage
from hit.models.gat import stack_levels
from hit.models.presets import get_discriminator, get_generator
from hit.models.samples import Decoded, seed_images
from hit.models.weights.sd_vae_torch import load_sd_vae
from hit.tasks.base import TwoOptimizers, per_replica_batch
from hit.train.optimizers import AdamW
from hit.train.precision import check_precision, float32_compute, loss_scaled, policy_scope

GAT_POLICY = "color,translation,cutout,flip"
# Streams of the step's random draws (stateless_seed("step", seed, step, stream)).
Z, D_REAL_AUGMENT, D_FAKE_AUGMENT, D_REAL_NOISE, D_FAKE_NOISE, R1_NOISE, R2_NOISE = range(7)
G_REAL_AUGMENT, G_FAKE_AUGMENT, G_REAL_NOISE, G_FAKE_NOISE = range(7, 11)
# One step's random draws, this replica's rows (b: the per-replica batch, L = 4 levels, [H, W, C]: the data):
#   z                       [b, latent_dim] N(0, I), shared by the D and the G step (as official train.py)
#   {d,g}_{real,fake}_augment  hit.gan.augment parameters (without means: the step takes them from its inputs)
#   {d,g}_{real,fake}_noise   [L, b, H, W, C] N(0, I): MNG's fresh draws, nested by hit.gan.mng.nest_noise
#   r1_noise [b, H, W, C], r2_noise [L, b, H, W, C]  N(0, I): the aR1 / aR2 perturbations, before * sigma
DRAWS = ("z", "d_real_augment", "d_fake_augment", "d_real_noise", "d_fake_noise", "r1_noise", "r2_noise",
         "g_real_augment", "g_fake_augment", "g_real_noise", "g_fake_noise")
PENALTY_PRECISIONS = ("compute", "float32")


@gin.configurable(module="hit.tasks")
class GATTask(TwoOptimizers):
    """GAT: a transformer G with four MNG levels against a transformer D. The trainer calls build, then train_step
    in every replica.

    generator_preset / discriminator_preset: hit.models presets (the discriminator's defaults to the generator's,
    as the official `--model GAT-B/2 --modelD GAT-B/2`); learning rates default to base_lr * base_width / width.
    precision: "float32", "bfloat16" (variables float32) or "float16" (the same with loss scaling,
    hit.train.precision.DynamicLossScale). penalty_precision: "compute" runs the aR1 / aR2 passes in that precision
    (the official bfloat16 autocast), "float32" in float32. color_probability: GAT's colour op on that fraction of
    the samples (hit.gan.augment). vae_weights: the autoencoder that decodes samples (an SD-VAE file, or one
    written by tools/train_demo_vae.py; a latent run without it shows the first latent channels); None for
    pixel-space data.
    """

    metric_names = ("d_loss", "g_loss", "ar1_penalty", "ar2_penalty", "repa_loss", "d_total_loss", "real_logits",
                    "fake_logits", "g_hidden_std", "d_hidden_std")
    sample_name = "ema_generator"

    def __init__(self, generator_preset=gin.REQUIRED, discriminator_preset=None, generator_overrides=None,
                 discriminator_overrides=None, base_lr=2e-4, base_width=768, generator_lr=None, discriminator_lr=None,
                 beta1=0.0, beta2=0.99, epsilon=1e-8, weight_decay=0.0, clip_norm=1.0, r1_weight=0.05,
                 r2_weight=0.05, penalty_sigma=0.01, repa_weight=1.0, noise_levels=mng.NOISE_LEVELS,
                 augment_policy=GAT_POLICY, flip_probability=0.4, color_probability=0.5, ema_decay=0.999,
                 precision="float32", penalty_precision="compute", vae_weights=None, sample_psi=0.0):
        check_precision(precision)
        if penalty_precision not in PENALTY_PRECISIONS:
            raise ValueError(f"GATTask.penalty_precision must be one of {', '.join(PENALTY_PRECISIONS)}, "
                             f"got {penalty_precision!r}")
        self.generator_preset = generator_preset
        self.discriminator_preset = discriminator_preset or generator_preset
        self.generator_overrides = dict(generator_overrides or {})
        self.discriminator_overrides = dict(discriminator_overrides or {})
        if not repa_weight:  # the projector exists only when REPA is on
            self.discriminator_overrides.setdefault("repa", False)
        # Validate now (no weights are created), so a bad config fails before training starts.
        for name, factory, overrides, kind in (
                ("generator", get_generator, self.generator_overrides, "GATGenerator"),
                ("discriminator", get_discriminator, self.discriminator_overrides, "GATDiscriminator")):
            preset = getattr(self, name + "_preset")
            if not preset.startswith("gat_"):
                raise ValueError(f"GATTask.{name}_preset must name a GAT preset (gat_*), got {preset!r}")
            model = factory(preset, build=False, **overrides)
            assert type(model).__name__ == kind, (preset, type(model))
            if name == "generator":
                generator = model
            else:
                discriminator = model
        if len(noise_levels) != mng.NUM_LEVELS:
            raise ValueError(f"GATTask.noise_levels needs {mng.NUM_LEVELS} levels, got {noise_levels}")
        augment.draw_augment_params(tf.constant([0, 0], tf.int64), 1, 8, 8, augment_policy, flip_probability,
                                    color_probability)
        self.generator_lr = generator_lr or base_lr * base_width / generator.width
        self.discriminator_lr = discriminator_lr or base_lr * base_width / discriminator.width
        self.adamw = dict(beta_1=beta1, beta_2=beta2, epsilon=epsilon, weight_decay=weight_decay, clip_norm=clip_norm)
        self.r1_weight, self.r2_weight, self.penalty_sigma = r1_weight, r2_weight, penalty_sigma
        self.repa_weight, self.noise_levels = repa_weight, tuple(noise_levels)
        self.augment_policy, self.flip_probability = augment_policy, flip_probability
        self.color_probability = color_probability
        self.ema_decay, self.precision, self.penalty_precision = ema_decay, precision, penalty_precision
        self.vae_weights, self.sample_psi = vae_weights, sample_psi
        self._vae = None
        self.latent_dim, self.num_classes = generator.latent_dim, generator.num_classes
        self.resolution, self.channels = generator.resolution, generator.output_channels

    # ---- set-up ------------------------------------------------------------------------------------

    def _generator(self, name="generator", precision=None):
        with policy_scope(precision or self.precision):
            return get_generator(self.generator_preset, name=name, **self.generator_overrides)

    def build(self, strategy, global_batch_size, seed=0, jit_compile=True):
        """Create models and optimizers inside the strategy's scope (optimizers built before any step)."""
        self.strategy, self.global_batch_size, self.seed = strategy, global_batch_size, seed
        self.num_replicas = strategy.num_replicas_in_sync
        self.per_replica_batch = per_replica_batch("GATTask", global_batch_size, self.num_replicas)
        with strategy.scope():
            self.generator = self._generator()
            # The EMA generator only samples: float32 compute, as the official evaluation (no autocast there).
            self.ema_generator = self._generator("ema_generator", "float32")
            with policy_scope(self.precision):
                self.discriminator = get_discriminator(self.discriminator_preset, **self.discriminator_overrides)
            # Under float16 the loss scale is divided out before AdamW clips the gradient norm.
            self.generator_optimizer = loss_scaled(AdamW(learning_rate=self.generator_lr, **self.adamw), self.precision)
            self.discriminator_optimizer = loss_scaled(AdamW(learning_rate=self.discriminator_lr, **self.adamw),
                                                       self.precision)
            self.generator_optimizer.build(self.generator.trainable_variables)
            self.discriminator_optimizer.build(self.discriminator.trainable_variables)
            # The EMA starts as a copy of G and copies w_avg, as official GAT train.py `update_ema` (decay 0 at
            # the start; buffers copied).
            self.ema = ExponentialMovingAverage(self.generator, self.ema_generator, self.ema_decay, start_step=0,
                                                copy_non_trainable=True)
            self.ema.update(0)
        # No Python control flow on tensors in these steps: autograph's conversion would only cost tracing time.
        compile_ = (tf.function(jit_compile=True, autograph=False) if jit_compile
                    else tf.autograph.experimental.do_not_convert)
        self._step_draws = compile_(self.step_draws)
        self._discriminator_gradients = compile_(self._discriminator_gradients_fn)
        self._generator_gradients = compile_(self._generator_gradients_fn)
        self._update_ema = compile_(self.ema.update)

    def checkpoint_items(self):
        return {
            "generator": self.generator, "discriminator": self.discriminator, "ema_generator": self.ema_generator,
            "generator_optimizer": self.generator_optimizer, "discriminator_optimizer": self.discriminator_optimizer,
        }

    # ---- random draws ---------------------------------------------------------------------------------

    def _augment_params(self, step, stream, replica_id):
        params = augment.draw_augment_params(self.step_seed(step, stream), self.global_batch_size, self.resolution,
                                             self.resolution, self.augment_policy, self.flip_probability,
                                             self.color_probability)
        return augment.slice_params(params, replica_id * self.per_replica_batch, self.per_replica_batch)

    def step_draws(self, step, replica_id):
        """This replica's rows of step `step`'s random draws (DRAWS), drawn for the global batch."""
        levels, data = len(self.noise_levels), [self.resolution, self.resolution, self.channels]
        batch = self.global_batch_size

        def normal(shape, stream, axis=0):
            return self.step_normal(shape, step, stream, replica_id, axis)

        return {
            "z": normal([batch, self.latent_dim], Z),
            "d_real_augment": self._augment_params(step, D_REAL_AUGMENT, replica_id),
            "d_fake_augment": self._augment_params(step, D_FAKE_AUGMENT, replica_id),
            "d_real_noise": normal([levels, batch, *data], D_REAL_NOISE, axis=1),
            "d_fake_noise": normal([levels, batch, *data], D_FAKE_NOISE, axis=1),
            "r1_noise": normal([batch, *data], R1_NOISE),
            "r2_noise": normal([levels, batch, *data], R2_NOISE, axis=1),
            "g_real_augment": self._augment_params(step, G_REAL_AUGMENT, replica_id),
            "g_fake_augment": self._augment_params(step, G_FAKE_AUGMENT, replica_id),
            "g_real_noise": normal([levels, batch, *data], G_REAL_NOISE, axis=1),
            "g_fake_noise": normal([levels, batch, *data], G_FAKE_NOISE, axis=1),
        }

    # ---- what D sees --------------------------------------------------------------------------------

    def _real_stack(self, real, params, fresh_noise):
        """Reals: augmented once, copied to the four levels, MNG-noised, stacked on channels. `params` carry the
        colour means of the input they were drawn for (augment.with_input_means)."""
        levels = mng.copies(augment.apply_augment(real, params), len(self.noise_levels))
        return stack_levels(mng.perturb(levels, mng.nest_noise(fresh_noise, self.noise_levels), self.noise_levels))

    def _fake_stack(self, levels, params, fresh_noise):
        """G's levels [L, b, H, W, C]: each augmented with the same parameters (the colour means of the deepest
        level, as the official step draws them on gen_images[-1]), MNG-noised, stacked."""
        count = len(self.noise_levels)
        tiled = {k: tf.concat([v] * count, axis=0) for k, v in params.items()}
        flat = augment.apply_augment(tf.reshape(levels, [-1, *levels.shape[2:]]), tiled)
        augmented = tf.reshape(flat, levels.shape)
        return stack_levels(mng.perturb(augmented, mng.nest_noise(fresh_noise, self.noise_levels),
                                        self.noise_levels))

    def _repa_targets(self, batch, flip):
        """DINOv2 targets of the reals as augmented: the mirror image's features where a sample was flipped
        (stored with --flipped; else the patch grid mirrored and the class token kept)."""
        flip = tf.reshape(tf.cast(flip, tf.bool), [-1, 1])
        cls, patches = batch["dino_cls"], batch["dino_patches"]
        cls_flip = batch.get("dino_cls_flip", cls)
        patches_flip = batch.get("dino_patches_flip")
        if patches_flip is None:
            patches_flip = repa.flip_patch_features(patches)
        return tf.where(flip, cls_flip, cls), tf.where(flip[..., None], patches_flip, patches)

    # ---- the step -----------------------------------------------------------------------------------

    def _discriminator_gradients_fn(self, batch, real, labels, draws):
        levels = tf.stack(self.generator.levels(draws["z"], labels, training=True))
        levels = tf.stop_gradient(tf.cast(levels, tf.float32))  # [L, b, H, W, C]
        real_params = augment.with_input_means(real, draws["d_real_augment"])
        fake_params = augment.with_input_means(levels[-1], draws["d_fake_augment"])
        sigma = self.penalty_sigma
        real_perturbed = real + sigma * draws["r1_noise"]
        fake_perturbed = levels + sigma * draws["r2_noise"]
        use_repa = bool(self.repa_weight)
        if use_repa and "dino_cls" not in batch:
            raise ValueError("REPA needs DINOv2 features in the data: extract the latents with --dinov2_weights, "
                             "or set GATTask.repa_weight = 0")
        with tf.GradientTape() as tape:
            real_stack = self._real_stack(real, real_params, draws["d_real_noise"])
            fake_stack = self._fake_stack(levels, fake_params, draws["d_fake_noise"])
            real_out = self.discriminator.forward_with_features(real_stack, labels, training=True)
            fake_logits = self.discriminator(fake_stack, labels, training=True)
            real_logits = real_out["logits"]
            d_loss = losses.relativistic_discriminator_loss(real_logits, fake_logits)
            # aR1 / aR2: the perturbed pair in one D pass. 'compute': in the task's precision, against the main
            # pass's logits (the official bfloat16 autocast); 'float32': both halves of each pair in float32.
            b = self.per_replica_batch
            perturbed = [self._real_stack(real_perturbed, real_params, draws["d_real_noise"]),
                         self._fake_stack(fake_perturbed, fake_params, draws["d_fake_noise"])]
            in_float32 = self.penalty_precision == "float32" and self.precision != "float32"
            unperturbed = [real_stack, fake_stack] if in_float32 else []
            with float32_compute(self.discriminator) if in_float32 else contextlib.nullcontext():
                pair = self.discriminator(tf.concat(unperturbed + perturbed, axis=0),
                                          tf.tile(labels, [2 + len(unperturbed)]), training=True)
            if unperturbed:
                clean_real, clean_fake, pair = pair[:b], pair[b:2 * b], pair[2 * b:]
            else:
                clean_real, clean_fake = real_logits, fake_logits
            ar1 = penalties.approximate_gradient_penalty(clean_real, pair[:b], sigma)
            ar2 = penalties.approximate_gradient_penalty(clean_fake, pair[b:], sigma)
            repa_term = tf.constant(0.0)
            if use_repa:
                target_cls, target_patches = self._repa_targets(batch, real_params.get("flip", tf.zeros([b], bool)))
                repa_term = repa.repa_loss(real_out["repa_cls"], real_out["repa_patches"], target_cls, target_patches)
            total = d_loss + self.r1_weight * ar1 + self.r2_weight * ar2 + self.repa_weight * repa_term
            scaled = self.discriminator_optimizer.scale_loss(total / self.num_replicas)  # the optimizer sums replicas
        grads = tape.gradient(scaled, self.discriminator.trainable_variables)
        metrics = {"d_loss": d_loss, "ar1_penalty": ar1, "ar2_penalty": ar2, "repa_loss": repa_term,
                   "d_total_loss": total, "real_logits": tf.reduce_mean(real_logits),
                   "fake_logits": tf.reduce_mean(fake_logits),
                   "d_hidden_std": tf.math.reduce_std(tf.cast(real_out["hidden"], tf.float32))}
        return grads, metrics

    def _generator_gradients_fn(self, real, labels, draws):
        real_params = augment.with_input_means(real, draws["g_real_augment"])
        real_stack = self._real_stack(real, real_params, draws["g_real_noise"])
        real_logits = tf.stop_gradient(self.discriminator(real_stack, labels, training=True))
        with tf.GradientTape() as tape:
            out = self.generator.forward_with_features(draws["z"], labels, training=True)
            levels = tf.cast(tf.stack(out["levels"]), tf.float32)
            # The deepest level's colour means keep their gradient, as the official step's gen_aug_params do.
            fake_params = augment.with_input_means(levels[-1], draws["g_fake_augment"])
            fake_logits = self.discriminator(self._fake_stack(levels, fake_params, draws["g_fake_noise"]), labels,
                                             training=True)
            g_loss = losses.relativistic_generator_loss(real_logits, fake_logits)
            scaled = self.generator_optimizer.scale_loss(g_loss / self.num_replicas)
        grads = tape.gradient(scaled, self.generator.trainable_variables)
        metrics = {"g_loss": g_loss, "g_hidden_std": tf.math.reduce_std(tf.cast(out["hidden"], tf.float32))}
        return grads, out["w"], metrics

    def _inputs(self, batch):
        real = batch["latent"] if "latent" in batch else batch["image"]
        real = tf.ensure_shape(tf.cast(real, tf.float32), [self.per_replica_batch, self.resolution, self.resolution,
                                                            self.channels])
        labels = batch.get("label")
        labels = tf.zeros([self.per_replica_batch], tf.int32) if labels is None else tf.cast(labels, tf.int32)
        return real, labels

    def train_step(self, batch, step, replica_id, draws=None):
        """One step on one replica (inside strategy.run): D update, then G update against the new D. draws: this
        replica's random draws (DRAWS) from the caller; by default step_draws(step, replica_id)."""
        real, labels = self._inputs(batch)
        if draws is None:
            draws = self._step_draws(step, replica_id)
        missing = [name for name in DRAWS if name not in draws]
        if missing:
            raise ValueError(f"GATTask.train_step: draws lacks {missing}")
        extras = {k: v for k, v in batch.items() if k.startswith("dino_")}
        d_draws = {k: v for k, v in draws.items() if k == "z" or k.startswith(("d_", "r1_", "r2_"))}
        g_draws = {k: v for k, v in draws.items() if k == "z" or k.startswith("g_")}
        d_grads, metrics = self._discriminator_gradients(extras, real, labels, d_draws)
        self.discriminator_optimizer.apply_gradients(zip(d_grads, self.discriminator.trainable_variables))
        g_grads, w, g_metrics = self._generator_gradients(real, labels, g_draws)
        self.generator_optimizer.apply_gradients(zip(g_grads, self.generator.trainable_variables))
        self.generator.update_w_avg(w, labels)  # the global batch's class means (summed over replicas)
        self._update_ema(step + 1)
        return {**metrics, **g_metrics}

    # ---- samples and evaluation ----------------------------------------------------------------------

    @property
    def vae(self):
        """The autoencoder of vae_weights (loaded on first use, its configuration and scale factor from the file),
        or None."""
        if self.vae_weights and self._vae is None:
            if not tf.io.gfile.exists(self.vae_weights):
                raise ValueError(f"autoencoder weights not found at {self.vae_weights}: copy sd-vae-ft-mse's "
                                 ".safetensors there (the demo: tools/train_demo_vae.py writes one), or set "
                                 "GATTask.vae_weights (tools: --vae_weights)")
            self._vae = load_sd_vae(self.vae_weights, latent_resolution=self.resolution)
        return self._vae

    def decode(self, latents):
        """G's output -> images in [-1, 1]: through the SD-VAE when vae_weights is set, else as they are (pixel
        space; a latent run without a VAE shows its first three channels)."""
        if self.vae is not None:
            latents = self.vae.decode(latents)
        elif latents.shape[-1] > 3:
            latents = latents[..., :3]
        return tf.clip_by_value(latents, -1.0, 1.0)

    def sampling_generator(self):
        """The EMA generator, its samples decoded to images (hit.models.samples.Decoded)."""
        return Decoded(self.ema_generator, self.decode, self.decoder, self.vae)

    def sample_images(self, num_samples, real_images=None):
        """The EMA generator's samples of seeds 0, 1, ... (hit.models.samples: each seed's class, so every class
        in turn), truncation sample_psi, decoded, in [-1, 1]."""
        del real_images
        return seed_images(self.sampling_generator(), seed_range(0, num_samples), truncation_psi=self.sample_psi)

    @property
    def decoder(self):
        """What decode() goes through, as results name it: the VAE file's name, or "identity"."""
        return os.path.basename(self.vae_weights) if self.vae_weights else "identity"

    def eval_generator(self):
        """(checkpoint name, a fresh generator to restore it into): what evaluation, sampling and export use; a
        hit.models.samples.Decoded around it, so its images come through decode()."""
        return "ema_generator", Decoded(self._generator("ema_generator", "float32"), self.decode, self.decoder,
                                        self.vae)

"""VQ-HiT training (HiT paper Sec. 4.3, Appendix A.5, eqs. 4-5): the autoencoder against a StyleGAN2 D.

    L_D  = NS(D(x), D(x_hat)) + gamma * R1(x),  gamma = 10                                           (eq. 4)
    L_AE = ||x - x_hat||^2 + lambda1 * ||F(x) - F(x_hat)||^2 + lambda2 * NS_G(D(x_hat)) + L_VQ         (eq. 5)

x_hat = G(E(x)); lambda1 = 5e-5, lambda2 = 0.1; Adam(0, 0.99), lr 1e-4 for both (A.5). Choices where the
paper is silent, each said where it is made:
- ||x - x_hat||^2 is the mean over pixels and channels (a sum would dwarf the other terms by 1e5).
- F and the perceptual distance: hit.gan.perceptual (VGG16 at LPIPS's five layers, unit-normalised features,
  summed), chosen so that lambda1 = 5e-5 gives a term of the same order as the others.
- L_VQ = codebook + 0.25 * commitment loss (hit.layers.quantizer; VQGAN's beta), weight 1 as VQGAN's.
- The non-saturating G term is on every step from step 0 with the fixed weight lambda2 (VQGAN starts its
  discriminator late and weighs it adaptively; the paper states a fixed lambda2).
- Both updates come from one forward pass with the pre-update weights (the HiT GAN's simultaneous scheme).
- No EMA: neither the paper nor VQGAN averages the autoencoder.
The step runs wholly in each replica, as GANTask's; codebook usage (perplexity, unused codes) is counted over
the global batch.
"""

import gin
import tensorflow as tf

from hit.gan import losses, penalties
from hit.gan.perceptual import VGGFeatures, perceptual_distance
from hit.layers.quantizer import code_counts, code_usage
from hit.models.presets import get_discriminator, get_vqhit
from hit.tasks.base import Task, average_replica_statistics, per_replica_batch
from hit.train.optimizers import Adam
from hit.train.precision import check_precision, inner_gradient_scale, loss_scaled, policy_scope

RANDOM_VGG = "random"


@gin.configurable(module="hit.tasks")
class VQHiTTask(Task):
    """VQ-HiT autoencoder + discriminator. The trainer calls build, then train_step in every replica.

    vgg_weights_path: Keras' VGG16 no-top weights file (vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5), or
    "random" for an untrained VGG (tests and offline smoke runs only); needed when perceptual_weight > 0.
    bn_group_size: the decoder's BatchNorm groups (hit.layers.normalization), as GANTask's.
    precision: "float32", "bfloat16" (mixed_bfloat16 for the autoencoder, D and VGG; the quantiser, the losses
    and the perceptual distance's sums in float32) or "float16" (the same with loss scaling), as GANTask's.
    """

    metric_names = ("reconstruction_loss", "perceptual_loss", "g_loss", "codebook_loss", "commitment_loss",
                    "ae_total_loss", "d_loss", "r1_penalty", "d_total_loss", "real_logits", "fake_logits",
                    "perplexity", "unused_codes")
    sample_name = "input_reconstruction"

    def __init__(self, model_preset="vqhit_imagenet_256", model_overrides=None,
                 discriminator_preset="stylegan_d_256", discriminator_overrides=None, autoencoder_lr=1e-4,
                 discriminator_lr=1e-4, beta1=0.0, beta2=0.99, adam_epsilon=1e-7, loss_type="non_saturating",
                 r1_weight=10.0, perceptual_weight=5e-5, adversarial_weight=0.1, vgg_weights_path=None,
                 bn_group_size=None, precision="float32"):
        check_precision(precision)
        self.precision = precision
        losses.discriminator_loss(tf.zeros([1]), tf.zeros([1]), loss_type)  # a bad loss type fails now
        self.model_overrides = dict(model_overrides or {})
        if bn_group_size is not None:
            self.model_overrides["bn_group_size"] = bn_group_size
        self.bn_group_size = self.model_overrides.get("bn_group_size")
        get_vqhit(model_preset, build=False, **self.model_overrides)
        get_discriminator(discriminator_preset, build=False, **(discriminator_overrides or {}))
        if perceptual_weight and not vgg_weights_path:
            raise ValueError("VQHiTTask.perceptual_weight > 0 needs VQHiTTask.vgg_weights_path: Keras' VGG16 "
                             "weights file vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 (or 'random' for an "
                             "untrained VGG in smoke tests)")
        self.model_preset, self.discriminator_preset = model_preset, discriminator_preset
        self.discriminator_overrides = dict(discriminator_overrides or {})
        self.autoencoder_lr, self.discriminator_lr = autoencoder_lr, discriminator_lr
        self.beta1, self.beta2, self.adam_epsilon = beta1, beta2, adam_epsilon
        self.loss_type, self.r1_weight = loss_type, r1_weight
        self.perceptual_weight, self.adversarial_weight = perceptual_weight, adversarial_weight
        self.vgg_weights_path = vgg_weights_path
        self._sample_inputs = None

    # ---- set-up ------------------------------------------------------------------------------------

    def build(self, strategy, global_batch_size, seed=0, jit_compile=True):
        """Create models and optimizers inside the strategy's scope (optimizers built before any step)."""
        del seed  # the step draws nothing at random
        self.strategy, self.global_batch_size = strategy, global_batch_size
        self.num_replicas = strategy.num_replicas_in_sync
        self.per_replica_batch = per_replica_batch("VQHiTTask", global_batch_size, self.num_replicas,
                                                   self.bn_group_size)
        with strategy.scope():
            with policy_scope(self.precision):
                self.model = get_vqhit(self.model_preset, **self.model_overrides)
                self.discriminator = get_discriminator(self.discriminator_preset, **self.discriminator_overrides)
                self.vgg = None
                if self.perceptual_weight:
                    path = None if self.vgg_weights_path == RANDOM_VGG else self.vgg_weights_path
                    self.vgg = VGGFeatures(weights_path=path)
            adam = dict(beta_1=self.beta1, beta_2=self.beta2, epsilon=self.adam_epsilon)
            self.autoencoder_optimizer = loss_scaled(Adam(self.autoencoder_lr, **adam),
                                                     self.precision)
            self.discriminator_optimizer = loss_scaled(Adam(self.discriminator_lr, **adam),
                                                       self.precision)
            self.autoencoder_optimizer.build(self.model.trainable_variables)
            self.discriminator_optimizer.build(self.discriminator.trainable_variables)
        self.resolution, self.num_codes = self.model.resolution, self.model.num_codes
        compile_ = tf.function(jit_compile=True) if jit_compile else (lambda fn: fn)
        self._gradients = compile_(self._gradients_fn)

    def checkpoint_items(self):
        return {"model": self.model, "discriminator": self.discriminator,
                "autoencoder_optimizer": self.autoencoder_optimizer,
                "discriminator_optimizer": self.discriminator_optimizer}

    @property
    def global_step(self):
        """Steps taken: the autoencoder optimizer's iteration count."""
        return self.autoencoder_optimizer.iterations

    def learning_rates(self):
        return {"autoencoder_lr": self.autoencoder_optimizer.learning_rate,
                "discriminator_lr": self.discriminator_optimizer.learning_rate}

    # ---- the step -----------------------------------------------------------------------------------

    def _gradients_fn(self, images):
        """Both gradients from one forward pass (eqs. 4-5). Losses / replicas: the optimizer sums replicas."""
        with tf.GradientTape() as ae_tape, tf.GradientTape() as d_tape:
            reconstructions, codes, vq_losses = self.model.reconstruct(images, training=True)
            fake_logits = self.discriminator(reconstructions, training=True)
            real_logits, r1 = penalties.r1_penalty(self.discriminator, images,
                                                   inner_gradient_scale(self.discriminator_optimizer))
            d_loss = losses.discriminator_loss(real_logits, fake_logits, self.loss_type)
            d_total = d_loss + self.r1_weight * r1
            reconstruction = tf.reduce_mean(tf.square(images - reconstructions))
            perceptual = tf.constant(0.0)
            if self.vgg is not None:
                perceptual = tf.reduce_mean(perceptual_distance(self.vgg, images, reconstructions))
            g_loss = losses.generator_loss(fake_logits, self.loss_type)
            ae_total = (reconstruction + self.perceptual_weight * perceptual + self.adversarial_weight * g_loss
                        + vq_losses["codebook_loss"] + vq_losses["commitment_loss"])
            ae_scaled = self.autoencoder_optimizer.scale_loss(ae_total / self.num_replicas)
            d_scaled = self.discriminator_optimizer.scale_loss(d_total / self.num_replicas)
        ae_grads = ae_tape.gradient(ae_scaled, self.model.trainable_variables)
        d_grads = d_tape.gradient(d_scaled, self.discriminator.trainable_variables)
        metrics = {"reconstruction_loss": reconstruction, "perceptual_loss": perceptual, "g_loss": g_loss,
                   **vq_losses, "ae_total_loss": ae_total, "d_loss": d_loss, "r1_penalty": r1,
                   "d_total_loss": d_total, "real_logits": tf.reduce_mean(real_logits),
                   "fake_logits": tf.reduce_mean(fake_logits)}
        return ae_grads, d_grads, metrics, code_counts(codes, self.num_codes)

    def train_step(self, batch, step, replica_id):
        """One step on one replica (inside strategy.run); returns this replica's metrics."""
        del step, replica_id
        ae_grads, d_grads, metrics, counts = self._gradients(batch["image"])
        self.autoencoder_optimizer.apply_gradients(zip(ae_grads, self.model.trainable_variables))
        self.discriminator_optimizer.apply_gradients(zip(d_grads, self.discriminator.trainable_variables))
        average_replica_statistics(self.model.non_trainable_variables, self.num_replicas)
        if self.num_replicas > 1:  # codebook usage of the global batch
            counts = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, counts)
        metrics["perplexity"], metrics["unused_codes"] = code_usage(counts)
        return metrics

    # ---- samples and evaluation ---------------------------------------------------------------------

    def sample_images(self, num_samples, real_images):
        """Input | reconstruction pairs [N, H, 2W, C] in [-1, 1] of real_images(N), the run's first N eval images
        (the same images at every step)."""
        if self._sample_inputs is None or len(self._sample_inputs) != num_samples:
            self._sample_inputs = real_images(num_samples)
        reconstructions = tf.clip_by_value(self.model(self._sample_inputs, training=False), -1.0, 1.0)
        return tf.concat([self._sample_inputs, reconstructions], axis=2)

    def eval_generator(self):
        """(checkpoint name, a fresh model to restore it into): what evaluation and export use."""
        return "model", get_vqhit(self.model_preset, **self.model_overrides)

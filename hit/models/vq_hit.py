"""VQ-HiT (HiT paper Sec. 4.3, Table 2, Appendix A.5): VQGAN's encoder, a codebook, and HiT as the decoder.

    images [B, R, R, 3] --VQGANEncoder--> [B, g, g, z_channels] --quant_conv 1x1--> z [B, g, g, D]
      --VectorQuantizer--> codes [B, g, g] / z_q --HiTDecoder--> reconstructions [B, R, R, 3]

The paper: "the same encoder E as the one of VQGAN" (f16: R 256 -> g 16, D 256, 1024 codes) and "HiT using the
HiT-B configuration in Table 9 for producing 256 x 256 images". No VQ-HiT code exists (none in hit-gan), so
where the paper is silent we follow VQGAN and say so:
- quant_conv, VQGAN's 1x1 conv from z_channels to the code width, PyTorch's default initialisation.
- The decoder is HiT-B from its 16x16 stage on: a 16x16 grid replaces the generator's 8x8 start and its first
  (8x8) stage, so the decoder's stages are HiT-B's stages 1-5 with their channels, heads, layers and block
  sizes (Table 9). Linear(z) of Algorithm 1 becomes a per-position Linear(D -> C) of the quantised grid (VQGAN's
  post_quant_conv is a 1x1 conv in the same place).
- Cross-attention needs latent tokens (Sec. 3.3). We pool the quantised grid to 4x4 and project each of those
  16 vectors to the token width, then add a position embedding and normalise (hit.layers.embeddings.GridTokens):
  the generator's 16 tokens as wide as its first stage, with the same cost, each token summarising one region
  of the image; the grid itself already enters the first stage at full detail, so 256 tokens would repeat it.
"""

import keras
import numpy as np
import tensorflow as tf

from hit.layers.embeddings import GridTokens
from hit.layers.initializers import trunc_normal
from hit.layers.normalization import Norm
from hit.layers.quantizer import VectorQuantizer
from hit.models.hit_generator import make_stages, validate_config
from hit.models.symbolic import SymbolicBuild
from hit.models.vqgan_encoder import VQGANEncoder, conv


class HiTDecoder(keras.Model):
    """Quantised grid [B, g, g, D] -> images [B, g * 2^(S-1), same, output_channels], float32, no tanh.

    Per-stage lists as HiTGenerator's (channels, num_heads, num_layers, block_sizes), the first stage at g x g.
    """

    def __init__(self, grid_size, embedding_dim, output_size, channels, num_heads, num_layers, block_sizes,
                 num_latent_tokens=16, attention_type="multi_axis", multi_query=True, norm_type="batch",
                 bn_group_size=None, bn_unbiased_moving_variance=True, output_channels=3, name="decoder", **kwargs):
        channels, num_heads, num_layers, block_sizes = map(tuple, (channels, num_heads, num_layers, block_sizes))
        validate_config(output_size, embedding_dim, channels, num_heads, num_layers, block_sizes, attention_type,
                        None, None, initial_size=grid_size)
        norm = Norm(norm_type, bn_group_size, bn_unbiased_moving_variance)
        super().__init__(name=name, **kwargs)
        self.tokens = GridTokens(num_latent_tokens, channels[0], grid_size, norm, name="grid_tokens")
        self.input_projection = keras.layers.Dense(channels[0], kernel_initializer=trunc_normal(),
                                                   name="input_projection")
        self.stages = make_stages(grid_size, channels, num_heads, num_layers, block_sizes, attention_type, None,
                                  True, multi_query, norm, output_channels)

    def call(self, grid, training=None):
        x, tokens, image = self.input_projection(grid), self.tokens(grid, training=training), None
        for stage in self.stages:
            x, image = stage(x, tokens, image, training=training)
        return keras.ops.cast(image, "float32")


class VQHiT(SymbolicBuild, keras.Model):
    """The autoencoder. model(images) reconstructs; encode / decode go through the int32 codes [B, g, g].

    Encoder arguments are VQGANEncoder's (encoder_*), the codebook's (embedding_dim, num_codes, beta), and the
    decoder's are HiTDecoder's (channels, num_heads, num_layers, block_sizes, norm and attention options).
    """

    # parameter_counts(): the encoder (to its output conv), quant_conv, the codebook and the decoder
    parts = {"encoder": "encoder", "quant_conv": "quant_conv", "codebook": "quantizer", "decoder": "decoder"}

    def __init__(self, resolution, encoder_channels, encoder_multipliers, encoder_res_blocks,
                 encoder_attention_resolutions, z_channels, embedding_dim, num_codes, channels, num_heads,
                 num_layers, block_sizes, image_channels=3, groups=32, beta=0.25, num_latent_tokens=16,
                 attention_type="multi_axis", multi_query=True, norm_type="batch",
                 bn_group_size=None, bn_unbiased_moving_variance=True, name="vq_hit", **kwargs):
        config = {k: v for k, v in locals().items() if k not in ("self", "kwargs", "__class__", "name")}
        encoder = VQGANEncoder(resolution, image_channels, encoder_channels, encoder_multipliers,
                               encoder_res_blocks, encoder_attention_resolutions, z_channels, groups, name="encoder")
        grid = encoder.output_resolution
        decoder = HiTDecoder(grid, embedding_dim, resolution, channels, num_heads, num_layers, block_sizes,
                             num_latent_tokens, attention_type, multi_query, norm_type, bn_group_size,
                             bn_unbiased_moving_variance, image_channels, name="decoder")
        # float32 under any policy: nearest-code distances in bfloat16 would pick other codes.
        quantizer = VectorQuantizer(num_codes, embedding_dim, beta, name="quantizer", dtype="float32")
        super().__init__(name=name, **kwargs)
        self._config = config
        self.encoder, self.decoder, self.quantizer = encoder, decoder, quantizer
        self.quant_conv = conv(embedding_dim, 1, z_channels, name="quant_conv")
        self.resolution, self.image_channels, self.grid_size, self.num_codes = resolution, image_channels, grid, \
            num_codes

    # ---- checks (before Keras wraps errors raised inside call into a multi-line report) ---------------

    def _check_images(self, images):
        shape = list(getattr(images, "shape", np.shape(images)))
        expected = [self.resolution, self.resolution, self.image_channels]
        if len(shape) != 4 or shape[1:] != expected:
            raise ValueError(f"{self.name} expects images of shape [batch, {', '.join(map(str, expected))}], "
                             f"got {shape}")

    def _check_codes(self, codes):
        """Shape [batch, g, g], an integer dtype, and (when the values are known) in [0, num_codes)."""
        codes = tf.convert_to_tensor(codes)
        shape = codes.shape.as_list()
        if len(shape) != 3 or shape[1:] != [self.grid_size, self.grid_size]:
            raise ValueError(f"{self.name} decodes codes of shape [batch, {self.grid_size}, {self.grid_size}], "
                             f"got {shape}")
        if not codes.dtype.is_integer:
            raise ValueError(f"{self.name} decodes integer codes, got {codes.dtype.name}")
        codes = tf.cast(codes, tf.int32)
        message = f"codes must be in [0, {self.num_codes})"
        if tf.executing_eagerly():
            if tf.size(codes) and (tf.reduce_min(codes) < 0 or tf.reduce_max(codes) >= self.num_codes):
                raise ValueError(f"{message}, got values in [{int(tf.reduce_min(codes))}, "
                                 f"{int(tf.reduce_max(codes))}]")
            return codes
        checks = [tf.debugging.assert_non_negative(codes, message=message),
                  tf.debugging.assert_less(codes, self.num_codes, message=message)]
        with tf.control_dependencies(checks):
            return tf.identity(codes)

    # ---- the model ------------------------------------------------------------------------------------

    def __call__(self, images, *args, **kwargs):
        self._check_images(images)
        return super().__call__(images, *args, **kwargs)

    def quantize_images(self, images, training=None):
        """(z_q with straight-through gradients [B, g, g, D], codes [B, g, g], {codebook_loss, commitment_loss})."""
        self._check_images(images)
        return self.quantizer(self.quant_conv(self.encoder(images, training=training)))

    def reconstruct(self, images, training=None):
        """(reconstructions, codes, quantiser losses): the whole autoencoder, for training."""
        z_q, codes, losses = self.quantize_images(images, training=training)
        return self.decoder(z_q, training=training), codes, losses

    def call(self, images, training=None):
        return self.reconstruct(images, training=training)[0]

    def encode(self, images):
        """images [B, R, R, C] in [-1, 1] -> int32 codes [B, g, g]."""
        return self.quantize_images(images, training=False)[1]

    def decode(self, codes):
        """int codes [B, g, g] in [0, num_codes) -> images [B, R, R, C] (unclipped, as the decoder's output)."""
        return self.decoder(self.quantizer.lookup(self._check_codes(codes)), training=False)

    def symbolic_input_shapes(self, batch_size):
        return [(batch_size, self.resolution, self.resolution, self.image_channels)]

    def get_config(self):
        return {**super().get_config(), **self._config}

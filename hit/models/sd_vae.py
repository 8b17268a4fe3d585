"""The Stable Diffusion VAE (ldm's AutoencoderKL, f8, 4 latent channels) as Keras 3 layers (NHWC): GAT's latent space.

GAT (and REPA before it) encodes 256 x 256 images with stabilityai/sd-vae-ft-mse into a 32 x 32 x 4 posterior
N(mean, std^2), trains on z = (mean + std * eps) * 0.18215 and decodes generated latents with the same VAE family.
The architecture is ldm's (ldm/modules/diffusionmodules/model.py; diffusers' AutoencoderKL is the same network):

    encoder          VQGAN's / ldm's Encoder, reused from hit.models.vqgan_encoder: ch 128, ch_mult (1, 2, 4, 4),
                     2 ResnetBlocks per level, attention only in the mid block, double_z: conv_out -> 2 * 4 moments
    quant_conv       1x1 conv 8 -> 8; moments = (mean, logvar), logvar clipped to [-30, 20], std = exp(logvar / 2)
    post_quant_conv  1x1 conv 4 -> 4
    decoder          conv_in 4 -> 512, mid (ResnetBlock, AttnBlock, ResnetBlock), then the levels from the deepest
                     (512) to the first (128), each num_res_blocks + 1 = 3 ResnetBlocks and, but for the last level,
                     Upsample (nearest 2x, 3x3 conv); norm_out, swish, conv_out 128 -> 3

83,653,863 trainable parameters (encoder 34,163,592, quant_conv 72, post_quant_conv 20, decoder 49,490,179).
Keras layer names follow ldm's modules with ldm's level numbers (decoder.up.3.block.0 -> up_3_block_0, the first
decoder level applied). Weights load from a local .safetensors file in ldm / CompVis or diffusers naming
(hit.models.weights.sd_vae_torch.load_sd_vae).
"""

import keras
import numpy as np

from hit.models.latent_space import SCALE_FACTOR, check_scale_factor
from hit.models.symbolic import SymbolicBuild
from hit.models.vqgan_encoder import AttnBlock, ResnetBlock, VQGANEncoder, conv, group_norm, swish

SD_CHANNEL_MULTIPLIERS = (1, 2, 4, 4)  # SD's four levels: f8
LOGVAR_RANGE = (-30.0, 20.0)  # ldm's DiagonalGaussianDistribution clamps the log-variance to this range


class SDVAEEncoder(VQGANEncoder):
    """VQGANEncoder that takes any image size its levels divide (it has no attention outside the mid block, whose
    attention spans all positions, so nothing in it depends on the size it was configured with)."""

    def _check_images(self, images):
        shape = list(getattr(images, "shape", np.shape(images)))
        factor = 2 ** (len(self._config["channel_multipliers"]) - 1)
        if len(shape) != 4 or shape[3] != self.in_channels or any(s is None or s % factor for s in shape[1:3]):
            raise ValueError(f"{self.name} expects images of shape [batch, H, W, {self.in_channels}] with H and W "
                             f"divisible by {factor}, got {shape}")


class Upsample(keras.layers.Layer):
    """ldm's Upsample(with_conv=True): nearest-neighbour 2x (each pixel becomes a 2 x 2 square), then a 3x3 conv."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.conv = conv(channels, 3, channels, name="conv")

    def call(self, x):
        return self.conv(keras.ops.repeat(keras.ops.repeat(x, 2, axis=1), 2, axis=2))

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}


class SDVAEDecoder(keras.Model):
    """ldm's Decoder: latents [B, h, w, z_channels] -> images [B, h * 2^(L-1), w * 2^(L-1), out_channels], float32.

    Level i (ldm's up[i], width ch * ch_mult[i]) runs in the order L-1, ..., 0, as ldm applies them."""

    def __init__(self, out_channels=3, channels=128, channel_multipliers=(1, 2, 4, 4), num_res_blocks=2, z_channels=4,
                 groups=32, name="decoder", **kwargs):
        channel_multipliers = tuple(channel_multipliers)
        super().__init__(name=name, **kwargs)
        self._config = dict(out_channels=out_channels, channels=channels, channel_multipliers=channel_multipliers,
                            num_res_blocks=num_res_blocks, z_channels=z_channels, groups=groups)
        self.z_channels = z_channels
        block_in = channels * channel_multipliers[-1]
        self.conv_in = conv(block_in, 3, z_channels, name="conv_in")
        self.body = [
            ResnetBlock(block_in, block_in, groups, name="mid_block_1"),
            AttnBlock(block_in, groups, name="mid_attn_1"),
            ResnetBlock(block_in, block_in, groups, name="mid_block_2"),
        ]
        for i in reversed(range(len(channel_multipliers))):
            block_out = channels * channel_multipliers[i]
            for j in range(num_res_blocks + 1):
                self.body.append(ResnetBlock(block_in, block_out, groups, name=f"up_{i}_block_{j}"))
                block_in = block_out
            if i:
                self.body.append(Upsample(block_in, name=f"up_{i}_upsample"))
        self.norm_out = group_norm(groups, name="norm_out")
        self.conv_out = conv(out_channels, 3, block_in, name="conv_out")

    def _check_latents(self, latents):
        shape = list(getattr(latents, "shape", np.shape(latents)))
        if len(shape) != 4 or shape[3] != self.z_channels:
            raise ValueError(f"{self.name} expects latents of shape [batch, h, w, {self.z_channels}], got {shape}")

    def __call__(self, latents, *args, **kwargs):
        self._check_latents(latents)  # before Keras wraps errors raised inside call into a multi-line report
        return super().__call__(latents, *args, **kwargs)

    def call(self, latents, training=None):
        x = self.conv_in(latents)
        for layer in self.body:
            x = layer(x)
        return keras.ops.cast(self.conv_out(swish(self.norm_out(x))), "float32")

    def get_config(self):
        return {**super().get_config(), **self._config}


class SDVAE(SymbolicBuild, keras.Model):
    """The KL autoencoder. encode: images in [-1, 1] -> (mean, std); decode: scaled latents -> images.

    scale_factor: latents are z * scale_factor (ldm's LatentDiffusion.scale_factor, about 1 / std of the training
    latents: SD's 0.18215 by default; another VAE measures its own, see hit.train.demo_vae).

    `resolution` is the size build_symbolic traces; encode takes any H, W divisible by 2^(L-1) (8 for SD).
    model(images) reconstructs through the posterior mean."""

    parts = {name: name for name in ("encoder", "quant_conv", "post_quant_conv", "decoder")}  # parameter_counts()

    def __init__(self, resolution=256, channels=128, channel_multipliers=SD_CHANNEL_MULTIPLIERS, num_res_blocks=2,
                 latent_channels=4, groups=32, image_channels=3, scale_factor=SCALE_FACTOR, name="sd_vae", **kwargs):
        channel_multipliers = tuple(channel_multipliers)
        scale_factor = check_scale_factor(scale_factor)
        # VQGANEncoder validates the shared sizes, so it is made first.
        encoder = SDVAEEncoder(resolution, image_channels, channels, channel_multipliers, num_res_blocks, (),
                               2 * latent_channels, groups, name="encoder")
        super().__init__(name=name, **kwargs)
        self._config = dict(resolution=resolution, channels=channels, channel_multipliers=channel_multipliers,
                            num_res_blocks=num_res_blocks, latent_channels=latent_channels, groups=groups,
                            image_channels=image_channels)
        self.scale_factor = scale_factor  # set it after training a VAE of one's own (hit.train.demo_vae)
        self.resolution, self.image_channels, self.latent_channels = resolution, image_channels, latent_channels
        self.channel_multipliers, self.num_res_blocks = channel_multipliers, num_res_blocks
        self.encoder = encoder
        self.quant_conv = conv(2 * latent_channels, 1, 2 * latent_channels, name="quant_conv")
        self.post_quant_conv = conv(latent_channels, 1, latent_channels, name="post_quant_conv")
        self.decoder = SDVAEDecoder(image_channels, channels, channel_multipliers, num_res_blocks, latent_channels,
                                    groups, name="decoder")

    def __call__(self, images, *args, **kwargs):
        self.encoder._check_images(images)  # before Keras wraps errors raised inside call into a multi-line report
        return super().__call__(images, *args, **kwargs)

    def call(self, images, training=None):
        mean, _ = self.encode(images)
        return self.decode(mean * self.scale_factor)

    @property
    def downsampling_factor(self):
        """Image side / latent side: 2^(levels - 1), 8 for SD."""
        return 2 ** (len(self.channel_multipliers) - 1)

    def encode(self, images):
        """images [B, H, W, C] in [-1, 1] -> posterior (mean, std), each [B, H/8, W/8, latent_channels], float32."""
        moments = keras.ops.cast(self.quant_conv(self.encoder(images)), "float32")
        mean, logvar = keras.ops.split(moments, 2, axis=-1)
        return mean, keras.ops.exp(0.5 * keras.ops.clip(logvar, *LOGVAR_RANGE))

    def decode(self, latents):
        """Scaled latents (z * scale_factor) [B, h, w, latent_channels] -> images [B, 8h, 8w, C], not clipped."""
        self.decoder._check_latents(latents)
        return self.decoder(self.post_quant_conv(latents / self.scale_factor))

    def symbolic_input_shapes(self, batch_size):
        return [(batch_size, self.resolution, self.resolution, self.image_channels)]

    def get_config(self):
        return {**super().get_config(), **self._config, "scale_factor": self.scale_factor}

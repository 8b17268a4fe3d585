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
decoder level applied). Weights load from a local .safetensors file in ldm / CompVis or diffusers naming.
"""

import keras
import numpy as np
import tensorflow as tf
from safetensors.numpy import load_file

from hit.models.vqgan_encoder import AttnBlock, ResnetBlock, VQGANEncoder, conv, group_norm, swish
from hit.core.seeds import stateless_normal

SCALE_FACTOR = 0.18215  # SD-1.x / 2.x latent scale: the diffusion model sees z * 0.18215 (bias 0)
SCHEMES = ("ldm", "diffusers", "diffusers_legacy")  # legacy: diffusers' older query/key/value/proj_attn names
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


class SDVAE(keras.Model):
    """The KL autoencoder. encode: images in [-1, 1] -> (mean, std); decode: scaled latents -> images.

    `resolution` is the size build_symbolic traces; encode takes any H, W divisible by 2^(L-1) (8 for SD).
    model(images) reconstructs through the posterior mean."""

    def __init__(self, resolution=256, channels=128, channel_multipliers=(1, 2, 4, 4), num_res_blocks=2,
                 latent_channels=4, groups=32, image_channels=3, name="sd_vae", **kwargs):
        channel_multipliers = tuple(channel_multipliers)
        # VQGANEncoder validates the shared sizes, so it is made first.
        encoder = SDVAEEncoder(resolution, image_channels, channels, channel_multipliers, num_res_blocks, (),
                               2 * latent_channels, groups, name="encoder")
        super().__init__(name=name, **kwargs)
        self._config = dict(resolution=resolution, channels=channels, channel_multipliers=channel_multipliers,
                            num_res_blocks=num_res_blocks, latent_channels=latent_channels, groups=groups,
                            image_channels=image_channels)
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
        return self.decode(mean * SCALE_FACTOR)

    def encode(self, images):
        """images [B, H, W, C] in [-1, 1] -> posterior (mean, std), each [B, H/8, W/8, latent_channels], float32."""
        moments = keras.ops.cast(self.quant_conv(self.encoder(images)), "float32")
        mean, logvar = keras.ops.split(moments, 2, axis=-1)
        return mean, keras.ops.exp(0.5 * keras.ops.clip(logvar, *LOGVAR_RANGE))

    def decode(self, latents):
        """Scaled latents (z * SCALE_FACTOR) [B, h, w, latent_channels] -> images [B, 8h, 8w, C], not clipped."""
        self.decoder._check_latents(latents)
        return self.decoder(self.post_quant_conv(latents / SCALE_FACTOR))

    def build_symbolic(self, batch_size=1):
        """Create every variable by tracing one symbolic call (no computation)."""
        if not self.built:
            self(keras.KerasTensor((batch_size, self.resolution, self.resolution, self.image_channels)))
        return self

    def parameter_counts(self):
        """Trainable parameters of encoder, quant_conv, post_quant_conv and decoder."""
        self.build_symbolic()
        parts = ("encoder", "quant_conv", "post_quant_conv", "decoder")
        return {p: int(sum(np.prod(v.shape) for v in getattr(self, p).trainable_variables)) for p in parts}

    def get_config(self):
        return {**super().get_config(), **self._config}


def sample_latents(mean, std, seed):
    """Scaled posterior sample (mean + std * eps) * SCALE_FACTOR, eps ~ N(0, I) drawn statelessly from `seed`:
    an int, or a [2] int seed such as hit.core.seeds.stateless_seed(...) gives."""
    seed = tf.convert_to_tensor(seed, tf.int64)
    if seed.shape.rank == 0:
        seed = tf.stack([seed, tf.zeros_like(seed)])
    mean, std = tf.convert_to_tensor(mean), tf.convert_to_tensor(std)
    eps = tf.reshape(tf.cast(stateless_normal([tf.size(mean)], seed), mean.dtype), tf.shape(mean))
    return (mean + std * eps) * SCALE_FACTOR


# ---- weights from PyTorch checkpoints -------------------------------------------------------------------------

def conv_weight(w):
    """PyTorch Conv2d weight [out, in, kh, kw] -> Keras kernel [kh, kw, in, out]."""
    return np.transpose(w, (2, 3, 1, 0))


def linear_weight(w):
    """PyTorch Linear weight [out, in] (diffusers' attention projections) -> Keras 1x1 conv kernel [1, 1, in, out]."""
    return np.transpose(w)[None, None]


def same(w):
    """Biases and GroupNorm weight / bias (-> gamma / beta) load as they are."""
    return w


# The file shape each transform expects, from the Keras variable's shape.
FILE_SHAPE = {
    conv_weight: lambda s: (s[3], s[2], s[0], s[1]),
    linear_weight: lambda s: (s[3], s[2]),
    same: tuple,
}


def _modules(vae):
    """[(Keras layer, ldm name, diffusers name)] for every ldm module: ResnetBlock, AttnBlock, conv or GroupNorm."""
    levels, blocks = len(vae.channel_multipliers), vae.num_res_blocks
    encoder, decoder = vae.encoder, vae.decoder
    rows = [(encoder.conv_in, "encoder.conv_in", "encoder.conv_in")]
    for i in range(levels):
        for j in range(blocks):
            rows.append((encoder.get_layer(f"down_{i}_block_{j}"), f"encoder.down.{i}.block.{j}",
                         f"encoder.down_blocks.{i}.resnets.{j}"))
        if i + 1 < levels:
            rows.append((encoder.get_layer(f"down_{i}_downsample").conv, f"encoder.down.{i}.downsample.conv",
                         f"encoder.down_blocks.{i}.downsamplers.0.conv"))
    for part, model in (("encoder", encoder), ("decoder", decoder)):
        rows += [
            (model.get_layer("mid_block_1"), f"{part}.mid.block_1", f"{part}.mid_block.resnets.0"),
            (model.get_layer("mid_attn_1"), f"{part}.mid.attn_1", f"{part}.mid_block.attentions.0"),
            (model.get_layer("mid_block_2"), f"{part}.mid.block_2", f"{part}.mid_block.resnets.1"),
        ]
    rows += [(encoder.norm_out, "encoder.norm_out", "encoder.conv_norm_out"),
             (encoder.conv_out, "encoder.conv_out", "encoder.conv_out"),
             (vae.quant_conv, "quant_conv", "quant_conv"),
             (vae.post_quant_conv, "post_quant_conv", "post_quant_conv"),
             (decoder.conv_in, "decoder.conv_in", "decoder.conv_in")]
    for i in reversed(range(levels)):  # diffusers numbers the decoder's levels in the order they run
        for j in range(blocks + 1):
            rows.append((decoder.get_layer(f"up_{i}_block_{j}"), f"decoder.up.{i}.block.{j}",
                         f"decoder.up_blocks.{levels - 1 - i}.resnets.{j}"))
        if i:
            rows.append((decoder.get_layer(f"up_{i}_upsample").conv, f"decoder.up.{i}.upsample.conv",
                         f"decoder.up_blocks.{levels - 1 - i}.upsamplers.0.conv"))
    rows += [(decoder.norm_out, "decoder.norm_out", "decoder.conv_norm_out"),
             (decoder.conv_out, "decoder.conv_out", "decoder.conv_out")]
    return rows


def _leaves(layer, name, scheme):
    """[(conv or GroupNorm layer, module name in the scheme, transform of its weight)] inside one module."""
    if isinstance(layer, ResnetBlock):
        parts = [(layer.norm1, "norm1"), (layer.conv1, "conv1"), (layer.norm2, "norm2"), (layer.conv2, "conv2")]
        if layer.nin_shortcut is not None:
            parts.append((layer.nin_shortcut, "nin_shortcut" if scheme == "ldm" else "conv_shortcut"))
        return [(sub, f"{name}.{part}", conv_weight) for sub, part in parts]
    if isinstance(layer, AttnBlock):
        names = {"ldm": ("norm", "q", "k", "v", "proj_out"),
                 "diffusers": ("group_norm", "to_q", "to_k", "to_v", "to_out.0"),
                 "diffusers_legacy": ("group_norm", "query", "key", "value", "proj_attn")}[scheme]
        transform = conv_weight if scheme == "ldm" else linear_weight  # ldm: 1x1 convs; diffusers: Linear
        subs = (layer.norm, layer.q, layer.k, layer.v, layer.proj_out)
        return [(sub, f"{name}.{part}", transform) for sub, part in zip(subs, names)]
    return [(layer, name, conv_weight)]


def weight_mapping(vae, scheme):
    """{Keras variable path: (file key, transform)} for scheme "ldm", "diffusers" or "diffusers_legacy"."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown weight naming scheme {scheme!r}; known: {', '.join(SCHEMES)}")
    vae.build_symbolic()
    mapping = {}
    for layer, ldm_name, diffusers_name in _modules(vae):
        for leaf, name, transform in _leaves(layer, ldm_name if scheme == "ldm" else diffusers_name, scheme):
            if isinstance(leaf, keras.layers.GroupNormalization):
                mapping[leaf.gamma.path] = (f"{name}.weight", same)
                mapping[leaf.beta.path] = (f"{name}.bias", same)
            else:
                mapping[leaf.kernel.path] = (f"{name}.weight", transform)
                mapping[leaf.bias.path] = (f"{name}.bias", same)
    return mapping


def detect_scheme(keys):
    """(scheme, prefix) of a state dict's keys, prefix e.g. "", "first_stage_model." or "vae."."""
    anchor = "encoder.conv_in.weight"
    prefixes = {k[: -len(anchor)] for k in keys if k.endswith(anchor)}
    prefixes = {p for p in prefixes if not p or p.endswith(".")}  # not e.g. "text_encoder.conv_in.weight"
    if len(prefixes) != 1:
        raise ValueError(f"expected one VAE (one key ending in {anchor!r}), found {len(prefixes)}: {sorted(prefixes)}")
    prefix = prefixes.pop()
    attention = {"mid.attn_1.q": "ldm", "mid_block.attentions.0.to_q": "diffusers",
                 "mid_block.attentions.0.query": "diffusers_legacy"}
    schemes = [s for key, s in attention.items() if f"{prefix}encoder.{key}.weight" in keys]
    if len(schemes) != 1:
        raise ValueError(f"cannot tell the naming scheme: expected exactly one of "
                         f"{[f'{prefix}encoder.{key}.weight' for key in attention]}, found {len(schemes)}")
    return schemes[0], prefix


def assign_weights(vae, tensors):
    """Fill every weight of `vae` from a PyTorch state dict {key: array}; returns the scheme it was in. Each tensor
    is used exactly once; nothing is assigned unless all of them fit."""
    scheme, prefix = detect_scheme(tensors)
    # Keys outside the prefix belong to the other models of a full pipeline checkpoint (e.g. ldm's
    # model.diffusion_model.* and cond_stage_model.*); "loss." holds ldm's training loss in full autoencoder
    # checkpoints (LPIPS network, discriminator, loss.logvar), which inference never uses.
    available = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)
                 and not k[len(prefix):].startswith("loss.")}
    mapping = weight_mapping(vae, scheme)
    variables = {v.path: v for v in vae.weights}

    def listed(names):
        names = sorted(names)
        return f"{len(names)} tensor(s): {', '.join(prefix + n for n in names[:5])}" + ", ..." * (len(names) > 5)

    missing = {key for key, _ in mapping.values()} - set(available)
    if missing:
        raise ValueError(f"{scheme} weights missing from the file: {listed(missing)}")
    extra = set(available) - {key for key, _ in mapping.values()}
    if extra:
        raise ValueError(f"unused {scheme} tensors in the file: {listed(extra)}")
    values = {}
    for path, (key, transform) in mapping.items():
        expected, got = FILE_SHAPE[transform](variables[path].shape), tuple(np.shape(available[key]))
        if expected != got:
            raise ValueError(f"wrong shape for {prefix}{key}: expected {expected}, got {got}")
        values[path] = transform(np.asarray(available[key], dtype=variables[path].dtype))
    for path, value in values.items():
        variables[path].assign(value)
    return scheme


def load_sd_vae(path, resolution=256, **config):
    """The SD VAE (SDVAE(resolution, **config)), built, with the weights of a local .safetensors file in ldm or
    diffusers naming (whole pipeline files too: prefixes such as first_stage_model. or vae.)."""
    tensors = load_file(path)
    vae = SDVAE(resolution, **config).build_symbolic()
    assign_weights(vae, tensors)
    return vae

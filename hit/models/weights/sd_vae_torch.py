"""The SD-VAE's weights from PyTorch state dicts (ldm / CompVis AutoencoderKL names, or diffusers' current and
legacy ones; whole pipeline files too) in hit.models.sd_vae.SDVAE, tensor by tensor, and back (save_sd_vae: a VAE
of one's own, such as the Fashion-MNIST demo's, as an ldm-named .safetensors file).

A file written by save_sd_vae carries its SDVAE config in the safetensors header's __metadata__, one JSON value
per key of CONFIG_KEYS (e.g. "channel_multipliers": "[1, 2, 2]", "scale_factor": "0.87"); load_sd_vae reads
it, so such a file loads with no options. SD's files have none of these keys and load with SDVAE's defaults.
"""

import json

import keras
import numpy as np
import safetensors.numpy

from hit.core.files import write_atomically
from hit.models.sd_vae import SD_CHANNEL_MULTIPLIERS, SDVAE
from hit.models.vqgan_encoder import AttnBlock, ResnetBlock
from hit.models.weights.state_dict import check_tensors, read_safetensors, read_safetensors_metadata

SCHEMES = ("ldm", "diffusers", "diffusers_legacy")  # legacy: diffusers' older query/key/value/proj_attn names


def conv_weight(w):
    """PyTorch Conv2d weight [out, in, kh, kw] -> Keras kernel [kh, kw, in, out]."""
    return np.transpose(w, (2, 3, 1, 0))


def linear_weight(w):
    """PyTorch Linear weight [out, in] (diffusers' attention projections) -> Keras 1x1 conv kernel [1, 1, in, out]."""
    return np.transpose(w)[None, None]


def same(w):
    """Biases and GroupNorm weight / bias (-> gamma / beta) load as they are."""
    return w


# Each transform's inverse: the Keras variable -> the PyTorch tensor (save_sd_vae writes ldm's naming: convs only).
INVERSE = {conv_weight: lambda w: np.transpose(w, (3, 2, 0, 1)), same: same}

# SDVAE options a file's __metadata__ may carry (JSON values); "resolution" is the image size it was trained at.
CONFIG_KEYS = ("resolution", "channels", "channel_multipliers", "num_res_blocks", "latent_channels", "groups",
               "image_channels", "scale_factor")
DEFAULT_RESOLUTION = 256  # SD's images, for files that do not record theirs

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
    shapes = {prefix + key: FILE_SHAPE[transform](variables[path].shape) for path, (key, transform) in mapping.items()}
    check_tensors({prefix + k: v for k, v in available.items()}, shapes, f"{scheme} weights")
    for path, (key, transform) in mapping.items():
        variables[path].assign(transform(np.asarray(available[key], dtype=variables[path].dtype)))
    return scheme


def save_sd_vae(vae, path, info=None):
    """Write `vae`'s weights to a .safetensors file in ldm naming (float32, every weight once), its config in the
    header's __metadata__ (and `info`, a JSON-able dict such as how it was trained, as "info"); atomically (a
    reader sees the old file or the new one)."""
    mapping = weight_mapping(vae, "ldm")
    variables = {v.path: v for v in vae.weights}
    if sorted(mapping) != sorted(variables):
        raise ValueError(f"the ldm weight map names {len(mapping)} tensors but {vae.name} has {len(variables)}")
    tensors = {key: np.ascontiguousarray(INVERSE[transform](keras.ops.convert_to_numpy(variables[p])), np.float32)
               for p, (key, transform) in mapping.items()}
    config = vae.get_config()
    metadata = {key: json.dumps(config[key]) for key in CONFIG_KEYS}
    if info is not None:
        metadata["info"] = json.dumps(info, sort_keys=True)
    write_atomically(str(path), safetensors.numpy.save(tensors, metadata=metadata))


def read_config(path):
    """The SDVAE options recorded in a .safetensors file's __metadata__ ({} for SD's files); other keys (e.g.
    "format": "pt") are left out. A one-line ValueError names a value that is not JSON."""
    config = {}
    for key, value in read_safetensors_metadata(path, "SD-VAE weights").items():
        if key in CONFIG_KEYS:
            try:
                config[key] = json.loads(value)
            except json.JSONDecodeError:
                raise ValueError(f"SD-VAE weights {path}: metadata {key!r} is not JSON: {value!r}") from None
    return config


def load_sd_vae(path, resolution=None, latent_resolution=None, **config):
    """The SD VAE (SDVAE(resolution, **config)), built, with the weights of a local .safetensors file in ldm or
    diffusers naming (whole pipeline files too: prefixes such as first_stage_model. or vae.).

    The config is the file's recorded one (save_sd_vae), overridden by explicit options; SD's files record none.
    The traced size: `resolution`, or latent_resolution times the VAE's downsampling factor
    (2^(len(channel_multipliers) - 1): 8 for SD, 4 for the demo's), or the file's recorded resolution, or 256."""
    if resolution is not None and latent_resolution is not None:
        raise ValueError(f"give resolution ({resolution}) or latent_resolution ({latent_resolution}), not both")
    tensors = read_safetensors(path, "SD-VAE weights")
    config = {**read_config(path), **config}
    stored_resolution = config.pop("resolution", DEFAULT_RESOLUTION)
    if latent_resolution is not None:
        if isinstance(latent_resolution, bool) or not isinstance(latent_resolution, int) or latent_resolution < 1:
            raise ValueError(f"latent_resolution must be a positive integer, got {latent_resolution!r}")
        levels = len(config.get("channel_multipliers", SD_CHANNEL_MULTIPLIERS))
        resolution = latent_resolution * 2 ** (levels - 1)
    vae = SDVAE(stored_resolution if resolution is None else resolution, **config).build_symbolic()
    assign_weights(vae, tensors)
    return vae

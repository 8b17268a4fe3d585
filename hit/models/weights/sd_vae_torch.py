"""The SD-VAE's weights from PyTorch state dicts (ldm / CompVis AutoencoderKL names, or diffusers' current and
legacy ones; whole pipeline files too) in hit.models.sd_vae.SDVAE, tensor by tensor."""

import keras
import numpy as np

from hit.models.sd_vae import SDVAE
from hit.models.vqgan_encoder import AttnBlock, ResnetBlock
from hit.models.weights.state_dict import check_tensors, read_safetensors

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


def load_sd_vae(path, resolution=256, **config):
    """The SD VAE (SDVAE(resolution, **config)), built, with the weights of a local .safetensors file in ldm or
    diffusers naming (whole pipeline files too: prefixes such as first_stage_model. or vae.)."""
    tensors = read_safetensors(path, "SD-VAE weights")
    vae = SDVAE(resolution, **config).build_symbolic()
    assign_weights(vae, tensors)
    return vae

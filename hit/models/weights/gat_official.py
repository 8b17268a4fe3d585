"""The official PyTorch GAT's weights (github.com/hse1032/GAT, models/generator.py `GAT` and
models/discriminator.py `GATD`) in our GATGenerator / GATDiscriminator.

`load_official_weights(model, path)` reads the state dict saved as .safetensors, e.g. from a training
checkpoint: safetensors.torch.save_file(ckpt["ema"], "g.safetensors") (or "generator", "discriminator").
`official_weight_map` names every tensor; `official_unused_tensors` lists the file's tensors that have no weight
here (fixed tables, checked against ours, and G's unused patch-embedding conv).
"""

import numpy as np

from hit.layers.rope import rope_2d_tables
from hit.models.gat_discriminator import GATDiscriminator
from hit.models.gat_generator import GATGenerator
from hit.models.weights.state_dict import (CONV, LINEAR, assign, check_covers, check_tensors, file_shape,
                                           read_safetensors)

FIXED_TOLERANCE = 1e-4  # float32 tables computed by torch and NumPy differ by ~1e-6


def _linear(prefix, layer):
    return {f"{prefix}.weight": (layer.kernel, LINEAR), f"{prefix}.bias": (layer.bias, None)}


def _attention_and_mlp(prefix, block):
    attn = block.attn
    return {**_linear(f"{prefix}.attn.qkv", attn.qkv), f"{prefix}.attn.q_norm.weight": (attn.q_norm.scale, None),
            f"{prefix}.attn.k_norm.weight": (attn.k_norm.scale, None), **_linear(f"{prefix}.attn.proj", attn.proj),
            **_linear(f"{prefix}.mlp.w12", block.mlp.w12), **_linear(f"{prefix}.mlp.w3", block.mlp.w3)}


def official_weight_map(model):
    """{official state-dict name: (variable, axes permutation from the file's layout or None)}, every variable of a
    built GATGenerator / GATDiscriminator exactly once. Names from github.com/hse1032/GAT models/*.py."""
    if isinstance(model, GATGenerator):
        names = {"y_embedder.embedding_table.weight": (model.class_embedding.embeddings, None),
                 **_linear("latent_embedder.0", model.mapping_layers[0]),
                 **_linear("latent_embedder.2", model.mapping_layers[1]),
                 "w_avg": (model.w_avg, None)}
        for i, block in enumerate(model.blocks):
            names.update({**_attention_and_mlp(f"blocks.{i}", block),
                          **_linear(f"blocks.{i}.adaLN_modulation.1", block.modulation)})
        for k, head in enumerate(model.output_heads):
            names.update({**_linear(f"final_layers.{k}.adaLN_modulation.1", head.modulation),
                          **_linear(f"final_layers.{k}.linear", head.linear)})
    elif isinstance(model, GATDiscriminator):
        names = {"x_embedder.proj.weight": (model.patch_embed.kernel, CONV),
                 "x_embedder.proj.bias": (model.patch_embed.bias, None),
                 "cls_token": (model.cls_token, None),
                 "final_layer.0.weight": (model.final_norm.scale, None),
                 **_linear("final_layer.1", model.final_linear),
                 "y_embedder.embedding_table.weight": (model.class_embedding.embeddings, None),
                 **_linear("y_embedder.latent_embedder.0", model.class_mapping[0]),
                 **_linear("y_embedder.latent_embedder.2", model.class_mapping[1])}
        for i, block in enumerate(model.blocks):
            names.update({**_attention_and_mlp(f"blocks.{i}", block),
                          f"blocks.{i}.norm1.weight": (block.norm1.scale, None),
                          f"blocks.{i}.norm2.weight": (block.norm2.scale, None),
                          f"blocks.{i}.ls_attn": (block.ls_attn, None), f"blocks.{i}.ls_mlp": (block.ls_mlp, None)})
        if model.repa_projector is not None:
            for j, layer in enumerate(model.repa_projector.linears):
                names.update(_linear(f"proj.{2 * j}", layer))
    else:
        raise ValueError(f"official GAT weights load into a GATGenerator or GATDiscriminator, not "
                         f"{type(model).__name__}")
    check_covers(names, model, "GAT")
    return names


def official_unused_tensors(model):
    """{official name: (shape, expected value or None)} of the state-dict tensors that the Keras model has no weight
    for, checked and skipped by the loader: the fixed sin-cos table `pos_embed` and the RoPE buffers
    `feat_rope.freqs_cos` / `freqs_sin` (their values must match ours), and in G the patch-embedding conv
    `x_embedder.proj` whose output the official forward multiplies by 0 (any value)."""
    tokens, head_dim = model.grid * model.grid, model.rope.head_dim
    cos, sin = rope_2d_tables(head_dim, model.grid)
    unused = {"pos_embed": ((1, tokens, model.width), model.position_table[None]),
              "feat_rope.freqs_cos": ((tokens, head_dim), cos), "feat_rope.freqs_sin": ((tokens, head_dim), sin)}
    if isinstance(model, GATGenerator):
        p = model.patch_size
        unused["x_embedder.proj.weight"] = ((model.width, model.output_channels, p, p), None)
        unused["x_embedder.proj.bias"] = ((model.width,), None)
    return unused


def load_weights(model, tensors, source="GAT weights"):
    """Fill every weight of a GAT model from {official name: array}; every tensor must be used exactly once (the
    unused ones of official_unused_tensors explicitly), else a one-line ValueError naming the culprits."""
    model.build_symbolic()
    targets, unused = official_weight_map(model), official_unused_tensors(model)
    hint = ""
    if isinstance(model, GATDiscriminator) and model.repa_projector is None and any(
            n.startswith("proj.") for n in tensors):
        hint = " (the file has a REPA projector: build the discriminator with repa=True)"
    shapes = {**{n: file_shape(v, perm) for n, (v, perm) in targets.items()}, **{n: s for n, (s, _) in unused.items()}}
    check_tensors(tensors, shapes, source, hint)
    for name, (_, value) in sorted(unused.items()):
        if value is not None:
            difference = float(np.max(np.abs(np.asarray(tensors[name], np.float64) - value)))
            if not difference <= FIXED_TOLERANCE:
                raise ValueError(f"{source}: {name!r} differs from this model's fixed table by up to {difference:.3g} "
                                 f"(a different position-encoding convention or grid)")
    assign(targets, tensors)
    return model


def load_official_weights(model, path):
    """Load the official PyTorch GAT generator / discriminator state dict from a .safetensors file into `model`
    (a GATGenerator or GATDiscriminator of the same configuration; built here if it is not). Returns the model.
    The file's tensors must be float32 or float16 (NumPy cannot read bfloat16)."""
    return load_weights(model, read_safetensors(path, "GAT weights"), source=str(path))

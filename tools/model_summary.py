"""Print one JSON line describing a model preset: parameter counts, and per-stage shapes of a generator.

    python tools/model_summary.py --preset=hit_b_256
    python tools/model_summary.py --preset=vqhit_imagenet_256   # encoder, quant_conv, codebook, decoder counts
    python tools/model_summary.py --preset=gat_xl_2             # GAT G, D and REPA projector counts
    python tools/model_summary.py --preset=convnet_128          # Table 1's ConvNet-R1 generator
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

import hit  # noqa: E402,F401  (selects the TensorFlow backend)
import keras  # noqa: E402
from hit.models.presets import (CONVNET_PRESETS, GAT_DISCRIMINATOR_PRESETS, GAT_GENERATOR_PRESETS, VQHIT_PRESETS,
                                get_discriminator, get_generator, get_vqhit)
from hit.models.symbolic import count_parameters  # noqa: E402

_PRESET = flags.DEFINE_string("preset", None, "Generator (HiT, GAT, ConvNet) or VQ-HiT preset, e.g. hit_b_256.",
                              required=True)


def count(variables):
    return int(sum(v.numpy().size for v in variables))


def summarize_vqhit(preset):
    """Trainable parameters of each part of a VQ-HiT autoencoder, and its code grid."""
    model = get_vqhit(preset)
    return {
        "preset": preset,
        "trainable_params": count(model.trainable_variables),
        "non_trainable_params": count(model.non_trainable_variables),
        **{f"{part}_params": n for part, n in model.parameter_counts().items()},
        "codebook_shape": [model.num_codes, int(model.quantizer.codebook.shape[1])],
        "code_grid": [model.grid_size, model.grid_size],
        "image_shape": [model.resolution, model.resolution, model.image_channels],
    }


def summarize_gat(preset):
    """Trainable parameters of a GAT preset's generator, discriminator (without the REPA projector) and REPA
    projector, and the shapes they work on. The models are built in a StatelessScope that never draws their
    weights: the counts come from the variables' shapes (XL's 1.07 billion values would take seconds and GBs); the
    undrawn variables die with this process."""
    with keras.StatelessScope(initialize_variables=False):
        generator = get_generator(preset)
        discriminator = get_discriminator(preset, repa=True)  # the projector's size even where the preset has none
    r, p = generator.resolution, generator.patch_size
    return {
        "preset": preset,
        "generator_params": generator.parameter_counts()["generator"],
        "generator_non_trainable_params": count_parameters(generator.non_trainable_variables),  # w_avg
        "discriminator_params": discriminator.parameter_counts()["discriminator"],
        "repa_projector_params": discriminator.parameter_counts()["repa_projector"],
        "preset_has_repa": bool(GAT_DISCRIMINATOR_PRESETS[preset].get("repa", False)),
        "width": generator.width, "depth": len(generator.blocks), "patch_size": p, "tokens": (r // p) ** 2,
        "head_blocks": list(generator.head_blocks),
        "latent_shape": [r, r, generator.output_channels],
        "discriminator_input_shape": [r, r, discriminator.input_channels],
    }


def summarize(preset):
    """Parameter counts (trainable / non-trainable) and, per stage, its output and running image."""
    if preset in VQHIT_PRESETS:
        return summarize_vqhit(preset)
    if preset in GAT_GENERATOR_PRESETS:
        return summarize_gat(preset)
    generator = get_generator(preset)
    if preset in CONVNET_PRESETS:
        config = CONVNET_PRESETS[preset]
        return {"preset": preset, "trainable_params": count(generator.trainable_variables),
                "non_trainable_params": count(generator.non_trainable_variables), "latent_dim": generator.latent_dim,
                "output_shape": [1, config["output_size"], config["output_size"], config.get("output_channels", 3)],
                "channels": list(config["channels"]), "attention_resolution": config["attention_resolution"]}
    stages = []
    for i, shapes in enumerate(generator.stage_shapes()):
        resolution = 8 * 2**i
        stages.append({"stage": i, "resolution": resolution, "output": shapes["features"],
                       "image": shapes["image"]})
    return {
        "preset": preset,
        "trainable_params": count(generator.trainable_variables),
        "non_trainable_params": count(generator.non_trainable_variables),
        "latent_dim": generator.latent_dim,
        "output_shape": stages[-1]["image"],
        "stages": stages,
    }


def main(argv):
    del argv
    try:
        summary = summarize(_PRESET.value)
    except ValueError as e:
        sys.exit(f"error: {e}")
    print(json.dumps(summary))


if __name__ == "__main__":
    app.run(main)

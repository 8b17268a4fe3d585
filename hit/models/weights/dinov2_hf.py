"""DINOv2's weights from a Hugging Face Dinov2Model safetensors file (facebook/dinov2-base: transformers'
modeling_dinov2.py names) in hit.models.dinov2.DINOv2, tensor by tensor."""

import keras

from hit.models.dinov2 import DINOv2
from hit.models.weights.state_dict import (CONV, LINEAR, assign, check_covers, check_tensors, file_shape,
                                           read_safetensors)


def hf_weight_map(model):
    """{Hugging Face Dinov2Model tensor name: (variable, axes permutation from the file's layout or None)}."""
    def pair(prefix, layer, kernel_perm=LINEAR):
        if isinstance(layer, keras.layers.LayerNormalization):
            return {f"{prefix}.weight": (layer.gamma, None), f"{prefix}.bias": (layer.beta, None)}
        return {f"{prefix}.weight": (layer.kernel, kernel_perm), f"{prefix}.bias": (layer.bias, None)}

    names = {
        "embeddings.cls_token": (model.cls_token, None),
        "embeddings.mask_token": (model.mask_token, None),
        "embeddings.position_embeddings": (model.position_embeddings, None),
        **pair("embeddings.patch_embeddings.projection", model.projection, CONV),
        **pair("layernorm", model.layernorm),
    }
    for i, block in enumerate(model.blocks):
        p = f"encoder.layer.{i}"
        for field in ("query", "key", "value"):
            names.update(pair(f"{p}.attention.attention.{field}", getattr(block, field)))
        names.update({
            **pair(f"{p}.norm1", block.norm1), **pair(f"{p}.norm2", block.norm2),
            **pair(f"{p}.attention.output.dense", block.dense),
            f"{p}.layer_scale1.lambda1": (block.lambda1, None), f"{p}.layer_scale2.lambda1": (block.lambda2, None),
            **pair(f"{p}.mlp.fc1", block.fc1), **pair(f"{p}.mlp.fc2", block.fc2),
        })
    check_covers(names, model, "DINOv2")
    return names


def load_weights(model, tensors, source="DINOv2 weights"):
    """Fill every weight of `model` from {Hugging Face name: array}; every tensor must be used exactly once."""
    targets = hf_weight_map(model)
    check_tensors(tensors, {n: file_shape(v, perm) for n, (v, perm) in targets.items()}, source)
    assign(targets, tensors)
    model.resample_positions()
    return model


def load_dinov2(path, **config):
    """DINOv2 (default: ViT-B/14 for 224 px) with the weights of a Hugging Face Dinov2Model safetensors file,
    frozen (trainable=False): REPA's targets come from a fixed encoder."""
    model = load_weights(DINOv2(**config), read_safetensors(path, "DINOv2 weights"), source=str(path))
    model.trainable = False
    return model

"""Generator and discriminator presets: data, one dict each (docs/architecture.md), and the factories `get_generator`
and `get_discriminator`.

HiT: per-stage lists read like Table 9 / official hit-gan `HiTGenerator`: `num_layers` counts the layers *after*
each stage's cross-attention block; `block_sizes` None marks an MLP-only high-resolution stage that emits RGB.
GAT (hit.models.gat_generator, gat_discriminator; official GAT `GAT_S_2` ... `GAT_XL_8`): gat_{s,b,l,xl}_{2,4,8} and
gat_demo, in their own dicts; the factories find a preset's family by its name.
"""

from hit.models.convnet_generator import ConvNetGenerator
from hit.models.gat_discriminator import GATDiscriminator
from hit.models.gat_generator import GATGenerator
from hit.models.hit_generator import HiTGenerator
from hit.models.stylegan_discriminator import StyleGANDiscriminator
from hit.models.vq_hit import VQHiT

GENERATOR_PRESETS = {
    # The official ImageNet 128 configuration (hit-gan models/generators.py), 32,866,627 trainable parameters. The
    # paper's A.2 says "HiT-L without its 256 stage" instead; we follow the official code.
    "hit_imagenet_128": dict(
        output_size=128, latent_dim=256,
        channels=(512, 512, 256, 128, 128), num_heads=(16, 8, 4, 4, 4),
        num_layers=(2, 2, 2, 2, 2), block_sizes=(4, 4, 8, 8, None),
    ),
    # HiT-S, Table 9 as written: 34,727,078 trainable parameters. Table 4 reports 38.01M, which this
    # table cannot reach with the official block structure; we build the table and keep the difference.
    "hit_s_256": dict(
        output_size=256, latent_dim=512,
        channels=(512, 256, 128, 64, 32, 32), num_heads=(16, 8, 4, 4, 4, 4),
        num_layers=(2, 2, 1, 1, 1, 1), block_sizes=(4, 4, 8, 8, None, None),
    ),
    # HiT-B: Table 9 and the official 256 configuration agree: 46,217,670 (Table 4: 46.22M).
    "hit_b_256": dict(
        output_size=256, latent_dim=512,
        channels=(512, 512, 256, 128, 64, 64), num_heads=(16, 8, 4, 4, 4, 4),
        num_layers=(2, 2, 2, 2, 1, 1), block_sizes=(4, 4, 8, 8, None, None),
    ),
    # HiT-L, Table 9: latent tokens as wide as stage 1 (1024). 97,462,214 (Table 4: 97.46M).
    "hit_l_256": dict(
        output_size=256, latent_dim=512,
        channels=(1024, 512, 256, 128, 128, 128), num_heads=(16, 8, 4, 4, 4, 4),
        num_layers=(2, 2, 2, 2, 2, 2), block_sizes=(4, 4, 8, 8, None, None),
    ),
    # HiT-B 1024, Table 9 and the official 1024 configuration: 88,216,300.
    "hit_b_1024": dict(
        output_size=1024, latent_dim=512,
        channels=(512, 512, 256, 128, 64, 64, 32, 32), num_heads=(16, 8, 4, 4, 4, 4, 4, 4),
        num_layers=(2, 2, 2, 2, 1, 1, 1, 1), block_sizes=(4, 4, 8, 8, None, None, None, None),
    ),
    # The offline demo's generator (Fashion-MNIST 32x32, gin/demo/fashion_mnist_32.gin): the paper's
    # structure, two low-resolution stages and one MLP stage, sized to train on 2 CPU cores.
    "hit_demo_32": dict(
        output_size=32, latent_dim=64,
        channels=(128, 64, 32), num_heads=(4, 4, 2),
        num_layers=(1, 1, 1), block_sizes=(4, 4, None),
    ),
    # A tiny 32x32 generator for unit tests (not a paper model).
    "hit_tiny_32": dict(
        output_size=32, latent_dim=32,
        channels=(64, 32, 16), num_heads=(4, 2, 2),
        num_layers=(1, 1, 1), block_sizes=(4, 4, None),
    ),
}


def _from_preset(kind, families, preset, build, overrides):
    """model_class(**presets[preset] updated with overrides), each name checked, built symbolically if asked;
    families: ((presets, model_class), ...), the first whose presets name `preset` is used."""
    for presets, model_class in families:
        if preset in presets:
            break
    else:
        known = sorted(name for presets, _ in families for name in presets)
        raise ValueError(f"unknown {kind} preset {preset!r}; known: {', '.join(known)}")
    code = model_class.__init__.__code__
    known = set(code.co_varnames[1:code.co_argcount])
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown {kind} option(s) {unknown}; known: {sorted(known)}")
    model = model_class(**{**presets[preset], **overrides})
    return model.build_symbolic() if build else model


# GAT generators (hit.models.gat_generator.GATGenerator) and discriminators (GATDiscriminator): depth, width, heads
# of GAT-S, B, L, XL (official GAT models/generator.py, discriminator.py) on the 32x32x4 SD-VAE latent of 256 px
# ImageNet, 1000 classes, patch 2, 4 or 8.
GAT_SIZES = {"s": dict(depth=12, width=384, heads=6), "b": dict(depth=12, width=768, heads=12),
             "l": dict(depth=24, width=1024, heads=16), "xl": dict(depth=28, width=1152, heads=16)}
# Trainable parameters of the /2 models: G 29,256,512 / 116,545,088 / 408,469,024 / 601,936,640 (the official counts
# less the patch-embedding conv G never uses); D without the REPA projector 32,556,160 / 97,135,360 / 314,904,544 /
# 459,252,544, the projector 6,558,464 / 7,344,896 / 7,869,184 / 8,131,328 (tools/model_summary.py --preset=gat_s_2).
GAT_GENERATOR_PRESETS = {
    f"gat_{size}_{patch}": dict(resolution=32, patch_size=patch, output_channels=4, num_classes=1000, **dims)
    for size, dims in GAT_SIZES.items() for patch in (2, 4, 8)
}
# The official D always has the REPA projector (REPA weight 1.0 in the official script); repa=False leaves it out.
GAT_DISCRIMINATOR_PRESETS = {
    f"gat_{size}_{patch}": dict(resolution=32, patch_size=patch, channels=4, num_classes=1000, repa=True, **dims)
    for size, dims in GAT_SIZES.items() for patch in (2, 4, 8)
}
# The offline demo (not a paper model): Fashion-MNIST in pixel space, 32x32x1, 10 classes, patch 2 (256 tokens),
# sized to train on 2 CPU cores; the D's class projection is 256 wide instead of 2048, and it has no REPA.
GAT_GENERATOR_PRESETS["gat_demo"] = dict(resolution=32, patch_size=2, output_channels=1, num_classes=10, depth=4,
                                         width=64, heads=2)
GAT_DISCRIMINATOR_PRESETS["gat_demo"] = dict(resolution=32, patch_size=2, channels=1, num_classes=10, depth=4,
                                             width=64, heads=2, projection_dim=256, repa=False)
# The latent-space demo (not a paper model): the demo autoencoder's 8x8x4 latents of Fashion-MNIST (tools/
# train_demo_vae.py), 10 classes, patch 1 (64 tokens), sized to train on 2 CPU cores; no REPA.
GAT_GENERATOR_PRESETS["gat_demo_latent"] = dict(resolution=8, patch_size=1, output_channels=4, num_classes=10,
                                                depth=4, width=64, heads=2)
GAT_DISCRIMINATOR_PRESETS["gat_demo_latent"] = dict(resolution=8, patch_size=1, channels=4, num_classes=10, depth=4,
                                                    width=64, heads=2, projection_dim=256, repa=False)
# A tiny latent-space pair for unit tests (not a paper model): 16x16x4 latents, patch 2, with a small REPA projector.
GAT_GENERATOR_PRESETS["gat_tiny"] = dict(resolution=16, patch_size=2, output_channels=4, num_classes=10, depth=4,
                                         width=32, heads=2, latent_dim=16)
GAT_DISCRIMINATOR_PRESETS["gat_tiny"] = dict(resolution=16, patch_size=2, channels=4, num_classes=10, depth=4,
                                             width=32, heads=2, projection_dim=32, repa=True, repa_hidden_dim=32,
                                             repa_dim=16)


# Table 1's ConvNet-R1 baseline (hit.models.convnet_generator): SAGAN / BigGAN's ResNet generator.
CONVNET_PRESETS = {
    # SAGAN's / BigGAN's 128x128 ImageNet generator: with ch = 64, widths 16ch at 4x4 and 8x8, then 8ch, 4ch, 2ch, ch
    # (BigGAN Table 4a; SAGAN's code has the same widths) and attention at 64x64 (both papers). z of 128: the
    # BigGAN-PyTorch default dim_z; BigGAN's paper uses 120, split over its conditional BNs, which an unconditional
    # G does not have. 32,171,268 trainable parameters and 9,984 BN statistics.
    "convnet_128": dict(output_size=128, latent_dim=128, channels=(1024, 1024, 512, 256, 128, 64),
                        attention_resolution=64),
    # The offline demo's baseline (not a paper model): hit_demo_32's output channels (3, gin/demo) and latent size;
    # the 128 model's width pattern from 4x4 to 32x32 (16ch, 16ch, 8ch, 4ch) with ch = 12, for about hit_demo_32's
    # parameter count (1,249,732 trainable vs 1,187,747); attention at 16x16, half the output as SAGAN's 64 of 128.
    "convnet_demo_32": dict(output_size=32, latent_dim=64, channels=(192, 192, 96, 48), attention_resolution=16),
}


def get_generator(preset, build=True, **overrides):
    """Build the generator of a preset, with any argument of its class (HiTGenerator, GATGenerator or
    ConvNetGenerator) overridden.

    Examples: get_generator("hit_b_256", norm_type="layer", multi_query=False); get_generator("gat_b_2").
    """
    families = ((GENERATOR_PRESETS, HiTGenerator), (GAT_GENERATOR_PRESETS, GATGenerator),
                (CONVNET_PRESETS, ConvNetGenerator))
    return _from_preset("generator", families, preset, build, overrides)


# The official discriminator (hit.models.stylegan_discriminator); trainable parameters in the comments.
DISCRIMINATOR_PRESETS = {
    "stylegan_d_128": dict(resolution=128, channel_multiplier=1),  # 23,880,833
    "stylegan_d_256": dict(resolution=256, channel_multiplier=2),  # 28,862,593
    "stylegan_d_1024": dict(resolution=1024, channel_multiplier=2),  # 29,008,673
    # The demo's discriminator (not a paper model).
    "stylegan_d_demo_32": dict(resolution=32, channels={4: 128, 8: 128, 16: 64, 32: 32}),
    # A tiny 32x32 discriminator for unit tests (not a paper model).
    "stylegan_d_tiny_32": dict(resolution=32, channels={4: 64, 8: 64, 16: 64, 32: 32}),
}


def get_discriminator(preset, build=True, **overrides):
    """Build the discriminator of a preset, with any argument of its class (StyleGANDiscriminator or
    GATDiscriminator) overridden.

    Examples: get_discriminator("stylegan_d_256", channel_multiplier=1, minibatch_stddev_group=4);
    get_discriminator("gat_b_2", repa=False).
    """
    families = ((DISCRIMINATOR_PRESETS, StyleGANDiscriminator), (GAT_DISCRIMINATOR_PRESETS, GATDiscriminator))
    return _from_preset("discriminator", families, preset, build, overrides)


# VQ-HiT autoencoders (hit.models.vq_hit); trainable parameters in the comments.
VQHIT_PRESETS = {
    # The paper's run (Sec. 4.3, A.5): VQGAN's f16 encoder (29,298,176 up to its output conv, quant_conv
    # 65,792), 1024 codes of width 256 (262,144), and HiT-B's stages 1-5 (Table 9) from the 16x16 grid.
    "vqhit_imagenet_256": dict(
        resolution=256, encoder_channels=128, encoder_multipliers=(1, 1, 2, 2, 4), encoder_res_blocks=2,
        encoder_attention_resolutions=(16,), z_channels=256, embedding_dim=256, num_codes=1024,
        channels=(512, 256, 128, 64, 64), num_heads=(8, 4, 4, 4, 4), num_layers=(2, 2, 2, 1, 1),
        block_sizes=(4, 8, 8, None, None),
    ),
    # The offline demo (gin/demo/vqhit_fashion_mnist_32.gin): 32x32 -> an 8x8 grid of 256 codes -> 32x32.
    "vqhit_demo_32": dict(
        resolution=32, encoder_channels=32, encoder_multipliers=(1, 2, 2), encoder_res_blocks=1,
        encoder_attention_resolutions=(8,), z_channels=64, groups=8, embedding_dim=64, num_codes=256,
        channels=(128, 64, 32), num_heads=(4, 4, 2), num_layers=(1, 1, 1), block_sizes=(4, 8, None),
    ),
    # A tiny one for unit tests (not a paper model).
    "vqhit_tiny_32": dict(
        resolution=32, encoder_channels=16, encoder_multipliers=(1, 1, 2), encoder_res_blocks=1,
        encoder_attention_resolutions=(8,), z_channels=16, groups=8, embedding_dim=16, num_codes=32,
        channels=(32, 16, 16), num_heads=(2, 2, 2), num_layers=(1, 1, 1), block_sizes=(4, 8, None),
        num_latent_tokens=4,
    ),
}


def get_vqhit(preset, build=True, **overrides):
    """Build the VQ-HiT autoencoder of a preset, with any VQHiT argument overridden.

    Example: get_vqhit("vqhit_imagenet_256", bn_group_size=8).
    """
    return _from_preset("VQ-HiT", ((VQHIT_PRESETS, VQHiT),), preset, build, overrides)

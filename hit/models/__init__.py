"""Models: the HiT generator, the StyleGAN2-like discriminator, VQ-HiT, GAT's generator and discriminator, the
ConvNet-R1 baseline generator, and their presets."""

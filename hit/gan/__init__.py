"""The GAN objective: losses, gradient penalties, differentiable augmentation, EMA, multi-level noise guidance,
REPA, the perceptual loss."""

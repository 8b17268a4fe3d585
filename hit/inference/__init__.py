"""Using trained runs: pure sampling, restoring runs from their directories, SavedModel export, latent extraction."""

"""Evaluation: FID, IS, KID and the demo's classifier distance."""

"""Weights of models trained elsewhere: the official GAT (PyTorch), the SD-VAE (ldm / diffusers), DINOv2 (Hugging
Face), each mapped tensor by tensor and checked by one shared state-dict check (state_dict.py)."""

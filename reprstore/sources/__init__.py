"""Tensor files a lab already has (``.npy``, ``.pt``, ``.safetensors``) and the path
templates that name them."""

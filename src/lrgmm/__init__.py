"""lrgmm: few-shot face generation with a low-rank Gaussian mixture on autoencoder latents."""

__version__ = "0.1.0"

"""The method on tensors, with no files and no pictures: the pixel projector P0 (eq. 1, 2), the
low-rank Gaussian mixture (eq. 3, 4) and its draws, the nearest-neighbour step (eq. 5, 6) with its
provenance, ``LRGMM`` that puts them together, conditioning for completion and attributes, and
the seed policy. Everything above it (``lrgmm.pipeline``, the studio, the command line) reaches
images and files through ``lrgmm.io``; nothing here does."""

from .mixture import LowRankGaussianMixture
from .model import LRGMM, LatentSamples
from .projector import PixelPCA

__all__ = ["LRGMM", "LatentSamples", "LowRankGaussianMixture", "PixelPCA"]

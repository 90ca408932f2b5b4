"""lrgmm: few-shot face generation with a low-rank Gaussian mixture on autoencoder latents."""

from ._version import __version__
from .defaults import DEFAULTS
from .errors import FitError, ImageInputError, LrgmmError, ModelFileError, NotFittedError, WeightsError
from .core import LRGMM, LatentSamples, LowRankGaussianMixture, PixelPCA
from .pipeline import FacePipeline, Generated

__all__ = [
    "DEFAULTS",
    "FacePipeline",
    "Generated",
    "LRGMM",
    "LatentSamples",
    "LowRankGaussianMixture",
    "PixelPCA",
    "LrgmmError",
    "FitError",
    "ImageInputError",
    "ModelFileError",
    "NotFittedError",
    "WeightsError",
]

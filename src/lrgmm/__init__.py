"""lrgmm: few-shot face generation with a low-rank Gaussian mixture on autoencoder latents."""

__version__ = "0.1.0"

from .errors import FitError, ImageInputError, LrgmmError, ModelFileError, WeightsError  # noqa: E402
from .mixture import LowRankGaussianMixture  # noqa: E402
from .model import LRGMM, LatentSamples  # noqa: E402
from .pipeline import FacePipeline, Generated  # noqa: E402
from .projector import PixelPCA  # noqa: E402

__all__ = [
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
    "WeightsError",
]

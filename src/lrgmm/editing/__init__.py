"""Attribute edits of the latent codes: the affine map H and its four fitting methods
(``maps``: tensors only), the ``AttributeEdit`` estimator and its edit files (``attribute_edit``).
Applying an edit to photos or generated faces is ``lrgmm.pipeline.editing`` (``FacePipeline.edit``)."""

from .attribute_edit import EDIT_METHODS, AttributeEdit, load_edit, model_fingerprint

__all__ = ["EDIT_METHODS", "AttributeEdit", "load_edit", "model_fingerprint"]

"""Stand-ins shaped like the editing / completion contract (the lead's contracts.md) for
``FacePipeline.edit`` / ``.complete``, ``lrgmm.editing.AttributeEdit`` and
``lrgmm.conditional.box_mask``, so the studio's wiring and panels can be tested before those
branches are merged. The real features are tested on their own branches."""

from __future__ import annotations

import sys
import types

import torch

from lrgmm.pipeline import FacePipeline

COMPLETION_SOURCE = 3  # the training index the stand-in completion "copies" its top-left quarter from
EDIT_SOURCE = 5  # the training index every latent pixel of a stand-in edit (with nn) comes from


def install_contract_fakes(monkeypatch) -> dict:
    """Patch the stand-ins in; returns a dict recording the arguments of each call.

    - edit: the input face scaled by (1 + 0.1 alpha), so alpha 0 gives the input back; with nn,
      provenance ``EDIT_SOURCE`` everywhere.
    - complete: the input face with the masked pixels set to 0.5; provenance
      ``COMPLETION_SOURCE`` on the top-left 8x8 latent pixels, -1 (observed) elsewhere.
    """
    calls: dict = {}

    class AttributeEdit:
        def fit(self, pipeline, attribute="gender", source=None, labels_csv=None, negative=None, positive=None):
            calls["fit"] = (attribute, negative, positive)
            return self

    def edit(self, inputs, edit, alphas=(-2, -1, 0, 1, 2), nn=True, seed=None):
        calls["edit"] = (tuple(inputs.shape), alphas, nn, seed)
        imgs = torch.stack([(inputs * (1 + 0.1 * a)).clamp(0, 1) for a in alphas], 1)
        prov = torch.full((inputs.shape[0], len(alphas), 16, 16), EDIT_SOURCE) if nn else None
        return types.SimpleNamespace(images=imgs, alphas=list(alphas), provenance=prov)

    def box_mask(resolution, x0, y0, x1, y1):
        calls["box"] = (x0, y0, x1, y1)
        m = torch.zeros(resolution, resolution, dtype=torch.bool)
        m[y0:y1, x0:x1] = True
        return m

    def complete(self, image, mask, n=8, seed=None, **overrides):
        calls["complete"] = (tuple(image.shape), int(mask.sum()), n, seed)
        prov = torch.full((n, 16, 16), -1, dtype=torch.long)
        prov[:, :8, :8] = COMPLETION_SOURCE
        imgs = image.expand(n, -1, -1, -1).clone()
        imgs[:, :, mask] = 0.5
        samples = types.SimpleNamespace(provenance=prov, components=torch.zeros(n, dtype=torch.long))
        return types.SimpleNamespace(images=imgs, samples=samples)

    monkeypatch.setitem(sys.modules, "lrgmm.editing", types.SimpleNamespace(AttributeEdit=AttributeEdit))
    monkeypatch.setitem(sys.modules, "lrgmm.conditional", types.SimpleNamespace(box_mask=box_mask))
    monkeypatch.setattr(FacePipeline, "edit", edit, raising=False)
    monkeypatch.setattr(FacePipeline, "complete", complete, raising=False)
    return calls

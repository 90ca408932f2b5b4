"""An independent attribute judge: logistic regression on Inception-v3 features of real photos.

The editing and conditional-generation reports ask "does this face show the attribute?" of a
classifier that never saw our latent space: it is trained on the 2048-d Inception features
(``InceptionExtractor``) of real, labelled photos, and then applied to generated or edited faces.
Using it to *measure* edits is fair only because nothing in the editing or sampling code uses
it (they use latent-code classifiers of their own).

Model: multinomial logistic regression on standardised features, L2 penalty, class weights
inversely proportional to class frequency (so a rare class such as ``senior`` is not ignored),
fitted by L-BFGS in float64. ``train_attribute_classifier`` trains one on a list of photos and
reports its accuracy on a held-out part of them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lrgmm.errors import NotFittedError
from lrgmm.io.images import load_images
from lrgmm.data.labels import LabelError, LabelTable
from lrgmm.core.randomness import as_generator
from lrgmm.editing.maps import fit_softmax
from lrgmm.metrics.features import InceptionExtractor


class AttributeClassifier:
    """Logistic regression ``p(category | features)``.

    Parameters
    ----------
    l2 : penalty on the weights (standardised features; the objective is the weighted mean
        log-loss + ``l2 / 2 * ||W||^2``).
    max_iter, tol : L-BFGS iterations and gradient tolerance.
    balanced : weight each training example by ``n / (C * n_class)``.

    Attributes
    ----------
    categories_ : list of the category names, in the column order of ``predict_proba``.
    mean_, scale_ : (D,) standardisation of the features.
    coef_ : (C, D) float64 weights; ``intercept_`` : (C,).
    """

    def __init__(self, l2: float = 1e-2, max_iter: int = 300, tol: float = 1e-7, balanced: bool = True):
        self.l2 = l2
        self.max_iter = max_iter
        self.tol = tol
        self.balanced = balanced

    def fit(self, features, labels: Sequence[str | None]) -> AttributeClassifier:
        """Fit on (N, D) features and N labels; ``None`` labels (unlabeled photos) are dropped."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] != len(labels):
            raise ValueError(f"features must be (N, D) with N = len(labels) = {len(labels)}, got {x.shape}")
        keep = np.array([lab is not None for lab in labels], dtype=bool)
        x = x[keep]
        y_names = [str(lab) for lab in labels if lab is not None]
        cats = sorted(set(y_names))
        if len(cats) < 2:
            raise LabelError(f"an attribute classifier needs two categories among the labels, got {cats or 'none'}")
        index = {c: i for i, c in enumerate(cats)}
        y = torch.tensor([index[c] for c in y_names])
        counts = torch.bincount(y, minlength=len(cats)).double()
        weights = (len(y) / (len(cats) * counts))[y] if self.balanced else torch.ones(len(y), dtype=torch.float64)

        self.mean_ = x.mean(0)
        self.scale_ = x.std(0) + 1e-6
        xt = torch.from_numpy((x - self.mean_) / self.scale_)
        # The regression of the latent classifiers (lrgmm.editing.maps), class-balanced; its
        # penalty is l2 |W|^2, this judge's 0.5 l2 |W|^2.
        w, b = fit_softmax(xt, y, len(cats), 0.5 * self.l2, max_iter=self.max_iter, sample_weight=weights, tol=self.tol)
        self.coef_ = w.T.numpy()
        self.intercept_ = b.numpy()
        self.categories_ = cats
        return self

    def check_is_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError("AttributeClassifier is not fitted; call fit(features, labels) first")

    def decision_function(self, features) -> np.ndarray:
        self.check_is_fitted()
        x = (np.asarray(features, dtype=np.float64) - self.mean_) / self.scale_
        return x @ self.coef_.T + self.intercept_

    def predict_proba(self, features) -> np.ndarray:
        """(n, C) probabilities, columns in ``categories_`` order."""
        z = self.decision_function(features)
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, features) -> list[str]:
        return [self.categories_[i] for i in self.decision_function(features).argmax(axis=1)]

    def score(self, features, labels: Sequence[str | None]) -> float:
        """Accuracy on the labelled examples."""
        return accuracy(self.predict(features), labels)

    def balanced_score(self, features, labels: Sequence[str | None]) -> float:
        """Mean over categories of the per-category accuracy (recall)."""
        return balanced_accuracy(self.predict(features), labels)


def accuracy(predicted: Sequence[str], labels: Sequence[str | None]) -> float:
    pairs = [(p, t) for p, t in zip(predicted, labels) if t is not None]
    return float(np.mean([p == t for p, t in pairs])) if pairs else float("nan")


def balanced_accuracy(predicted: Sequence[str], labels: Sequence[str | None]) -> float:
    per = {}
    for p, t in zip(predicted, labels):
        if t is not None:
            per.setdefault(t, []).append(p == t)
    return float(np.mean([np.mean(v) for v in per.values()])) if per else float("nan")


@dataclass
class TrainedAttributeClassifier:
    """A classifier and how well it does on photos it was not trained on."""

    attribute: str
    classifier: AttributeClassifier
    accuracy: float
    balanced_accuracy: float
    n_train: int
    n_test: int
    counts: dict[str, int]

    def summary(self) -> str:
        return (f"{self.attribute}: Inception-feature logistic regression on {self.n_train} real photos, "
                f"held-out accuracy {self.accuracy:.3f} (balanced {self.balanced_accuracy:.3f}) on {self.n_test}; "
                f"categories {self.counts}")


def train_attribute_classifier(
    files: Sequence[str | os.PathLike],
    attribute: str,
    *,
    labels_csv: str | os.PathLike | None = None,
    resolution: int = 128,
    holdout_fraction: float = 0.2,
    seed: int = 0,
    extractor: InceptionExtractor | None = None,
    progress: bool = True,
    **classifier_params,
) -> TrainedAttributeClassifier:
    """Train an ``AttributeClassifier`` for ``attribute`` on real photos.

    Photos are read as everywhere else (``load_images``: unreadable and duplicate files are
    skipped), labelled by ``lrgmm.data.labels`` (UTKFace names or ``labels_csv``), and split at random
    (``seed``) into a training part and a held-out part of ``holdout_fraction``, on which the
    accuracy is reported. Inception features are cached per photo set.
    """
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    extractor = extractor or InceptionExtractor(progress=progress)
    li = load_images(list(files), resolution)
    labels = LabelTable.from_files(li.paths, labels_csv).column(attribute)
    feats = extractor.file_features(li.paths, li.hashes, resolution, lambda: li.images,
                                    desc=f"Inception features ({attribute} judge)")
    idx = np.flatnonzero([lab is not None for lab in labels])
    perm = idx[torch.randperm(len(idx), generator=as_generator(seed)).numpy()]
    n_test = max(1, round(holdout_fraction * len(perm)))
    test, train = perm[:n_test], perm[n_test:]
    clf = AttributeClassifier(**classifier_params).fit(feats[train], [labels[i] for i in train])
    test_labels = [labels[i] for i in test]
    counts = {c: int(sum(labels[i] == c for i in idx)) for c in clf.categories_}
    return TrainedAttributeClassifier(
        attribute, clf, clf.score(feats[test], test_labels), clf.balanced_score(feats[test], test_labels),
        len(train), len(test), counts,
    )

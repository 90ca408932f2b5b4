"""The independent attribute judge (logistic regression on Inception features)."""

import numpy as np
import pytest

from lrgmm.errors import NotFittedError
from lrgmm.data.labels import LabelError
from experiments.attribute_judge import (
    AttributeClassifier,
    accuracy,
    balanced_accuracy,
    train_attribute_classifier,
)
from lrgmm.metrics.features import find_inception_file


def _clusters(n_per, seed=0, d=6):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (3, d))
    x = np.concatenate([c + rng.normal(0, 1, (m, d)) for c, m in zip(centres, n_per)])
    y = [name for name, m in zip(["a", "b", "c"], n_per) for _ in range(m)]
    return x, y


def test_matches_scikit_learn_multinomial_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    x, y = _clusters([60, 30, 90])
    l2 = 0.05
    ours = AttributeClassifier(l2=l2).fit(x, y)
    xs = (x - ours.mean_) / ours.scale_
    # Same objective: sklearn minimises sum_i w_i loss_i + ||W||^2 / (2C); ours the weighted mean
    # loss + l2/2 ||W||^2 with weights summing to n, so C = 1 / (l2 n).
    ref = LogisticRegression(C=1.0 / (l2 * len(y)), class_weight="balanced", tol=1e-10, max_iter=5000).fit(xs, y)
    assert list(ref.classes_) == ours.categories_
    np.testing.assert_allclose(ours.predict_proba(x), ref.predict_proba(xs), atol=2e-4)


def test_separable_classes_are_learned_and_unlabeled_rows_dropped():
    x, y = _clusters([40, 40, 40], seed=1)
    y_missing = [None if i % 7 == 0 else v for i, v in enumerate(y)]
    clf = AttributeClassifier().fit(x, y_missing)
    xt, yt = _clusters([40, 40, 40], seed=1)  # same centres, same draws: training accuracy
    assert clf.score(xt, yt) > 0.95
    p = clf.predict_proba(x)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-12)
    assert clf.predict(x) == [clf.categories_[i] for i in p.argmax(1)]


def test_balanced_weights_keep_a_rare_class():
    x, y = _clusters([300, 300, 12], seed=2)
    clf = AttributeClassifier().fit(x, y)
    rare = [i for i, v in enumerate(y) if v == "c"]
    assert np.mean([clf.predict(x[rare])[k] == "c" for k in range(len(rare))]) > 0.9


def test_accuracy_helpers_and_errors():
    assert accuracy(["a", "b", "b"], ["a", "b", None]) == 1.0
    assert balanced_accuracy(["a", "a", "a", "b"], ["a", "a", "a", "a"]) == 0.75
    assert balanced_accuracy(["a", "a"], ["a", "b"]) == 0.5
    with pytest.raises(LabelError, match="two categories"):
        AttributeClassifier().fit(np.zeros((3, 2)), ["a", "a", None])
    with pytest.raises(NotFittedError, match="not fitted"):
        AttributeClassifier().predict(np.zeros((1, 2)))


@pytest.mark.slow
def test_gender_judge_on_real_faces(utkface_dir):
    find_inception_file()
    files = sorted((utkface_dir / "images").iterdir())[::100][:200]
    judge = train_attribute_classifier(files, "gender", holdout_fraction=0.3, seed=0, progress=False)
    assert judge.n_train + judge.n_test <= 200 and judge.n_test >= 50
    assert set(judge.counts) == {"male", "female"}
    # Inception features carry gender well; chance is 0.5.
    assert judge.balanced_accuracy > 0.7, judge.summary()

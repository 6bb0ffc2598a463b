"""Downstream-biology checks on the real bladderbatch arrays (cancer vs normal)."""

from __future__ import annotations

import numpy as np
import pytest

from geneinfer.errors import GeneinferError
from geneinfer.evaluate.biology import (
    cv_accuracy,
    de_ranking,
    evaluate_downstream,
    select_classes,
    top_de_overlap,
)


@pytest.fixture(scope="module")
def bladder(shared):
    """Landmark-like and target-like probe blocks of bladderbatch, cancer vs normal only."""
    from geneinfer.io.gct import read_gct

    data = read_gct(shared / "gpl96" / "bladderbatch.gct.gz")
    labels = data.samples["label"].astype(str).to_numpy()
    keep = np.isin(labels, ["Cancer", "Normal"])
    values = data.values[keep]
    # The most variable probes, split into a "landmark" and a "target" block.
    order = np.argsort(-values.var(axis=0))
    lm, tg = values[:, order[:100]], values[:, order[100:500]]
    return lm, tg, labels[keep]


def test_select_classes_filters_missing_and_small_classes():
    labels = ["a"] * 6 + ["b"] * 5 + ["c"] * 2 + ["na", "", "NaN"]
    mask = select_classes(labels, min_class_size=5)
    assert mask.tolist() == [True] * 11 + [False] * 5
    mask = select_classes(labels, classes=["b", "c"], min_class_size=2)
    assert mask.sum() == 7


def test_true_profiles_separate_cancer_from_normal(bladder):
    lm, tg, y = bladder
    acc, _ = cv_accuracy(np.hstack([lm, tg]), y)
    majority = max(np.mean(y == "Cancer"), np.mean(y == "Normal"))
    assert acc > majority + 0.05
    assert acc > 0.9


def test_noise_features_give_about_majority_accuracy(rng):
    # Standardization is fitted inside each fold; pure noise must not look predictive.
    y = np.array(["x"] * 30 + ["y"] * 30)
    accs = [cv_accuracy(rng.normal(size=(60, 500)), y, seed=s)[0] for s in range(3)]
    assert 0.3 < np.mean(accs) < 0.7


def test_cv_accuracy_rejects_one_class_and_tiny_classes():
    X = np.zeros((6, 3))
    with pytest.raises(GeneinferError, match="two or more classes"):
        cv_accuracy(X, ["a"] * 6)
    with pytest.raises(GeneinferError, match="smallest class"):
        cv_accuracy(X, ["a"] * 5 + ["b"])


def test_de_overlap_perfect_for_truth_and_chance_for_noise(bladder, rng):
    _, tg, y = bladder
    same = top_de_overlap(tg, tg.copy(), y, top_n=50)
    assert same["overlap"] == 1.0 and same["jaccard"] == 1.0
    noise = rng.normal(size=tg.shape)
    other = top_de_overlap(tg, noise, y, top_n=50)
    assert other["overlap"] < 0.2
    assert other["chance_overlap"] == pytest.approx(50 / tg.shape[1])
    # A noisy but informative inference keeps most of the top genes.
    noisy = tg + rng.normal(scale=0.3 * tg.std(axis=0), size=tg.shape)
    assert top_de_overlap(tg, noisy, y, top_n=50)["overlap"] > 0.5


def test_de_ranking_multiclass_uses_anova(rng):
    Y = rng.normal(size=(30, 4))
    y = np.repeat(["a", "b", "c"], 10)
    Y[y == "c", 0] += 3.0  # gene 0 differs in one of three classes
    p = de_ranking(Y, y)
    assert np.argmin(p) == 0 and p[0] < 1e-5


def test_evaluate_downstream_rows(bladder, rng):
    lm, tg, y = bladder
    good = evaluate_downstream(lm, tg, tg + rng.normal(scale=0.1, size=tg.shape), y, top_n=50)
    # Samples shuffled: inferred targets carry no information about the class.
    bad = evaluate_downstream(lm, tg, tg[rng.permutation(len(tg))], y, top_n=50)
    assert good["n_samples"] == len(y) and good["n_classes"] == 2
    assert good["de_overlap"] > 0.8 > bad["de_overlap"]
    assert good["acc_full_true"] > 0.9
    assert good["acc_landmarks_inferred"] >= bad["acc_landmarks_inferred"] - 0.02
    for key in ("acc_full_true", "acc_landmarks", "acc_landmarks_inferred", "majority_class"):
        assert 0.0 <= good[key] <= 1.0

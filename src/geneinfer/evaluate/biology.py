"""Downstream biology: do inferred profiles support the same conclusions as measured ones?

Two checks on a labelled data set (e.g. cancer vs normal):

* **classification** — cross-validated accuracy of a standardized logistic regression on
  (a) the true full profiles (landmarks + targets), (b) landmarks only, (c) landmarks +
  inferred targets. If (c) is not better than (b), inference added nothing for this task.
* **differential expression** — overlap of the top-N genes ranked by a t-test (two classes)
  or one-way ANOVA (more classes) on true vs inferred target profiles.

The inferred targets must come from a model that never saw the evaluated data set (the
study runner uses its leave-one-dataset-out predictions).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from geneinfer.errors import GeneinferError

__all__ = [
    "cv_accuracy",
    "de_ranking",
    "downstream_table",
    "evaluate_downstream",
    "select_classes",
    "top_de_overlap",
]


def select_classes(
    labels: Sequence[object],
    *,
    classes: Sequence[str] | None = None,
    min_class_size: int = 5,
) -> np.ndarray:
    """Boolean mask of samples usable for a classification task.

    Keeps samples whose label is in ``classes`` (all labels when None), is not missing
    (NaN / ``"na"`` / empty), and whose class has at least ``min_class_size`` samples.
    """
    lab = pd.Series(labels, dtype=object).astype(str).str.strip()
    ok = ~lab.str.lower().isin({"", "na", "nan", "none"})
    if classes is not None:
        ok &= lab.isin([str(c) for c in classes])
    counts = lab[ok].value_counts()
    ok &= lab.isin(counts[counts >= min_class_size].index)
    return ok.to_numpy()


def cv_accuracy(
    X: np.ndarray,
    labels: Sequence[object],
    *,
    n_splits: int = 5,
    seed: int = 0,
    C: float = 0.1,
) -> tuple[float, float]:
    """Stratified k-fold accuracy (mean, std) of a standardized logistic regression.

    The scaler is fitted inside each training fold (it is part of the pipeline), so no
    statistic of a test fold leaks into training. Columns with a missing value in any
    sample are dropped (NaN is never filled with 0).
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray([str(v) for v in labels])
    X = X[:, np.isfinite(X).all(axis=0)]
    _, counts = np.unique(y, return_counts=True)
    if len(counts) < 2:
        raise GeneinferError(f"classification needs two or more classes, got {len(counts)}")
    k = int(min(n_splits, counts.min()))
    if k < 2:
        raise GeneinferError(
            f"smallest class has {counts.min()} sample(s); stratified CV needs at least 2"
        )
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    scores = cross_val_score(clf, X, y, cv=cv, scoring="accuracy")
    return float(scores.mean()), float(scores.std())


def de_ranking(Y: np.ndarray, labels: Sequence[object]) -> np.ndarray:
    """P-value per gene: Welch t-test for two classes, one-way ANOVA for more."""
    Y = np.asarray(Y, dtype=np.float64)
    y = np.asarray([str(v) for v in labels])
    groups = [Y[y == c] for c in np.unique(y)]
    if len(groups) < 2:
        raise GeneinferError("differential expression needs two or more classes")
    # Near-constant genes trigger scipy precision warnings; their p-values are handled below.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if len(groups) == 2:
            p = stats.ttest_ind(groups[0], groups[1], equal_var=False, nan_policy="omit").pvalue
        else:
            p = stats.f_oneway(*groups, axis=0).pvalue
    p = np.asarray(p, dtype=np.float64)
    # Constant genes give NaN; rank them last rather than dropping them.
    return np.where(np.isfinite(p), p, 1.0)


def top_de_overlap(
    Y_true: np.ndarray,
    Y_inferred: np.ndarray,
    labels: Sequence[object],
    *,
    top_n: int = 100,
) -> dict[str, float]:
    """Overlap of the ``top_n`` differentially expressed genes in true vs inferred data.

    Returns ``overlap`` (shared / top_n), ``jaccard``, the overlap expected by chance
    (``top_n / n_genes``) and the Spearman correlation of the two gene-wise
    -log10 p-value vectors.
    """
    if np.shape(Y_true) != np.shape(Y_inferred):
        raise GeneinferError(
            f"true and inferred profiles differ in shape: {np.shape(Y_true)} vs "
            f"{np.shape(Y_inferred)}"
        )
    n_genes = np.shape(Y_true)[1]
    top_n = int(min(top_n, n_genes))
    p_true = de_ranking(Y_true, labels)
    p_inf = de_ranking(Y_inferred, labels)
    a = set(np.argsort(p_true, kind="stable")[:top_n].tolist())
    b = set(np.argsort(p_inf, kind="stable")[:top_n].tolist())
    shared = len(a & b)
    rho = stats.spearmanr(-np.log10(p_true + 1e-300), -np.log10(p_inf + 1e-300)).statistic
    return {
        "top_n": top_n,
        "overlap": shared / top_n,
        "jaccard": shared / len(a | b),
        "chance_overlap": top_n / n_genes,
        "spearman_logp": float(rho),
    }


def evaluate_downstream(
    landmarks: np.ndarray,
    true_targets: np.ndarray,
    inferred_targets: np.ndarray,
    labels: Sequence[object],
    *,
    classes: Sequence[str] | None = None,
    min_class_size: int = 5,
    n_splits: int = 5,
    top_n: int = 100,
    seed: int = 0,
) -> dict[str, float]:
    """Classification accuracies on the three feature sets and the top-N DE overlap.

    Parameters
    ----------
    landmarks, true_targets, inferred_targets
        Sample-aligned matrices (samples x genes) of one labelled data set.
    labels
        Class label of each sample; filtered with :func:`select_classes`.
    """
    keep = select_classes(labels, classes=classes, min_class_size=min_class_size)
    y = np.asarray([str(v) for v in labels])[keep]
    lm = np.asarray(landmarks)[keep]
    tt = np.asarray(true_targets)[keep]
    it = np.asarray(inferred_targets)[keep]
    row: dict[str, float] = {"n_samples": int(keep.sum()), "n_classes": len(np.unique(y))}
    features = {
        "acc_full_true": np.hstack([lm, tt]),
        "acc_landmarks": lm,
        "acc_landmarks_inferred": np.hstack([lm, it]),
    }
    for name, X in features.items():
        mean, std = cv_accuracy(X, y, n_splits=n_splits, seed=seed)
        row[name] = mean
        row[name + "_std"] = std
    row["majority_class"] = float(pd.Series(y).value_counts(normalize=True).iloc[0])
    # Genes missing (NaN) in either matrix are excluded from the DE comparison.
    ok = np.isfinite(tt).all(axis=0) & np.isfinite(it).all(axis=0)
    de = top_de_overlap(tt[:, ok], it[:, ok], y, top_n=top_n)
    row.update({f"de_{k}": v for k, v in de.items()})
    return row


def downstream_table(rows: Sequence[dict[str, object]]) -> pd.DataFrame:
    """Rows of :func:`evaluate_downstream` (plus ``dataset``/``model`` keys) as a table."""
    table = pd.DataFrame(list(rows))
    first = [c for c in ("dataset", "model", "n_samples", "n_classes") if c in table]
    return table[first + [c for c in table.columns if c not in first]]

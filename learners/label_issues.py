"""Likely label mistakes: out-of-fold predicted probabilities on the labeled items, then cleanlab's confident
learning over them (Northcutt et al., "Confident Learning", 2021). No database: app.jobs.review reads the labels
and stores what this finds.

Out of fold: the labeled items are split into `k` stratified, seeded folds (`k = 5`, fewer when a class has
fewer labels, never fewer than 2; `fold_count`); each fold's rows are predicted by a head trained
(`learners.heads.train_head`, supervised, the project's head settings) on the other folds only, so no item's row
comes from a model that saw its label. A class with a single label is never seen by the model that predicts that
item, so such an item is likely flagged: with one label nothing else supports it.

`ranked_issues` hands the labels and those probabilities to `cleanlab.filter.find_label_issues` (its default
filter, prune by noise rate) and ranks what it flags by self-confidence, the out-of-fold probability of the given
label, lowest first. Single-label only: multi-label projects are refused with a worded message.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from cleanlab.filter import find_label_issues
from sklearn.model_selection import StratifiedKFold

from learners.errors import LearnerError
from learners.heads import HeadConfig, train_head

MAX_FOLDS = 5
MULTI_LABEL_REFUSAL = ("Likely label mistakes are found for single-label projects only: a multi-label project's "
                       "labels are sets of tags, which this scan does not check.")

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class LabelIssue:
    """A labeled item whose label is likely wrong; `rank` 0 is the likeliest."""

    index: int  # row in the labels / probabilities given
    rank: int
    given: int
    suggested: int  # argmax of the out-of-fold probabilities
    probability: float  # out-of-fold probability of `suggested`
    given_probability: float  # out-of-fold probability of `given` (self-confidence: the ranking key)


def _single_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise LearnerError(MULTI_LABEL_REFUSAL)
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise LearnerError(f"labels must be class indices in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
    return labels.astype(np.int64)


def fold_count(labels: np.ndarray, max_folds: int = MAX_FOLDS) -> int:
    """The number of folds: `max_folds`, fewer when a class has fewer labels (at least 2). A class with a single
    label does not count: one stray label would otherwise halve the folds of every other item.
    LearnerError unless two classes have two labels each (with less there is nothing to hold out against)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64))
    if (counts >= 2).sum() < 2:
        raise LearnerError("Finding likely label mistakes needs at least two classes with two labels each; "
                           f"the labels so far count {', '.join(str(c) for c in counts[counts > 0]) or 'none'} "
                           "per class.")
    return int(min(counts[counts >= 2].min(), max_folds))


def fold_of(labels: np.ndarray, seed: int = 0, max_folds: int = MAX_FOLDS) -> np.ndarray:
    """The fold (0 .. k-1) of each labeled row: stratified by class, shuffled by `seed`."""
    labels = np.asarray(labels, dtype=np.int64)
    k = fold_count(labels, max_folds)
    folds = np.empty(len(labels), dtype=np.int64)
    with warnings.catch_warnings():  # a class with fewer labels than folds: it lands in fewer folds, as documented
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        splits = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels)
        for fold, (_, held_out) in enumerate(splits):
            folds[held_out] = fold
    return folds


def out_of_fold_probs(features: np.ndarray, labels: np.ndarray, num_classes: int, config: HeadConfig, *,
                      seed: int = 0, max_folds: int = MAX_FOLDS, device: str = "cpu",
                      progress: Progress | None = None) -> np.ndarray:
    """(N, num_classes) probabilities of the labeled rows `features` (class `labels`), each row predicted by a head
    trained on the other folds only (`fold_of`). Every fold's head is trained with `config` (its seed included)."""
    labels = _single_labels(labels, num_classes)
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or len(features) != len(labels):
        raise LearnerError(f"need features (N, d) for {len(labels)} labels, got shape {features.shape}")
    folds = fold_of(labels, seed, max_folds)
    k = int(folds.max()) + 1
    probs = np.zeros((len(labels), num_classes), dtype=np.float32)
    for fold in range(k):
        if progress is not None:
            progress(fold / k, f"fold {fold + 1} of {k}: training on {(folds != fold).sum()} labels")
        train, held_out = folds != fold, folds == fold
        head = train_head(features[train], labels[train], num_classes, config, device=device)
        probs[held_out] = head.predict_proba(features[held_out])
    if progress is not None:
        progress(1.0, f"{k} folds predicted")
    return probs


def ranked_issues(labels: np.ndarray, probs: np.ndarray) -> list[LabelIssue]:
    """The rows cleanlab flags as likely mislabeled (`find_label_issues`, ranked by self-confidence), likeliest
    first. `probs` must be out-of-fold (`out_of_fold_probs`): probabilities from a model trained on the same labels
    would mostly agree with them, wrong ones included."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise LearnerError(f"need probabilities (N, classes), got shape {probs.shape}")
    labels = _single_labels(labels, probs.shape[1])
    if len(labels) != len(probs):
        raise LearnerError(f"{len(labels)} labels but {len(probs)} rows of probabilities")
    if len(labels) == 0:
        return []
    with warnings.catch_warnings():  # "too few examples in class k": the fold count already says so
        warnings.simplefilter("ignore", UserWarning)
        flagged = find_label_issues(labels, probs, return_indices_ranked_by="self_confidence", n_jobs=1)
    suggested = probs.argmax(axis=1)
    return [
        LabelIssue(index=int(i), rank=rank, given=int(labels[i]), suggested=int(suggested[i]),
                   probability=float(probs[i, suggested[i]]), given_probability=float(probs[i, labels[i]]))
        for rank, i in enumerate(flagged)
    ]

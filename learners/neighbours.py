"""The two orders the grid page (app/pages/grid.py) shows items in, on arrays only (no database):

- `cosine_neighbours`: "more like this", the items nearest to one item by cosine similarity of their cached
  features (the latest `features` artifact), nearest first;
- `most_confident`: "grid accept", the items the latest head gives the highest probability of one class.

Both rank only the `candidates` given (the caller leaves out labeled, evaluation and queued items) and break ties
by item id, so the same inputs always give the same page.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np


def _positions(ids: np.ndarray, wanted: Iterable[int]) -> np.ndarray:
    """Rows of `ids` whose id is in `wanted` (any iterable of ids, or an array of them), in row order."""
    if not isinstance(wanted, np.ndarray):
        wanted = np.fromiter((int(i) for i in wanted), dtype=np.int64)
    return np.flatnonzero(np.isin(ids.astype(np.int64), wanted.astype(np.int64)))


def _ranked(ids: np.ndarray, scores: np.ndarray, rows: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The `k` rows of `rows` with the highest score (ties: lower item id first) as (item id, score)."""
    keep = rows[np.isfinite(scores[rows])]
    order = np.lexsort((ids[keep].astype(np.int64), -scores[keep]))[:max(0, k)]
    return [(int(ids[keep[j]]), float(scores[keep[j]])) for j in order]


def cosine_neighbours(features: np.ndarray, ids: np.ndarray, item_id: int, candidates: Iterable[int],
                      k: int) -> list[tuple[int, float]]:
    """The `k` items of `candidates` nearest to `item_id` by cosine similarity of their feature rows, nearest first,
    as (item id, similarity); the item itself is never one of them. Rows with no features (NaN, a file that could
    not be read) and zero rows are left out. Raises KeyError when `item_id` has no usable feature row."""
    features = np.asarray(features, dtype=np.float64)
    ids = np.asarray(ids)
    where = np.flatnonzero(ids.astype(np.int64) == int(item_id))
    if not len(where):
        raise KeyError(f"item {item_id} has no cached features")
    norms = np.linalg.norm(features, axis=1)
    query = features[where[0]]
    if not np.isfinite(query).all() or norms[where[0]] == 0:
        raise KeyError(f"item {item_id} has no usable features (its file could not be read)")
    with np.errstate(invalid="ignore", divide="ignore"):
        similarity = features @ query / (norms * norms[where[0]])
    similarity[norms == 0] = np.nan
    rows = _positions(ids, candidates)
    rows = rows[ids[rows].astype(np.int64) != int(item_id)]
    return _ranked(ids, similarity, rows, k)


def most_confident(probabilities: np.ndarray, ids: np.ndarray, class_index: int, candidates: Iterable[int],
                   k: int) -> list[tuple[int, float]]:
    """The `k` items of `candidates` with the highest probability of `class_index`, as (item id, probability)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if not 0 <= class_index < probabilities.shape[1]:
        raise ValueError(f"class {class_index} is not a column of the predictions ({probabilities.shape[1]} classes)")
    ids = np.asarray(ids)
    return _ranked(ids, probabilities[:, class_index], _positions(ids, candidates), k)

"""`typiclust`: TypiClust (Hacohen, Dekel and Weinshall, ICML 2022, "Active Learning on a Budget: Opposite
Strategies Suit High and Low Budgets"), for the first rounds, when few labels exist.

1. k-means the candidates and the labeled pool items together on `features` into |L| + B clusters
   (k-means++ seeding and Lloyd iterations, seeded by `rng`; at most one cluster per point).
2. B times: take the cluster with the fewest labeled-or-picked points, the largest among those (so first the
   largest clusters with no labeled point), and pick its most typical candidate not yet picked:
   typicality(x) = 1 / (mean Euclidean distance from x to its K nearest neighbours in the cluster + 1e-5),
   K = min(`k_neighbours`, cluster size - 1) (the paper's K = 20). Clusters with no candidate left are skipped.

Scores are the picks' typicalities, in pick order. Reads only `features` (no head needed: cold start friendly).
Multi-label: the rule reads neither labels nor probabilities, so it applies unchanged.
Cost: k-means O(iterations N (|L| + B) d) with N = |U| + |L|; typicality O(m^2 d) per picked cluster of m points.
"""
from __future__ import annotations

import numpy as np

from learners.strategies.base import Selection, Strategy, StrategyInputs
from learners.strategies.params import Param
from learners.strategies.registry import register

KMEANS_ITERATIONS = 100
TYPICALITY_EPS = 1e-5


@register
class TypiClustStrategy(Strategy):
    name = "typiclust"
    needs = frozenset({"features"})
    supports_multi_label = True
    params = (Param("k_neighbours", int, 20, "K: neighbours within its cluster that a point's typicality is "
                                              "measured on", minimum=1),)

    def __init__(self, k_neighbours: int = 20) -> None:
        self.k_neighbours = k_neighbours

    def _select(self, inputs: StrategyInputs, budget: int, rng: np.random.Generator) -> Selection:
        labeled = np.empty(0, dtype=np.int64) if inputs.labeled is None else np.asarray(inputs.labeled, np.int64)
        points = np.concatenate([inputs.candidates, labeled])
        x = np.asarray(inputs.features, dtype=np.float64)[points]
        cluster = kmeans(x, min(len(labeled) + budget, len(points)), rng)
        is_candidate = np.arange(len(points)) < len(inputs.candidates)
        covered = np.bincount(cluster[~is_candidate], minlength=cluster.max() + 1)
        sizes = np.bincount(cluster, minlength=len(covered))
        taken = np.zeros(len(points), dtype=bool)
        picks, scores = [], []
        while len(picks) < budget:
            open_clusters = np.unique(cluster[is_candidate & ~taken])
            best = open_clusters[np.lexsort((-sizes[open_clusters], covered[open_clusters]))[0]]
            members = np.flatnonzero(cluster == best)
            typical = typicality(x[members], self.k_neighbours)
            typical[~is_candidate[members] | taken[members]] = -np.inf
            chosen = members[int(np.argmax(typical))]
            taken[chosen] = True
            covered[best] += 1
            picks.append(points[chosen])
            scores.append(typical.max())
        return Selection(np.array(picks, dtype=np.int64), np.array(scores), [self.name] * budget)


def kmeans(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Cluster index of each row of `x` (n, d) for `k` <= n clusters: k-means++ seeding, then Lloyd iterations
    until the assignment no longer changes. An emptied cluster keeps its last centre."""
    squared_norms = (x * x).sum(axis=1)

    def squared_distances_to(row: int) -> np.ndarray:
        return np.maximum(squared_norms - 2 * x @ x[row] + squared_norms[row], 0.0)

    centres = [int(rng.integers(len(x)))]
    nearest = squared_distances_to(centres[0])
    for _ in range(k - 1):
        if nearest.sum() > 0:
            weights = nearest / nearest.sum()
        else:  # every point coincides with a centre: any point that is not one yet
            weights = np.isin(np.arange(len(x)), centres, invert=True) / (len(x) - len(centres))
        centres.append(int(rng.choice(len(x), p=weights)))
        nearest = np.minimum(nearest, squared_distances_to(centres[-1]))
    centre_x = x[centres]
    assignment = np.full(len(x), -1)
    for _ in range(KMEANS_ITERATIONS):
        distances = squared_norms[:, None] - 2 * x @ centre_x.T + (centre_x * centre_x).sum(axis=1)[None, :]
        new = np.argmin(distances, axis=1)
        if np.array_equal(new, assignment):
            break
        assignment = new
        for c in np.unique(assignment):
            centre_x[c] = x[assignment == c].mean(axis=0)
    return assignment


def typicality(x: np.ndarray, k_neighbours: int) -> np.ndarray:
    """1 / (mean Euclidean distance to the K nearest other rows + eps), K = min(k_neighbours, len(x) - 1); a single
    row (no neighbour) gets 1 / eps."""
    k = min(k_neighbours, len(x) - 1)
    if k == 0:
        return np.full(len(x), 1.0 / TYPICALITY_EPS)
    squared_norms = (x * x).sum(axis=1)
    distances = np.sqrt(np.maximum(squared_norms[:, None] - 2 * x @ x.T + squared_norms[None, :], 0.0))
    np.fill_diagonal(distances, np.inf)
    nearest = np.partition(distances, k - 1, axis=1)[:, :k]
    return 1.0 / (nearest.mean(axis=1) + TYPICALITY_EPS)

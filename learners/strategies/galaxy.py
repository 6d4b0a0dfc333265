"""`galaxy`: graph-based bisection on one-vs-rest margin lines (Zhang et al., ICML 2022), multi-class and
multi-label.

For class k every pool item (labeled + candidates) gets the line score

    margin_k = P[:, k] - max_j P[:, j] + 1e-8 * max_j P[:, j]      (float64, `line_score`)

as every reference code writes it (LabelBench `galaxy.py` and `direct.py`, TAILOR `strategy/meta/utils.py`, the
original GALAXY), and the pool is laid out on a line ordered by margin_k (largest first). Inside the block of
items predicted k the first two terms cancel, so that block is ordered by 1e-8 P_k, i.e. by P_k, most confident
first; outside it margin_k is (about) P_k minus the top probability, negative. The sum is taken in float64, where
the 1e-8 term survives float32 inputs (distinct float32 values of P_k keep distinct 1e-8 multiples).
Labeled items carry y_k = 1[label == k]. Each pick takes one class, cycling through a seeded permutation of the
classes (pick t of the round uses order[(step + t) % len(order)], order = np.random.default_rng(seed).permutation(C);
with `classes=[...]` the cycle runs over only those classes, order = classes[np.random.default_rng(seed)
.permutation(len(classes))], as TAILOR's one-class arms need), and on that class's line takes, in this order of
preference:

1. bisection: among the runs of candidates lying strictly between two consecutive labeled items with different
   y_k, the shortest one, and its middle item ((first + last) // 2, as in the reference code);
2. boundary: when every such pair of labeled items is adjacent (no candidate between them), the candidate nearest
   (in line positions) to one of those 0/1 boundaries, on either side;
3. random: when class k's labeled items all share one y_k (or none is labeled), a uniformly random candidate.
Ties (equal run lengths, equal distances, equal margins when sorting) are broken at random with the call's `rng`.

Rule 2 counts boundaries of both orientations, and here the references contradict each other: LabelBench (line
largest margin first) reacts only to an inverted pair, a y_k = 0 item directly before a y_k = 1 item; TAILOR
(`galaxy_sub.py`, line smallest margin first) only to a natural one, y_k = 1 directly before y_k = 0 in this
file's largest-first order. Neither is the one reference to follow, so this rule takes both: the nearest candidate
beside any adjacent pair with different y_k.

Sequential protocol. With `ask` (simulation) each pick is labeled before the next and joins the labeled set. Without
it, earlier picks of the same call are taken but unlabeled: they leave the line, never counted as labeled. Items
that are neither candidates nor labeled (already queued) are not on the line at all; the evaluation set never
reaches a strategy (app.jobs.select hands over pool rows only).

Cost per call: one pass over the probabilities for max_j P_j (O(N C)), then per class used O(N) for its line
scores and one argsort of N floats (cached for the call while it fits in `CACHE_ELEMENTS`); then O(N) numpy work
per pick. The work is 1-D sorting and scanning, so it runs in numpy on the CPU; `device` is accepted like every
strategy's and not used.

Each pick's score is its margin_k on the class line it was picked from (its position on that line, not a rank), and
`Selection.note` counts the picks per rule.

Multi-label (`StrategyInputs.multi_label`, specs/strategies.md): margin_k = P[:, k] (independent sigmoids, so the
line is ordered by class k's own probability), y_k = column k of the labeled items' 0/1 matrix, and `ask` answers
with an item's (K,) 0/1 label vector; everything else (class cycle, the three rules, taken-not-labeled) is the
same. TAILOR's per-class multi-label galaxy arms are this strategy with `classes=[k]` (learners.tailor).
"""
from __future__ import annotations

from collections import Counter
from typing import Callable

import numpy as np

from learners.strategies.base import Ask, Selection, Strategy, StrategyInputs, multilabel_matrix
from learners.strategies.registry import register

# Sorted lines kept for one call: at most this many int64 positions in all (256 MB); beyond, lines are re-sorted.
CACHE_ELEMENTS = 2**25

CANDIDATE, LABELED, GONE = 1, 2, 0
TIE_BREAK = 1e-8  # the references' weight of max_j P_j in the line score


def line_score(p_k: np.ndarray | float, top: np.ndarray | float | None, multi_label: bool = False) -> np.ndarray:
    """Class k's line score, float64, from P[:, k] (`p_k`) and max_j P[:, j] (`top`) of the same items (arrays or
    scalars): P_k - max_j P_j + 1e-8 max_j P_j, as every reference writes it; multi-label: P_k (`top` unused).
    The one formula of GALAXY's lines, DIRECT's and TAILOR's galaxy arms, and of their picks' scores."""
    p_k = np.asarray(p_k, dtype=np.float64)
    if multi_label:
        return p_k
    top = np.asarray(top, dtype=np.float64)
    return p_k - top + TIE_BREAK * top


class PoolState:
    """Which pool positions are candidates / labeled / gone, and the known labels, updated pick by pick.

    Multi-class: `label[position]` is the class (-1 if unknown). Multi-label: the labeled items' 0/1 rows are kept
    in a matrix (one row per labeled item, not per pool position). `y_k` reads either; `counts[k]` is the number
    of labeled items of class k (multi-label: with class k among their labels)."""

    def __init__(self, inputs: StrategyInputs, num_classes: int) -> None:
        size = len(inputs.probs)
        self.multi_label = bool(inputs.multi_label)
        labeled = np.asarray(inputs.labeled, dtype=np.int64)
        if self.multi_label:
            labels = multilabel_matrix(inputs.labels, num_classes)
            if labeled.ndim != 1 or len(labels) != len(labeled):
                raise ValueError(f"labeled must be 1-D with one row of labels per item, got shapes {labeled.shape} "
                                 f"and {labels.shape}")
        else:
            labels = np.asarray(inputs.labels, dtype=np.int64)
            if labeled.shape != labels.shape or labeled.ndim != 1:
                raise ValueError(f"labeled and labels must be 1-D arrays of one length, got shapes "
                                 f"{labeled.shape} and {labels.shape}")
        if len(labeled) and (labeled.min() < 0 or labeled.max() >= size):
            raise ValueError(f"labeled positions must lie in [0, {size})")
        if not self.multi_label and len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"labels must lie in [0, {num_classes}) (probs has {num_classes} columns), "
                             f"got range [{labels.min()}, {labels.max()}]")
        self.status = np.full(size, GONE, dtype=np.int8)
        self.status[labeled] = LABELED
        if np.any(self.status[inputs.candidates] == LABELED):
            raise ValueError("a candidate position is also in 'labeled'")
        self.status[inputs.candidates] = CANDIDATE
        self.num_classes = num_classes
        if self.multi_label:
            self.row = np.full(size, -1, dtype=np.int64)  # row of `matrix` holding a labeled position's labels
            self.row[labeled] = np.arange(len(labeled))
            self.matrix = np.zeros((max(len(labeled), 16), num_classes), dtype=bool)
            self.matrix[:len(labeled)] = labels.astype(bool)
            self.rows = len(labeled)
            self.counts = labels.sum(axis=0).astype(np.int64)
        else:
            self.label = np.full(size, -1, dtype=np.int64)
            self.label[labeled] = labels
            self.counts = np.bincount(labels, minlength=num_classes)

    def y_k(self, positions: np.ndarray, k: int) -> np.ndarray:
        """y_k (bool) of labeled `positions`: label == k, or class k among the item's labels (multi-label)."""
        if self.multi_label:
            return self.matrix[self.row[positions], k]
        return self.label[positions] == k

    def learn(self, position: int, answer) -> None:
        """Record `ask`'s answer for `position`: a class index, or (multi-label) a (K,) 0/1 label vector."""
        if not self.multi_label:
            label = int(answer)
            if not 0 <= label < self.num_classes:
                raise ValueError(f"ask({position}) answered {label!r}, not a class in [0, {self.num_classes})")
            self.status[position] = LABELED
            self.label[position] = label
            self.counts[label] += 1
            return
        vector = np.asarray(answer)
        if vector.shape != (self.num_classes,) or not np.isin(vector, (0, 1)).all():
            raise ValueError(f"ask({position}) answered {answer!r}, not a ({self.num_classes},) 0/1 label vector "
                             f"(multi-label)")
        if self.rows == len(self.matrix):
            self.matrix = np.concatenate([self.matrix, np.zeros_like(self.matrix)])
        self.matrix[self.rows] = vector.astype(bool)
        self.row[position] = self.rows
        self.rows += 1
        self.status[position] = LABELED
        self.counts += vector.astype(bool)

    def take(self, position: int) -> None:
        self.status[position] = GONE


class ClassLines:
    """The pool (labeled + candidates at the start of the call) ordered by margin_k, largest first, per class
    (multi-label: by P[:, k])."""

    def __init__(self, probs: np.ndarray, on_line: np.ndarray, rng: np.random.Generator,
                 multi_label: bool = False) -> None:
        if probs.ndim != 2 or probs.shape[1] < (1 if multi_label else 2):
            raise ValueError(f"probs must be an (N, C) array with C >= {1 if multi_label else 2}, "
                             f"got shape {probs.shape}")
        self.multi_label = multi_label
        # One row per class: reductions across classes then run over contiguous rows (~10x faster than axis=1
        # on an (N, C) array with few classes).
        self.by_class = np.ascontiguousarray(np.asarray(probs).T)
        self.top = None if multi_label else self.by_class.max(axis=0)[on_line]  # max_j P_j of each item on the line
        self.on_line = on_line
        self.rng = rng
        self.cache: dict[int, np.ndarray] = {}

    def margin(self, k: int) -> np.ndarray:
        """margin_k (`line_score`) of each item on the line, in `on_line` order."""
        return line_score(self.by_class[k][self.on_line], self.top, self.multi_label)

    def line(self, k: int) -> np.ndarray:
        """Pool positions ordered by margin_k, largest first; equal margins in a random order."""
        if k in self.cache:
            return self.cache[k]
        margin = self.margin(k)
        if np.isnan(margin).any():  # a NaN anywhere in a row makes every margin of that row NaN
            bad = self.on_line[np.isnan(margin)]
            raise ValueError(f"probs contain NaN for {len(bad)} item(s), e.g. pool positions {bad[:5].tolist()}")
        shuffle = self.rng.permutation(len(self.on_line))
        order = shuffle[np.argsort(-margin[shuffle], kind="stable")]
        line = self.on_line[order]
        if (len(self.cache) + 1) * len(line) <= CACHE_ELEMENTS:
            self.cache[k] = line
        return line


def margin_of(probs: np.ndarray, position: int, k: int, multi_label: bool = False) -> float:
    row = np.asarray(probs[position])
    return float(line_score(row[k], row.max(), multi_label))


def visible_line(line: np.ndarray, state: PoolState) -> tuple[np.ndarray, np.ndarray]:
    """The line without items gone since the call started, and each remaining item's status."""
    status = state.status[line]
    keep = status != GONE
    return line[keep], status[keep]


def sequential_select(
    name: str,
    inputs: StrategyInputs,
    budget: int,
    ask: Ask | None,
    choose: Callable[[int, PoolState], tuple[int, int, str]],
) -> Selection:
    """Run `choose(t, state) -> (position, class, kind)` for t = 0..budget-1, labeling each pick with `ask` before
    the next (or marking it taken when there is no `ask`). Scores are margin_class of each pick (multi-label:
    P[pick, class]); `ask` answers a class index, or a (K,) 0/1 label vector when `inputs.multi_label`."""
    state = PoolState(inputs, inputs.probs.shape[1])
    positions, scores, kinds = [], [], Counter()
    for t in range(budget):
        position, k, kind = choose(t, state)
        if state.status[position] != CANDIDATE:  # a bug in `choose`, never an input error
            raise RuntimeError(f"{name} picked position {position}, which is not an available candidate")
        positions.append(position)
        scores.append(margin_of(inputs.probs, position, k, state.multi_label))
        kinds[kind] += 1
        if ask is None:
            state.take(position)
        else:
            state.learn(position, ask(int(position)))
    note = f"{name}: " + ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
    return Selection(np.array(positions, dtype=np.int64), np.array(scores), [name] * budget, note)


def random_candidate(status: np.ndarray, rng: np.random.Generator) -> int:
    """Index (into the visible line) of a uniformly random candidate."""
    return int(rng.choice(np.flatnonzero(status == CANDIDATE)))


def galaxy_pick(status: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[int, str]:
    """One GALAXY pick on a visible line: (index into the line, which rule chose it).

    `status` is CANDIDATE or LABELED per line item; `y` holds y_k (0/1) for the labeled items in line order."""
    labeled_at = np.flatnonzero(status == LABELED)
    if len(labeled_at) >= 2:
        differ = y[1:] != y[:-1]                  # consecutive labeled items with different y_k
        gaps = np.diff(labeled_at) - 1            # candidates strictly between them
        runs = np.flatnonzero(differ & (gaps > 0))
        if len(runs):
            shortest = runs[gaps[runs] == gaps[runs].min()]
            i = int(rng.choice(shortest))
            return (labeled_at[i] + labeled_at[i + 1]) // 2, "bisection"
        boundaries = np.flatnonzero(differ)
        if len(boundaries):                       # all adjacent: go to the nearest candidate beside one
            at, dist = nearest_candidates(status, labeled_at[boundaries], labeled_at[boundaries + 1])
            best = np.flatnonzero(dist == dist.min())
            return int(at[rng.choice(best)]), "boundary"
    return random_candidate(status, rng), "random"


def nearest_candidates(status: np.ndarray, left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each i: the nearest candidate c < left[i] (distance left[i] - c) and the nearest candidate c > right[i]
    (distance c - right[i]); a missing side gets distance inf. Returns (line indices, distances), all the
    left-side candidates first, then the right-side ones."""
    candidates_at = np.flatnonzero(status == CANDIDATE)
    before = np.searchsorted(candidates_at, left) - 1
    after = np.searchsorted(candidates_at, right, side="right")
    last = len(candidates_at) - 1
    at = np.concatenate([candidates_at[np.clip(before, 0, last)], candidates_at[np.clip(after, 0, last)]])
    dist = np.concatenate([np.where(before >= 0, left - at[:len(left)], np.inf),
                           np.where(after <= last, at[len(left):] - right, np.inf)])
    return at, dist


def class_cycle(seed: int, num_classes: int) -> np.ndarray:
    """The seeded class order the picks cycle through (stable across calls, so the UI's budget-1 calls continue it)."""
    return np.random.default_rng(seed).permutation(num_classes)


@register
class GalaxyStrategy(Strategy):
    name = "galaxy"
    needs = frozenset({"probs", "labels"})
    sequential = True
    supports_multi_label = True

    def __init__(self, seed: int = 0, device: str = "cpu", classes: list[int] | None = None) -> None:
        """`classes` restricts the cycle to those classes' lines (TAILOR's per-class arms use one class);
        None cycles through every class."""
        self.seed = seed
        self.device = device
        self.classes = classes

    def cycled_classes(self, num_classes: int) -> np.ndarray:
        """The classes the picks cycle through, in the seeded order (all classes when `classes` is None)."""
        classes = np.arange(num_classes) if self.classes is None else np.asarray(self.classes, dtype=np.int64)
        if classes.ndim != 1 or len(classes) == 0 or classes.min() < 0 or classes.max() >= num_classes:
            raise ValueError(f"galaxy classes must be a non-empty list of classes in [0, {num_classes}), "
                             f"got {self.classes}")
        return classes[class_cycle(self.seed, len(classes))]

    def _select(self, inputs: StrategyInputs, budget: int, rng: np.random.Generator, *,
                ask: Ask | None = None, **kwargs) -> Selection:
        on_line = np.concatenate([np.asarray(inputs.labeled, dtype=np.int64), inputs.candidates])
        lines = ClassLines(inputs.probs, on_line, rng, inputs.multi_label)
        order = self.cycled_classes(inputs.probs.shape[1])

        def choose(t: int, state: PoolState) -> tuple[int, int, str]:
            k = int(order[(inputs.step + t) % len(order)])
            line, status = visible_line(lines.line(k), state)
            y = state.y_k(line[status == LABELED], k)
            at, kind = galaxy_pick(status, y, rng)
            return int(line[at]), k, kind

        return sequential_select(self.name, inputs, budget, ask, choose)

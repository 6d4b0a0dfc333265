"""Agreement between annotators, and each annotator's pace, from plain answers (no database, no torch).

An answer is (item, annotator, value[, at, seconds]): `value` is a class index (single-label; a stored label
`[k]` is read as k) or a set of tag indices (multi-label); `at` is when it was given and `seconds` how long the item
was shown before it (the label surface records both). Each annotator has at most one answer per item here: the
last one given for an item replaces their earlier ones.

- Cohen's kappa per pair of annotators, on the items both answered (multi-label: the mean over tags of the
  kappa of present/absent, over the tags where it is defined).
- Krippendorff's alpha (nominal, the `krippendorff` library) over every item answered by two or more people
  (multi-label: over (item, tag) units of present/absent, and per tag).
- The class confusion between annotators: cell (c, k) counts the ordered pairs of two different annotators'
  answers on one item where the first holds c and the second holds k (symmetric).
- Per annotator: labels per hour, time per label, agreement with the others and with an adjudicated label.

A figure that is undefined (no shared item, or everyone always gave the same single value, so chance agreement is
1) is None, never 0 or NaN.
"""
from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime
from itertools import combinations
from typing import Iterable, Mapping

import krippendorff
import numpy as np

CAP_SECONDS = 300.0  # a gap (or a shown time) longer than this counts as this much: breaks are not work


@dataclass(frozen=True)
class Answer:
    item: int
    annotator: str
    value: object
    at: datetime | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class PairKappa:
    first: str
    second: str
    kappa: float | None
    n: int  # items both answered


@dataclass(frozen=True)
class Alpha:
    alpha: float | None
    n_items: int  # items answered by two or more annotators (the pairable units)
    n_values: int  # answers on those items


@dataclass(frozen=True)
class TagAlpha:
    tag: int
    alpha: float | None
    n_items: int
    n_present: int  # answers on those items that mark the tag


@dataclass(frozen=True)
class Confusion:
    matrix: list[list[int]]  # C x C: ordered pairs of different annotators' answers on one item
    n_per_class: list[int]  # ordered pairs whose first answer holds the class (single-label: the row sum)
    n_items: int
    n_pairs: int  # ordered pairs of answers counted


@dataclass(frozen=True)
class AnnotatorStats:
    annotator: str
    labels: int
    labels_per_hour: float | None
    active_seconds: float  # the summed, capped gaps the pace is measured over
    median_seconds: float | None  # time per label: the shown time when recorded, else the capped gap
    mean_seconds: float | None
    timed: int  # labels with a time
    agreement: float | None  # fraction of pairs (their answer, another's on the same item) that are equal
    agreement_n: int  # such pairs
    adjudicated: float | None  # fraction of their answers equal to the adjudicated label
    adjudicated_n: int  # items with both


@dataclass(frozen=True)
class Report:
    multi_label: bool
    num_classes: int
    annotators: list[str]
    overlap_items: int  # items answered by two or more annotators
    pairs: list[PairKappa]
    alpha: Alpha
    tag_alphas: list[TagAlpha]  # multi-label only
    confusion: Confusion
    per_annotator: list[AnnotatorStats]


def normalize(value: object, multi_label: bool) -> int | frozenset[int]:
    """A class index (single-label) or a frozenset of tag indices (multi-label) from a value as stored or given."""
    if multi_label:
        return frozenset(int(tag) for tag in value)
    if isinstance(value, (list, tuple)):
        (value,) = value
    return int(value)


def _answers(rows: Iterable) -> list[Answer]:
    return [row if isinstance(row, Answer) else Answer(*row) for row in rows]


def answer_table(answers: list[Answer], multi_label: bool) -> dict[int, dict[str, int | frozenset[int]]]:
    """item -> annotator -> value; an annotator's last answer on an item wins."""
    table: dict[int, dict[str, int | frozenset[int]]] = defaultdict(dict)
    for answer in answers:
        table[answer.item][answer.annotator] = normalize(answer.value, multi_label)
    return dict(table)


# ----- Cohen's kappa ------------------------------------------------------------------------------------------------
def cohen_kappa(first: list, second: list) -> float | None:
    """Cohen's kappa of two annotators' nominal answers on the same items: (p_o - p_e) / (1 - p_e) with p_e from
    each annotator's own value frequencies; None without items or when p_e is 1."""
    n = len(first)
    if n == 0 or len(second) != n:
        return None
    agreed = sum(a == b for a, b in zip(first, second))
    counts_first, counts_second = Counter(first), Counter(second)
    expected = sum(count * counts_second[value] for value, count in counts_first.items())  # n^2 p_e, exact
    if expected == n * n:
        return None
    return (agreed * n - expected) / (n * n - expected)


def _pair_kappa(first: list, second: list, multi_label: bool, num_classes: int) -> float | None:
    if not multi_label:
        return cohen_kappa(first, second)
    per_tag = [cohen_kappa([tag in a for a in first], [tag in b for b in second]) for tag in range(num_classes)]
    defined = [k for k in per_tag if k is not None]
    return float(np.mean(defined)) if defined else None


def pairwise_kappa(table: Mapping[int, Mapping[str, object]], multi_label: bool, num_classes: int) -> list[PairKappa]:
    """Cohen's kappa of every pair of annotators who answered at least one item in common."""
    annotators = sorted({name for answers in table.values() for name in answers})
    pairs = []
    for first, second in combinations(annotators, 2):
        shared = [answers for answers in table.values() if first in answers and second in answers]
        if shared:
            kappa = _pair_kappa([a[first] for a in shared], [a[second] for a in shared], multi_label, num_classes)
            pairs.append(PairKappa(first, second, kappa, len(shared)))
    return pairs


# ----- Krippendorff's alpha -----------------------------------------------------------------------------------------
def nominal_alpha(units: list[list]) -> float | None:
    """Krippendorff's nominal alpha of units (each the list of values the annotators gave it); units with fewer
    than two values carry no pair and are left out. None without a pairable unit or with a single value in all."""
    units = [unit for unit in units if len(unit) >= 2]
    domain = sorted({value for unit in units for value in unit})
    if len(domain) < 2:
        return None
    index = {value: i for i, value in enumerate(domain)}
    counts = np.zeros((len(units), len(domain)), dtype=np.int64)
    for row, unit in enumerate(units):
        for value in unit:
            counts[row, index[value]] += 1
    return float(krippendorff.alpha(value_counts=counts, value_domain=list(range(len(domain))),
                                    level_of_measurement="nominal"))


def _overlap(table: Mapping[int, Mapping[str, object]]) -> list[list]:
    return [list(answers.values()) for answers in table.values() if len(answers) >= 2]


def overall_alpha(table: Mapping[int, Mapping[str, object]], multi_label: bool, num_classes: int) -> Alpha:
    units = _overlap(table)
    n_values = sum(len(unit) for unit in units)
    if multi_label:
        units = [[tag in value for value in unit] for unit in units for tag in range(num_classes)]
    return Alpha(nominal_alpha(units), len(_overlap(table)), n_values)


def tag_alphas(table: Mapping[int, Mapping[str, object]], num_classes: int) -> list[TagAlpha]:
    """Multi-label: the alpha of each tag as present/absent."""
    units = _overlap(table)
    return [
        TagAlpha(tag, nominal_alpha([[tag in value for value in unit] for unit in units]), len(units),
                 sum(tag in value for unit in units for value in unit))
        for tag in range(num_classes)
    ]


# ----- confusion between annotators ---------------------------------------------------------------------------------
def class_confusion(table: Mapping[int, Mapping[str, object]], multi_label: bool, num_classes: int) -> Confusion:
    """Over items answered by two or more people, every ordered pair (i, j) of different annotators' answers
    adds 1 to cell (c, k) for c in i's answer and k in j's (single-label: one cell per pair)."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    n_per_class = np.zeros(num_classes, dtype=np.int64)
    units = _overlap(table)
    n_pairs = 0
    for unit in units:
        for i, first in enumerate(unit):
            for j, second in enumerate(unit):
                if i == j:
                    continue
                n_pairs += 1
                first_set = first if multi_label else {first}
                second_set = second if multi_label else {second}
                for c in first_set:
                    n_per_class[c] += 1
                    for k in second_set:
                        matrix[c, k] += 1
    return Confusion(matrix.tolist(), n_per_class.tolist(), len(units), n_pairs)


# ----- per annotator ------------------------------------------------------------------------------------------------
def pace(answers: list[Answer], cap_seconds: float = CAP_SECONDS) -> tuple[float | None, float, list[float]]:
    """One annotator's (labels per hour, active seconds, time of each timed label).

    Sorted by time, each answer after the first counts the gap since the previous one, capped at `cap_seconds`
    (a break counts as the cap at most); the first counts its own shown time when recorded. Labels per hour is
    the answers that counted a time over the sum of those times. A label's own time is its shown time when
    recorded (capped), else its capped gap."""
    def capped(seconds: float | None) -> float | None:
        return None if seconds is None else min(max(float(seconds), 0.0), cap_seconds)

    timed = sorted((a for a in answers if a.at is not None), key=lambda a: a.at)
    counted, active = 0, 0.0
    per_label = [capped(a.seconds) for a in answers if a.at is None and a.seconds is not None]
    for i, answer in enumerate(timed):
        gap = capped((answer.at - timed[i - 1].at).total_seconds()) if i > 0 else None
        shown = capped(answer.seconds)
        work = gap if gap is not None else shown
        if work is not None:
            counted += 1
            active += work
        own = shown if shown is not None else gap
        if own is not None:
            per_label.append(own)
    return (counted / (active / 3600.0) if active > 0 else None), active, per_label


def annotator_stats(
    answers: list[Answer], table: Mapping[int, Mapping[str, object]], multi_label: bool,
    final: Mapping[int, object] | None = None, cap_seconds: float = CAP_SECONDS,
) -> list[AnnotatorStats]:
    final = {item: normalize(value, multi_label) for item, value in (final or {}).items()}
    by_annotator: dict[str, list[Answer]] = defaultdict(list)
    for answer in answers:
        by_annotator[answer.annotator].append(answer)
    stats = []
    for name in sorted(by_annotator):
        per_hour, active, times = pace(by_annotator[name], cap_seconds)
        pairs = [answers[name] == other for answers in table.values() if name in answers
                 for who, other in answers.items() if who != name]
        judged = [answers[name] == final[item] for item, answers in table.items() if name in answers and item in final]
        stats.append(AnnotatorStats(
            annotator=name,
            labels=sum(name in answers for answers in table.values()),
            labels_per_hour=per_hour,
            active_seconds=active,
            median_seconds=statistics.median(times) if times else None,
            mean_seconds=statistics.fmean(times) if times else None,
            timed=len(times),
            agreement=sum(pairs) / len(pairs) if pairs else None,
            agreement_n=len(pairs),
            adjudicated=sum(judged) / len(judged) if judged else None,
            adjudicated_n=len(judged),
        ))
    return stats


def agreement(
    rows: Iterable, num_classes: int, multi_label: bool, final: Mapping[int, object] | None = None,
    cap_seconds: float = CAP_SECONDS,
) -> Report:
    """Every figure of this module from one list of answers (Answer or plain tuples in its field order);
    `final`: item -> adjudicated value, where one exists."""
    answers = _answers(rows)
    table = answer_table(answers, multi_label)
    return Report(
        multi_label=multi_label,
        num_classes=num_classes,
        annotators=sorted({a.annotator for a in answers}),
        overlap_items=len(_overlap(table)),
        pairs=pairwise_kappa(table, multi_label, num_classes),
        alpha=overall_alpha(table, multi_label, num_classes),
        tag_alphas=tag_alphas(table, num_classes) if multi_label else [],
        confusion=class_confusion(table, multi_label, num_classes),
        per_annotator=annotator_stats(answers, table, multi_label, final, cap_seconds),
    )

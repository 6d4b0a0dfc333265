"""The select job: fill a round's queue with the strategy's picks, from what the strategy reads (the latest head's
predictions, features, labels so far; never gold labels)."""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from sqlalchemy.engine import Row

from app import rounds, strategy_state
from app.jobs.context import JobContext, align
from app.jobs.features import ensure_features, missing_items
from app.jobs.heads import load_head
from learners.embedding import standardize
from learners.strategies import Selection, Strategy, StrategyInputs, get_strategy
from storage import queue
from storage.files import latest_artifact, latest_artifacts, load_matrix, project_dir, save_matrix
from storage.items import item_rows
from storage.labels import current_labels, label_array
from storage.models import Job, Project, Round, utcnow
from storage.rounds import add_entries, open_items, round_picks
from storage.source_heads import backbone_key

Entry = tuple[int, str, float | None]  # (item id, arm, score)


@dataclass
class _RoundView:
    """What a selection starts from, read in one transaction."""

    round_: Round
    project: Project
    items: list[Row]
    labels: dict
    queued: set[int]
    picked: int  # pool items picked in the round so far
    open_now: int  # of which still open
    strategy: Strategy

    @property
    def follow_up(self) -> bool:
        """A sequential round's next picks, asked for after a label."""
        return self.round_.state == "labeling" and self.strategy.sequential and not self.fill

    @property
    def fill(self) -> bool:
        """A round opened ahead (app.rounds.open_ahead), to be filled with the new head's picks."""
        return self.round_.state == "labeling" and self.round_.awaiting_selection


def select_round(job: Job, ctx: JobContext) -> str:
    """Fill a round's queue. Batch strategies pick the whole round at once, and rank `pick_ahead` more items that
    the next round starts with (app.rounds); sequential ones (GALAXY, DIRECT) keep `SEQUENTIAL_LOOKAHEAD` picks
    ahead of the annotators, one more after each label, from all labels so far. A round opened ahead (while the
    round before trained) is filled up to its size here, queued by that training's job once its head is stored.

    Idempotent: a rerun after the picks were stored finds the round labeling and no longer awaiting its selection
    (a batch round: nothing to do) or its lookahead full (a sequential round: a budget of 0), and the write
    refuses a round that changed meanwhile."""
    view = _read(ctx, job)
    if view.round_.state != "selecting" and not view.follow_up and not view.fill:
        return f"round {view.round_.index} is {view.round_.state}; nothing to select"
    budget = _budget(view)
    ahead = rounds.pick_ahead(view.project, view.strategy.sequential)
    entries = [] if view.follow_up else _eval_entries(view)
    inputs = _strategy_inputs(ctx, view)
    ctx.progress(0.5, f"{view.round_.strategy}: choosing {budget} of {len(inputs.candidates)}"
                      + (f" and ranking {ahead} ahead for the next round" if ahead else ""))
    rng = np.random.default_rng([view.project.seed, view.round_.index, view.picked])
    selection = view.strategy.select(inputs, budget + ahead, rng)
    ids = inputs.item_ids
    ranked = [(int(ids[p]), arm, float(sc)) for p, sc, arm in zip(selection.positions, selection.scores, selection.arms)]
    entries += ranked[:budget]
    if not _store(ctx, job, view, entries, selection, ranked[budget:]):
        return f"round {view.round_.index} changed while selecting (another worker); nothing added"
    return (f"round {view.round_.index}: {len(entries)} items queued ({selection.note or view.round_.strategy})"
            + (f", {len(ranked[budget:])} ranked ahead for the next round" if ranked[budget:] else ""))


def _read(ctx: JobContext, job: Job) -> _RoundView:
    missing = missing_items(ctx, job.project_id)  # files gone since the import: never selected (app.jobs.features)
    with ctx.db.read() as s:
        round_ = s.get(Round, job.round_id)
        project = s.get(Project, job.project_id)
        picked, open_now = round_picks(s, round_.id)
        strategy = get_strategy(round_.strategy, **(round_.strategy_params or {}))
        strategy_state.load_into(s, project.id, strategy)
        items = [it for it in item_rows(s, project.id) if it.id not in missing]
        return _RoundView(round_, project, items, current_labels(s, project.id),
                          queue.queued_item_ids(s, project.id), picked, open_now, strategy)


def _open(item_id: int, view: _RoundView) -> bool:
    """Neither labeled nor waiting in a queue."""
    return item_id not in view.labels and item_id not in view.queued


def _budget(view: _RoundView) -> int:
    if view.strategy.sequential and not view.fill:
        return max(0, min(rounds.SEQUENTIAL_LOOKAHEAD - view.open_now, view.project.round_size - view.picked))
    return max(0, view.project.round_size - view.picked)  # a round opened ahead: less what was picked ahead


def _eval_entries(view: _RoundView) -> list[Entry]:
    """A round queues first the evaluation items not labeled or queued yet: in round 0 the whole set, later those
    an early close dropped (the set is carried over until labeled, never lost). In a random order seeded by the
    project and the round: never by path, which would group them by class folder and give the answers away."""
    open_eval = [it.id for it in view.items if it.split == "eval" and _open(it.id, view)]
    return [(item_id, "eval", None) for item_id in rounds.eval_order(view.project, view.round_.index, open_eval)]


def _store(ctx: JobContext, job: Job, view: _RoundView, entries: list[Entry], selection: Selection,
           ranked_ahead: list[Entry]) -> bool:
    """Queue the picks, keep the ranking beyond them for the next round and save the strategy's state; False
    (nothing written) when the round changed meanwhile."""
    with ctx.db.write() as s:
        round_ = s.get(Round, job.round_id)
        if view.fill:
            if round_.state != "labeling" or not round_.awaiting_selection:
                return False
            entries = _still_open(s, view, round_, entries)
        elif round_picks(s, round_.id)[0] != view.picked or round_.state not in ("selecting", "labeling"):
            return False
        else:  # a person may have hand-picked one of them meanwhile (the Grid page): never queued twice
            ids = [e[0] for e in entries]
            still = set(open_items(s, view.project.id, None, ids))
            entries = [e for e in entries if e[0] in still]
        add_entries(s, round_.id, entries)
        round_.ranked_ahead = [list(entry) for entry in ranked_ahead] or None
        strategy_state.save_from(s, view.project.id, view.strategy)
        if view.fill:
            rounds.selection_filled(s, round_, _fill_note(view, entries, selection))
        elif not view.follow_up:
            if entries:
                rounds.start_labeling(round_, selection.note)
            else:
                rounds.end_without_picks(round_, selection.note)
        elif not entries and view.open_now == 0:  # the pool ran out before the round was full
            rounds.send_to_training(s, round_)
    return True


def _still_open(s, view: _RoundView, round_: Round, entries: list[Entry]) -> list[Entry]:
    """A round opened ahead is labeled while its selection runs: of the entries, those still open at the write
    (a skipped evaluation item's replacement may have taken one since the read; never queued twice), pool picks no
    more than the round has room for (a skipped evaluation item returns to the pool and counts as a pick)."""
    ids = [e[0] for e in entries]
    evals = set(open_items(s, view.project.id, "eval", ids))
    pool = set(open_items(s, view.project.id, "pool", ids))
    room = max(0, view.project.round_size - round_picks(s, round_.id)[0])
    kept = []
    for entry in entries:
        if entry[0] in evals:
            kept.append(entry)
        elif entry[0] in pool and room > 0:
            kept.append(entry)
            room -= 1
    return kept


def _fill_note(view: _RoundView, entries: list[Entry], selection: Selection) -> str:
    picks = sum(1 for e in entries if e[1] != "eval")
    return f"{picks} more picked with the new head" + (f" ({selection.note})" if selection.note else "")


def _strategy_inputs(ctx: JobContext, view: _RoundView) -> StrategyInputs:
    """What a strategy reads: the pool items only (ordered by id; position i is item `item_ids[i]`), never an
    evaluation item, not even in the feature standardisation, and never a gold label."""
    project, labels = view.project, view.labels
    pool = [it for it in view.items if it.split == "pool"]
    ids = np.array([it.id for it in pool], dtype=np.int64)
    needs = view.strategy.needs | view.strategy.uses
    is_labeled = np.isin(ids, np.fromiter(labels, dtype=np.int64, count=len(labels)))
    is_queued = np.isin(ids, np.fromiter(view.queued, dtype=np.int64, count=len(view.queued)))
    labeled = np.flatnonzero(is_labeled).astype(np.int64)
    inputs = StrategyInputs(candidates=np.flatnonzero(~is_labeled & ~is_queued).astype(np.int64),  # _open
                            labeled=labeled, step=view.picked, multi_label=project.task == "multi_label", item_ids=ids)
    inputs.labels = label_array([labels[pool[i].id].value for i in labeled], len(project.classes), inputs.multi_label)
    if not len(pool):
        return inputs
    inputs.probs, inputs.previous_probs = _predictions(ctx, project, ids, previous="previous_probs" in needs)
    if needs & {"features", "penultimate"}:
        x = _pool_features(ctx, project, ids)
        inputs.features = x
        head = load_head(ctx.db, project.id) if "penultimate" in needs else None
        inputs.penultimate = head.penultimate(x) if head is not None and head.in_dim == x.shape[1] else x
    return inputs


# The pool's standardized features as the last selection read them, keyed by what decides them (the features file
# and its checksum, the pool's item ids): a sequential strategy selects after every label, and every round and
# simulated run of a project reads the same ones. One entry; each selection gets its own copy.
_POOL_FEATURES: dict[tuple, np.ndarray] = {}
_POOL_FEATURES_LOCK = threading.Lock()


def _pool_features(ctx: JobContext, project: Project, ids: np.ndarray) -> np.ndarray:
    """The features of the pool items `ids`, standardized with the statistics of those rows."""
    def features_file() -> tuple[str, str] | None:
        with ctx.db.read() as s:
            artifact = latest_artifact(s, project.id, "features", backbone=backbone_key(project.backbone))
        return None if artifact is None else (artifact.path, artifact.sha256)

    key = (features_file(), ids.tobytes())
    with _POOL_FEATURES_LOCK:
        x = _POOL_FEATURES.get(key)
    if x is None:
        features, feature_ids = ensure_features(ctx, project.id)
        x = standardize(align(features, feature_ids, ids))[0]
        key = (features_file(), key[1])  # ensure_features may have written the file it returned
        with _POOL_FEATURES_LOCK:
            _POOL_FEATURES.clear()
            _POOL_FEATURES[key] = x
    return x.copy()


def _predictions(ctx: JobContext, project: Project, ids: np.ndarray,
                 previous: bool) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(P, P_prev) for the pool items `ids`: the latest head's probabilities and those of the predictions saved
    before them (the previous round's, for strategies that use `previous_probs`), both looked up by item id; an item
    P_prev does not know gets a NaN row.
    A project started from a source head has no predictions before its first training: the source head's are
    computed here and saved, so they also serve as the next round's P_prev."""
    with ctx.db.read() as s:
        artifacts = latest_artifacts(s, project.id, "predictions", limit=2)
    if not artifacts:
        source = _source_predictions(ctx, project, ids)
        return (None, None) if source is None else (source, None)
    current = align(*load_matrix(artifacts[0]), ids)
    if not previous or len(artifacts) < 2:
        return current, None
    return current, align(*load_matrix(artifacts[1]), ids, missing_ok=True)


def _source_predictions(ctx: JobContext, project: Project, ids: np.ndarray) -> np.ndarray | None:
    head = load_head(ctx.db, project.id)
    if head is None:
        return None
    features, feature_ids = ensure_features(ctx, project.id)
    # The project's own pool statistics, as every head of the project sees them (a source head trained on
    # another pool thus reads target features normalised to the target: a cheap form of adaptation). Every item is
    # predicted (the evaluation set too, for its metrics); only the pool's rows set the statistics.
    x = standardize(features, fit_rows=np.flatnonzero(np.isin(feature_ids, ids)))[0]
    if head.in_dim != x.shape[1]:
        raise ValueError(f"the source head reads {head.in_dim} features, this project's backbone gives {x.shape[1]}")
    probs = head.predict_proba(x)
    with ctx.db.write() as s:
        save_matrix(s, project_dir(ctx.home, project.id) / "models" / f"predictions-source-{utcnow():%Y%m%d%H%M%S%f}.npy",
                    project_id=project.id, kind="predictions", matrix=probs, item_ids=feature_ids, meta={"source": True})
    return align(probs, feature_ids, ids)

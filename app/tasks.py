"""What the model worker does for each job kind: embed, select, train. Runs only inside the worker process."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from sqlalchemy import func, select

from app import strategy_state
from app.rounds import SEQUENTIAL_LOOKAHEAD, open_round, round_picks, send_to_training
from learners.backbones import BackboneSpec, load_backbone
from learners.embedding import embed_images, standardize
from learners.heads import HeadConfig, TrainedHead
from learners.ssl import REQUIRED_VIEWS, SSLConfig, train_head_ssl
from learners.views import VIEW_NAMES, embed_views, standardize_views
from learners.metrics import (
    classification_metrics,
    labels_per_class,
    multilabel_labels_per_class,
    multilabel_metrics,
)
from learners.strategies import StrategyInputs, get_strategy
from storage.db import Database
from storage.files import latest_artifact, load_matrix, load_tensors, project_dir, save_json, save_matrix, save_tensors
from storage.labels import current_labels, label_array
from storage.source_heads import backbone_key
from storage.models import Artifact, Item, Job, Project, QueueEntry, Round, utcnow

Progress = Callable[[float, str], None]


@dataclass
class TaskContext:
    db: Database
    home: Path
    device: str
    progress: Progress


def run_job(job: Job, ctx: TaskContext) -> str:
    handler = {"embed": embed, "select": select_round, "train": train, "simulate": simulate}.get(job.kind)
    if handler is None:
        raise ValueError(f"job {job.id}: unknown kind {job.kind!r}")
    return handler(job, ctx)


def _item_rows(s, project_id: int) -> list:
    """(id, key, split) of every item, ordered by id: light rows, and never the gold labels."""
    return list(s.execute(select(Item.id, Item.key, Item.split).where(Item.project_id == project_id).order_by(Item.id)))


def _pool_items(db: Database, project_id: int) -> tuple[Project, list]:
    with db.read() as s:
        project = s.get(Project, project_id)
        items = _item_rows(s, project_id)
    return project, items


def embed(job: Job, ctx: TaskContext) -> str:
    features, _ = ensure_features(ctx, job.project_id)
    message = f"{features.shape[0]} items embedded, {features.shape[1]} features each"
    with ctx.db.read() as s:
        training = s.get(Project, job.project_id).training or {}
    if REQUIRED_VIEWS.get(SSLConfig.from_dict(training.get("ssl", "none")).method):
        views = ensure_views(ctx, job.project_id)
        message += f"; augmented views {', '.join(f'{k} x{len(v)}' for k, v in views.items())}"
    return message


def ensure_views(ctx: TaskContext, project_id: int) -> dict[str, np.ndarray]:
    """The project's augmented views {name: raw features (K, N, d)}, computed once (training.md: K copies each)."""
    project, items = _pool_items(ctx.db, project_id)
    copies = int((project.training or {}).get("view_copies", 2))
    flip = bool((project.training or {}).get("view_flip", True))  # off for digits, text, handwriting
    key = f"{backbone_key(project.backbone)}|copies={copies}|flip={flip}|seed={project.seed}"
    ids = np.array([item.id for item in items], dtype=np.int64)
    views: dict[str, np.ndarray] = {}
    for name in VIEW_NAMES:
        with ctx.db.read() as s:
            artifact = latest_artifact(s, project_id, "views", view=name, key=key)
        if artifact is not None:
            matrix, cached_ids = load_matrix(artifact)
            if np.array_equal(cached_ids, ids):
                views[name] = matrix.transpose(1, 0, 2)  # stored item-major: (N, K, d)
    missing = [name for name in VIEW_NAMES if name not in views]
    if not missing:
        return views
    backbone = load_backbone(BackboneSpec.from_dict(project.backbone), device=ctx.device)
    computed = embed_views(
        [Path(project.data_root) / item.key for item in items], backbone, views=missing, copies=copies,
        seed=project.seed, flip=flip, device=ctx.device, num_workers=2 if len(items) > 2000 else 0,
        progress=lambda f, m: ctx.progress(f, f"augmented views: {m}"),
    )
    folder = project_dir(ctx.home, project_id) / "features"
    with ctx.db.write() as s:
        for name, array in computed.items():
            save_matrix(
                s, folder / f"{name}-{utcnow():%Y%m%d%H%M%S%f}.npy", project_id=project_id, kind="views",
                matrix=np.ascontiguousarray(array.transpose(1, 0, 2)), item_ids=ids, meta={"view": name, "key": key},
            )
    return {**views, **computed}


def ensure_features(ctx: TaskContext, project_id: int) -> tuple[np.ndarray, np.ndarray]:
    """The project's plain-view features (raw, one row per item id), computing and caching them if needed."""
    project, items = _pool_items(ctx.db, project_id)
    key = backbone_key(project.backbone)
    ids = np.array([item.id for item in items], dtype=np.int64)
    with ctx.db.read() as s:
        artifact = latest_artifact(s, project_id, "features", backbone=key)
    if artifact is not None:
        features, cached_ids = load_matrix(artifact)
        if np.array_equal(cached_ids, ids):
            ctx.progress(1.0, "features cached")
            return features, ids
    ctx.progress(0.0, f"loading backbone {project.backbone.get('name')}")
    backbone = load_backbone(BackboneSpec.from_dict(project.backbone), device=ctx.device)
    root = Path(project.data_root)
    features = embed_images(
        [root / item.key for item in items],
        backbone,
        device=ctx.device,
        num_workers=2 if len(items) > 2000 else 0,
        progress=lambda f, m: ctx.progress(0.99 * f, m),
    )
    folder = project_dir(ctx.home, project_id) / "features"
    path = folder / f"plain-{utcnow():%Y%m%d%H%M%S%f}.npy"
    with ctx.db.write() as s:
        save_matrix(s, path, project_id=project_id, kind="features", matrix=features, item_ids=ids, meta={"backbone": key, "view": "plain"})
    ctx.progress(1.0, "features saved")
    return features, ids


def select_round(job: Job, ctx: TaskContext) -> str:
    """Fill a round's queue. Batch strategies pick the whole round at once; sequential ones (GALAXY, DIRECT) keep
    `SEQUENTIAL_LOOKAHEAD` picks ahead of the annotators, one more after each label, from all labels so far."""
    with ctx.db.read() as s:
        round_ = s.get(Round, job.round_id)
        project = s.get(Project, job.project_id)
        items = _item_rows(s, project.id)
        labels = current_labels(s, project.id)
        queued = set(
            s.scalars(
                select(QueueEntry.item_id)
                .join(Round, Round.id == QueueEntry.round_id)
                .where(Round.project_id == project.id, QueueEntry.state.in_(("pending", "claimed", "skipped")))
            )
        )
        picked, open_now = round_picks(s, round_.id)
        strategy = get_strategy(round_.strategy, **(round_.strategy_params or {}))
        strategy_state.load_into(s, project.id, strategy)
    follow_up = round_.state == "labeling" and strategy.sequential
    if round_.state != "selecting" and not follow_up:
        return f"round {round_.index} is {round_.state}; nothing to select"
    if strategy.sequential:
        budget = max(0, min(SEQUENTIAL_LOOKAHEAD - open_now, project.round_size - picked))
    else:
        budget = project.round_size
    ids = np.array([it.id for it in items], dtype=np.int64)
    entries: list[tuple[int, str, float | None]] = []
    if round_.index == 0 and not follow_up:
        entries += [(it.id, "eval", None) for it in items if it.split == "eval" and it.id not in labels and it.id not in queued]
    candidates = np.flatnonzero([it.split == "pool" and it.id not in labels and it.id not in queued for it in items])
    inputs = _strategy_inputs(ctx, project, items, ids, labels, candidates, strategy.needs | strategy.uses)
    inputs.step = picked
    ctx.progress(0.5, f"{round_.strategy}: choosing {budget} of {len(candidates)}")
    rng = np.random.default_rng([project.seed, round_.index, picked])
    selection = strategy.select(inputs, budget, rng)
    entries += [(int(ids[p]), arm, float(sc)) for p, sc, arm in zip(selection.positions, selection.scores, selection.arms)]
    with ctx.db.write() as s:
        round_ = s.get(Round, job.round_id)
        if round_picks(s, round_.id)[0] != picked or round_.state not in ("selecting", "labeling"):
            return f"round {round_.index} changed while selecting (another worker); nothing added"
        start = s.scalar(select(func.coalesce(func.max(QueueEntry.position) + 1, 0)).where(QueueEntry.round_id == round_.id))
        for position, (item_id, arm, score) in enumerate(entries, start=start):
            s.add(QueueEntry(round_id=round_.id, item_id=item_id, position=position, arm=arm, score=score))
        strategy_state.save_from(s, project.id, strategy)
        if not follow_up:
            round_.note = selection.note
            round_.labeling_at = utcnow()
            round_.state = "labeling" if entries else "done"
        elif not entries and open_now == 0:  # the pool ran out before the round was full
            send_to_training(s, round_)
    return f"round {round_.index}: {len(entries)} items queued ({selection.note or round_.strategy})"


def _strategy_inputs(ctx, project: Project, items: list, ids: np.ndarray, labels: dict, candidates: np.ndarray, needs) -> StrategyInputs:
    """What a strategy reads, all indexed by pool position (items ordered by id); gold labels are never included."""
    inputs = StrategyInputs(candidates=candidates)
    inputs.probs, inputs.previous_probs = _predictions(ctx, project, ids, previous="previous_probs" in needs)
    labeled = np.array([i for i, it in enumerate(items) if it.split == "pool" and it.id in labels], dtype=np.int64)
    inputs.labeled = labeled
    inputs.multi_label = project.task == "multi_label"
    inputs.labels = label_array([labels[items[i].id].value for i in labeled], len(project.classes), inputs.multi_label)
    if needs & {"features", "penultimate"}:
        features, feature_ids = ensure_features(ctx, project.id)
        x = _align(standardize(features)[0], feature_ids, ids)
        inputs.features = x
        head = load_head(ctx.db, project.id) if "penultimate" in needs else None
        inputs.penultimate = head.penultimate(x) if head is not None and head.in_dim == x.shape[1] else x
    return inputs


def _predictions(ctx: TaskContext, project: Project, ids: np.ndarray, previous: bool) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(P, P_prev) by pool position: the latest head's probabilities and those of the predictions saved before
    them (LFTL's previous round), both looked up by item id; an item P_prev does not know gets a NaN row.
    A project started from a source head has no predictions before its first training: the source head's are
    computed here and saved, so they also serve as the next round's P_prev."""
    with ctx.db.read() as s:
        artifacts = list(s.scalars(
            select(Artifact).where(Artifact.project_id == project.id, Artifact.kind == "predictions")
            .order_by(Artifact.id.desc()).limit(2)))
    if not artifacts:
        source = _source_predictions(ctx, project, ids)
        return (None, None) if source is None else (source, None)
    current = _align(*load_matrix(artifacts[0]), ids)
    if not previous or len(artifacts) < 2:
        return current, None
    return current, _align(*load_matrix(artifacts[1]), ids, missing_ok=True)


def _source_predictions(ctx: TaskContext, project: Project, ids: np.ndarray) -> np.ndarray | None:
    head = load_head(ctx.db, project.id)
    if head is None:
        return None
    features, feature_ids = ensure_features(ctx, project.id)
    # The project's own feature statistics, as every head of the project sees them (a source head trained on
    # another pool thus reads target features normalised to the target: a cheap form of adaptation).
    x = standardize(features)[0]
    if head.in_dim != x.shape[1]:
        raise ValueError(f"the source head reads {head.in_dim} features, this project's backbone gives {x.shape[1]}")
    probs = head.predict_proba(x)
    with ctx.db.write() as s:
        save_matrix(s, project_dir(ctx.home, project.id) / "models" / f"predictions-source-{utcnow():%Y%m%d%H%M%S%f}.npy",
                    project_id=project.id, kind="predictions", matrix=probs, item_ids=feature_ids, meta={"source": True})
    return _align(probs, feature_ids, ids)


def _align(matrix: np.ndarray, matrix_ids: np.ndarray, ids: np.ndarray, missing_ok: bool = False) -> np.ndarray:
    """Rows of `matrix` reordered to follow `ids` (rows follow items by id, never by position). With
    `missing_ok`, items without a row get NaN; otherwise they are an error."""
    row_of = {int(i): r for r, i in enumerate(matrix_ids)}
    rows = np.array([row_of.get(int(i), -1) for i in ids], dtype=np.int64)
    if not missing_ok and (rows < 0).any():
        missing = ids[rows < 0]
        raise ValueError(f"{len(missing)} items have no row (e.g. item {missing[0]}); the file is out of date")
    out = matrix[np.maximum(rows, 0)].astype(np.float32)
    out[rows < 0] = np.nan
    return out


def train(job: Job, ctx: TaskContext) -> str:
    if _round_already_trained(ctx.db, job.round_id):
        return "the round was already trained (by an earlier attempt of this job); nothing to do"
    features, ids = ensure_features(ctx, job.project_id)
    ctx.progress(0.05, "features ready")
    with ctx.db.read() as s:
        project = s.get(Project, job.project_id)
        items = _item_rows(s, project.id)
        labels = current_labels(s, project.id)
    split = {it.id: it.split for it in items}
    x, mean, std = standardize(features)
    row_of = {int(i): r for r, i in enumerate(ids)}
    pool_ids = [i for i in labels if split.get(i) == "pool"]
    eval_ids = [i for i in labels if split.get(i) == "eval"]
    num_classes = len(project.classes)
    multi_label = project.task == "multi_label"
    y_pool = label_array([labels[i].value for i in pool_ids], num_classes, multi_label)
    per_class = multilabel_labels_per_class(y_pool, num_classes) if multi_label else labels_per_class(y_pool, num_classes)
    metrics: dict = {"labels": len(pool_ids), "labels_per_class": per_class}
    if not pool_ids:
        note = "no pool labels yet: nothing to train"
        head = None
    else:
        config = HeadConfig.from_dict({**project.head, "seed": project.seed})
        ssl = SSLConfig.from_dict((project.training or {}).get("ssl", "none"))
        views = None
        if REQUIRED_VIEWS.get(ssl.method):
            views = standardize_views(ensure_views(ctx, project.id), mean, std)
        eval_rows = np.array([row_of[it.id] for it in items if it.split == "eval"], dtype=np.int64)
        init, warm_note = _warm_start(ctx, project, config, ssl, x.shape[1], num_classes)
        head = train_head_ssl(
            x, np.array([row_of[i] for i in pool_ids], dtype=np.int64), y_pool, num_classes, config, ssl, views,
            eval_excluded=eval_rows, init=init, device=ctx.device, multi_label=multi_label,
            progress=lambda f, m: ctx.progress(0.05 + 0.8 * f, m),
        )
        ctx.progress(0.9, "evaluating")
        probs = head.predict_proba(x)
        if eval_ids:
            y_eval = label_array([labels[i].value for i in eval_ids], num_classes, multi_label)
            eval_probs = probs[[row_of[i] for i in eval_ids]]
            if multi_label:  # labels_per_class stays the pool's, as for single-label projects
                scores = multilabel_metrics(y_eval, eval_probs)
                metrics.update({k: v for k, v in scores.items() if k != "labels_per_class"})
            else:
                metrics.update(classification_metrics(y_eval, eval_probs.argmax(1), num_classes))
        note = (f"trained {head.kind} head ({ssl.method}{warm_note}) on {len(pool_ids)} labels, "
                f"evaluated on {len(eval_ids)}")
    with ctx.db.write() as s:
        round_id = job.round_id
        if round_id is not None and s.get(Round, round_id).state != "training":
            return "the round was trained meanwhile by another attempt of this job; this result is not saved"
        if head is not None:
            folder = project_dir(ctx.home, project.id) / "models"
            stamp = f"{utcnow():%Y%m%d%H%M%S%f}"
            save_tensors(
                s, folder / f"head-{stamp}.safetensors", project_id=project.id, kind="head", round_id=round_id,
                arrays={**head.state_arrays(), "feature_mean": mean, "feature_std": std},
                metadata={**head.metadata(), "backbone": backbone_key(project.backbone)},
            )
            save_matrix(
                s, folder / f"predictions-{stamp}.npy", project_id=project.id, kind="predictions",
                matrix=probs.astype(np.float32), item_ids=ids, round_id=round_id,
            )
        if round_id is not None:
            round_ = s.get(Round, round_id)
            if round_.state == "training":
                round_.metrics = metrics
                round_.note = (round_.note + "; " if round_.note else "") + note
                round_.state = "done"
                round_.done_at = utcnow()
                strategy_state.fold_round(s, s.get(Project, project.id), round_)
                if project.auto_next_round:
                    open_round(s, s.get(Project, project.id))
    return note


def _round_already_trained(db: Database, round_id: int | None) -> bool:
    """A round's train job rerun after its first attempt committed (the worker died before marking the job
    done) must not train and save a second head: the round is no longer 'training'."""
    if round_id is None:
        return False
    with db.read() as s:
        return s.get(Round, round_id).state != "training"


def _warm_start(ctx: TaskContext, project: Project, config: HeadConfig, ssl: SSLConfig, in_dim: int,
                num_classes: int) -> tuple[TrainedHead | None, str]:
    """The head to start training from, and a note: the project's latest head (a source head at first) when
    the project warm-starts (`training.warm_start`; on by default for lftl_vpa, as LFTL adapts one model round
    after round) and that head has the kind and sizes about to be trained; else None (a fresh seeded head)."""
    training = project.training or {}
    if not training.get("warm_start", ssl.method == "lftl_vpa"):
        return None, ""
    head = load_head(ctx.db, project.id)
    kind = "bottleneck" if ssl.method == "lftl_vpa" else config.kind
    if head is None:
        return None, ", fresh start: no earlier head"
    if (head.kind, head.in_dim, head.num_classes, head.multi_label) != (kind, in_dim, num_classes,
                                                                        project.task == "multi_label"):
        return None, (f", fresh start: the latest head is {head.kind} {head.in_dim}->{head.num_classes}, "
                      f"training needs {kind} {in_dim}->{num_classes}")
    return head, ", warm start"


def simulate(job: Job, ctx: TaskContext) -> str:
    from app.settings import Settings
    from app.simulation import SimulationConfig, run_simulation

    ensure_features(ctx, job.project_id)
    config = SimulationConfig.from_dict(job.params)
    settings = Settings(home=ctx.home, db_url=ctx.db.url)
    result = run_simulation(settings, job.project_id, config, device=ctx.device, progress=ctx.progress)
    path = project_dir(ctx.home, job.project_id) / "simulations" / f"simulation-{job.id}.json"
    with ctx.db.write() as s:
        save_json(s, path, project_id=job.project_id, kind="simulation", data=result, meta={"job_id": job.id})
    return f"{len(config.strategies)} strategies x {len(config.seeds)} seeds, {len(result['points'])} points"


def load_head(db: Database, project_id: int) -> TrainedHead | None:
    with db.read() as s:
        artifact = latest_artifact(s, project_id, "head")
    if artifact is None:
        return None
    arrays, meta = load_tensors(artifact)
    arrays = {k: v for k, v in arrays.items() if not k.startswith("feature_")}
    return TrainedHead.from_state(arrays, meta)


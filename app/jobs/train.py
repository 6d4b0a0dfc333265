"""The train job: a head on the cached features from the labels so far (semi-supervised by the project's method),
evaluated on the evaluation set; a round's train job then closes the round (app.rounds) and queues the next round's
selection with the new head (it fills the round opened ahead, or opens the next)."""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from app import rounds, strategy_state
from app.jobs.context import JobContext
from app.jobs.features import ensure_features, ensure_views
from app.jobs.heads import load_head
from learners.catalog import TRAINING_METHODS, SSLConfig
from learners.embedding import standardize
from learners.heads import HeadConfig, TrainedHead
from learners.metrics import (
    classification_intervals,
    classification_metrics,
    labels_per_class,
    multilabel_intervals,
    multilabel_labels_per_class,
    multilabel_metrics,
)
from learners.ssl import train_head_ssl
from learners.views import standardize_views
from storage.files import latest_artifact, project_dir, save_matrix, save_tensors
from storage.items import item_rows
from storage.labels import current_labels, label_array
from storage.models import Job, Project, Round, utcnow
from storage.source_heads import backbone_key


@dataclass
class _TrainingData:
    """The project's features standardized, and its labels split into pool (training) and eval."""

    project: Project
    ids: np.ndarray  # item id of each feature row
    x: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    row_of: dict[int, int]
    labels: dict
    pool_ids: list[int]
    eval_ids: list[int]
    eval_rows: np.ndarray  # every eval item's row, labeled or not: never trained on

    @property
    def num_classes(self) -> int:
        return len(self.project.classes)

    @property
    def multi_label(self) -> bool:
        return self.project.task == "multi_label"

    def label_matrix(self, item_ids: list[int]) -> np.ndarray:
        return label_array([self.labels[i].value for i in item_ids], self.num_classes, self.multi_label)


def train(job: Job, ctx: JobContext) -> str:
    """Idempotent: a rerun after the first attempt committed (the worker died before marking the job done) finds
    the round no longer training, or the predictions this job saved, and trains nothing."""
    if _already_trained(ctx, job):
        return "the round was already trained (by an earlier attempt of this job); nothing to do"
    data = _training_data(ctx, job.project_id)
    y_pool = data.label_matrix(data.pool_ids)
    per_class = (multilabel_labels_per_class if data.multi_label else labels_per_class)(y_pool, data.num_classes)
    metrics: dict = {"labels": len(data.pool_ids), "labels_per_class": per_class}
    if not data.pool_ids:
        note, head, probs = "no pool labels yet: nothing to train", None, None
    else:
        ssl = SSLConfig.from_dict((data.project.training or {}).get("ssl", "none"))
        head, warm_note = _fit(ctx, data, y_pool, ssl)
        ctx.progress(0.9, "evaluating")
        probs = head.predict_proba(data.x)
        metrics.update(_evaluate(data, probs))
        note = (f"trained {head.kind} head ({ssl.method}{warm_note}) on {len(data.pool_ids)} labels, "
                f"evaluated on {len(data.eval_ids)}")
    if not _save(ctx, job, data, head, probs, metrics, note):
        return "the round was trained meanwhile by another attempt of this job; this result is not saved"
    return note


def _already_trained(ctx: JobContext, job: Job) -> bool:
    """A round's job: its round is no longer 'training'. An on-demand job: its predictions are saved."""
    with ctx.db.read() as s:
        if job.round_id is not None:
            return s.get(Round, job.round_id).state != "training"
        return latest_artifact(s, job.project_id, "predictions", job_id=job.id) is not None


def _training_data(ctx: JobContext, project_id: int) -> _TrainingData:
    with ctx.db.read() as s:
        project = s.get(Project, project_id)
        items = item_rows(s, project.id)
        labels = current_labels(s, project.id)
        features_file = _features_file(s, project)
    key = (features_file, np.array([it.id for it in items], dtype=np.int64).tobytes(),
           np.array([it.split == "pool" for it in items]).tobytes())
    with _STANDARDIZED_LOCK:
        cached = _STANDARDIZED.get(key)
    if cached is None:
        cached = _standardized(ctx, project_id, items)
        with ctx.db.read() as s:  # ensure_features may have written the file it returned
            key = (_features_file(s, project),) + key[1:]
        with _STANDARDIZED_LOCK:
            _STANDARDIZED.clear()
            _STANDARDIZED[key] = cached
    ids, x, mean, std, row_of = cached
    ctx.progress(0.05, "features ready")
    items = [it for it in items if it.id in row_of]  # a missing file has no features (app.jobs.features)
    split = {it.id: it.split for it in items}
    return _TrainingData(
        project=project, ids=ids, x=x, mean=mean, std=std, row_of=row_of, labels=labels,
        pool_ids=[i for i in labels if split.get(i) == "pool"], eval_ids=[i for i in labels if split.get(i) == "eval"],
        eval_rows=np.array([row_of[it.id] for it in items if it.split == "eval"], dtype=np.int64),
    )


# The features standardized as the last training read them, keyed by what decides them (the features file and its
# checksum, the item ids, which are pool items): every round of a project, and every simulated run of it, reads the
# same ones, so they are loaded, checked and standardized once. One entry: the project trained last.
_STANDARDIZED: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[int, int]]] = {}
_STANDARDIZED_LOCK = threading.Lock()


def _features_file(s, project: Project) -> tuple[str, str] | None:
    artifact = latest_artifact(s, project.id, "features", backbone=backbone_key(project.backbone))
    return None if artifact is None else (artifact.path, artifact.sha256)


def _standardized(ctx: JobContext, project_id: int,
                  items: list) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[int, int]]:
    """(item ids, standardized features, mean, std, row of each item id) of the project's current features."""
    features, ids = ensure_features(ctx, project_id)
    row_of = {int(i): r for r, i in enumerate(ids)}
    # The statistics of the pool rows only: the evaluation items never shape what trains (nor what selects: the
    # select job standardizes with the same rows).
    pool_rows = np.array([row_of[it.id] for it in items if it.id in row_of and it.split == "pool"], dtype=np.int64)
    x, mean, std = standardize(features, fit_rows=pool_rows if len(pool_rows) else None)
    return ids, x, mean, std, row_of


def _fit(ctx: JobContext, data: _TrainingData, y_pool: np.ndarray, ssl: SSLConfig) -> tuple[TrainedHead, str]:
    """The trained head, and a note on its warm start."""
    project = data.project
    config = HeadConfig.from_dict({**project.head, "seed": project.seed})
    views = None
    if TRAINING_METHODS[ssl.method].views:
        views = standardize_views(ensure_views(ctx, project.id), data.mean, data.std)
    init, warm_note = _warm_start(ctx, data, config, ssl)
    head = train_head_ssl(
        data.x, np.array([data.row_of[i] for i in data.pool_ids], dtype=np.int64), y_pool, data.num_classes, config,
        ssl, views, eval_excluded=data.eval_rows, init=init, device=ctx.device, multi_label=data.multi_label,
        progress=lambda f, m: ctx.progress(0.05 + 0.8 * f, m),
    )
    return head, warm_note


def _evaluate(data: _TrainingData, probs: np.ndarray) -> dict:
    """The eval-set metrics (none without eval labels); labels_per_class stays the pool's."""
    if not data.eval_ids:
        return {}
    y_eval = data.label_matrix(data.eval_ids)
    eval_probs = probs[[data.row_of[i] for i in data.eval_ids]]
    if data.multi_label:
        scores = multilabel_metrics(y_eval, eval_probs)
        intervals = multilabel_intervals(y_eval, eval_probs, seed=data.project.seed)
        return {**{k: v for k, v in scores.items() if k != "labels_per_class"}, "intervals": intervals}
    y_pred = eval_probs.argmax(1)
    return {**classification_metrics(y_eval, y_pred, data.num_classes),
            "intervals": classification_intervals(y_eval, y_pred, data.num_classes, seed=data.project.seed)}


def _save(ctx: JobContext, job: Job, data: _TrainingData, head: TrainedHead | None, probs: np.ndarray | None,
          metrics: dict, note: str) -> bool:
    """Store the head and its predictions and close the round; False (nothing written) when another attempt of
    this job closed the round meanwhile."""
    project, round_id = data.project, job.round_id
    with ctx.db.write() as s:
        round_ = s.get(Round, round_id) if round_id is not None else None
        if round_ is not None and round_.state != "training":
            return False
        if head is not None:
            folder = project_dir(ctx.home, project.id) / "models"
            stamp = f"{utcnow():%Y%m%d%H%M%S%f}"
            save_tensors(
                s, folder / f"head-{stamp}.safetensors", project_id=project.id, kind="head", round_id=round_id,
                arrays={**head.state_arrays(), "feature_mean": data.mean, "feature_std": data.std},
                metadata={**head.metadata(), "backbone": backbone_key(project.backbone)},
            )
            save_matrix(
                s, folder / f"predictions-{stamp}.npy", project_id=project.id, kind="predictions",
                matrix=probs.astype(np.float32), item_ids=data.ids, round_id=round_id, meta={"job_id": job.id},
            )
        if round_ is not None:
            rounds.finish_training(round_, metrics, note)
            strategy_state.fold_round(s, s.get(Project, project.id), round_)
            # The next round's selection, with this head: the round opened ahead is filled, else one opens.
            rounds.after_training(s, s.get(Project, project.id), round_)
    return True


def _warm_start(ctx: JobContext, data: _TrainingData, config: HeadConfig,
                ssl: SSLConfig) -> tuple[TrainedHead | None, str]:
    """The head to start training from, and a note: the project's latest head (a source head at first) when
    the project warm-starts (`training.warm_start`, by default the method's catalog entry) and that head has the
    kind (the method's, else the project's) and sizes about to be trained; else None (a fresh seeded head)."""
    method = TRAINING_METHODS[ssl.method]
    if not (data.project.training or {}).get("warm_start", method.warm_start):
        return None, ""
    head = load_head(ctx.db, data.project.id)
    if head is None:
        return None, ", fresh start: no earlier head"
    kind, in_dim = method.head_kind or config.kind, data.x.shape[1]
    if (head.kind, head.in_dim, head.num_classes, head.multi_label) != (kind, in_dim, data.num_classes,
                                                                        data.multi_label):
        return None, (f", fresh start: the latest head is {head.kind} {head.in_dim}->{head.num_classes}, "
                      f"training needs {kind} {in_dim}->{data.num_classes}")
    return head, ", warm start"


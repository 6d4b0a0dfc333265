"""The map job and what the Map page reads: a 2-D projection of the project's cached features
(learners.projection: UMAP, or PCA for a small pool or without umap-learn), stored as a `projection` artifact keyed
to the features artifact it was computed from, so it is computed once per feature cache and a backbone change
makes it stale. Torch-free at import: the Map page reads `map_view` from here."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy.orm import Session

from app.jobs.context import JobContext, align
from learners.projection import project_2d
from storage.db import Database
from storage.files import latest_artifact, load_matrix, project_dir, save_matrix
from storage.items import item_rows
from storage.labels import current_labels
from storage.models import Job, Project, utcnow
from storage.rounds import latest_round, round_arms
from storage.source_heads import backbone_key

UNLABELED = "unlabeled"
NO_PREDICTION = "no model yet"
NOT_PICKED = "not picked"


def project_map(job: Job, ctx: JobContext) -> str:
    """Idempotent: a projection of the same features (artifact), method and seed is stored once; a rerun finds it
    and computes nothing."""
    # Imported here: app.jobs.features loads torch, and the Map page (the web process) reads this module's map_view.
    from app.jobs.features import ensure_features  # noqa: PLC0415

    features, ids = ensure_features(ctx, job.project_id)
    ctx.progress(0.05, "features ready")
    method = (job.params or {}).get("method", "auto")
    with ctx.db.read() as s:
        project = s.get(Project, job.project_id)
        source = _features_artifact(s, project)
        key = _key(source.id, method, project.seed)
        done = latest_artifact(s, project.id, "projection", key=key)
    if done is not None:
        return f"the map of these features was computed by job {done.meta.get('job_id')}: nothing to do"
    projection = project_2d(features, seed=project.seed, method=method,
                            progress=lambda f, m: ctx.progress(0.05 + 0.9 * f, m))
    with ctx.db.write() as s:
        if latest_artifact(s, project.id, "projection", key=key) is not None:
            return "another attempt of this job stored the same map meanwhile; this result is not saved"
        save_matrix(
            s, project_dir(ctx.home, project.id) / "maps" / f"projection-{utcnow():%Y%m%d%H%M%S%f}.npy",
            project_id=project.id, kind="projection", matrix=projection.coords, item_ids=ids,
            meta={"key": key, "features_id": source.id, "method": projection.method, "note": projection.note,
                  "fitted_on": projection.fitted_on, "job_id": job.id},
        )
    return f"map of {len(ids)} items: {projection.note}"


def _features_artifact(s: Session, project: Project):
    return latest_artifact(s, project.id, "features", backbone=backbone_key(project.backbone))


def _key(features_id: int, method: str, seed: int) -> str:
    return f"features={features_id}|method={method}|seed={seed}"


# ----- what the Map page draws ----------------------------------------------------------------------------------
@dataclass
class MapView:
    """Every item of the latest map, one entry per row, with what the page colours it by."""
    item_ids: np.ndarray
    coords: np.ndarray  # (n, 2)
    keys: list[str]  # file under the data root
    split: np.ndarray  # "pool" / "eval"
    label: np.ndarray  # class name(s), or UNLABELED
    prediction: np.ndarray  # the latest head's top class, or NO_PREDICTION
    uncertainty: np.ndarray  # 1 - top probability (multi-label: the least sure tag's 1 - |2p - 1|); NaN: no model
    picked: np.ndarray  # the arm that queued the item in the latest round, or NOT_PICKED
    round_index: int | None  # the latest round (whose queue entries are the picks)
    method: str
    note: str
    created_at: datetime
    stale: bool  # computed from features the project no longer uses (the backbone changed)


def map_view(db: Database, project_id: int) -> MapView | None:
    """The latest map of the project with its items' labels, predictions and picks, or None before the first."""
    with db.read() as s:
        project = s.get(Project, project_id)
        artifact = latest_artifact(s, project_id, "projection")
        if artifact is None:
            return None
        features = _features_artifact(s, project)
        items = {row.id: row for row in item_rows(s, project_id)}
        labels = current_labels(s, project_id)
        predictions = latest_artifact(s, project_id, "predictions")
        round_ = latest_round(s, project_id)
        picks = round_arms(s, round_.id) if round_ is not None else {}
    coords, ids = load_matrix(artifact)
    keep = np.array([int(i) in items for i in ids], dtype=bool)  # items deleted since are left out
    coords, ids = coords[keep], ids[keep]
    classes = list(project.classes)
    multi = project.task == "multi_label"

    def label_name(item_id: int) -> str:
        if item_id not in labels:
            return UNLABELED
        value = labels[item_id].value
        return ", ".join(classes[k] for k in value) if value else "none of these"

    prediction = np.full(len(ids), NO_PREDICTION, dtype=object)
    uncertainty = np.full(len(ids), np.nan, dtype=np.float32)
    if predictions is not None:
        probs = align(*load_matrix(predictions), ids, missing_ok=True)
        known = ~np.isnan(probs).any(axis=1)
        top = np.nan_to_num(probs).argmax(axis=1)
        prediction[known] = np.array(classes, dtype=object)[top[known]]
        if multi:
            uncertainty[known] = (1 - np.abs(2 * probs[known] - 1)).max(axis=1)
        else:
            uncertainty[known] = 1 - probs[known].max(axis=1)
    return MapView(
        item_ids=ids, coords=coords, keys=[items[int(i)].key for i in ids],
        split=np.array([items[int(i)].split for i in ids], dtype=object),
        label=np.array([label_name(int(i)) for i in ids], dtype=object),
        prediction=prediction, uncertainty=uncertainty,
        picked=np.array([picks.get(int(i), NOT_PICKED) for i in ids], dtype=object),
        round_index=None if round_ is None else round_.index,
        method=artifact.meta.get("method", ""), note=artifact.meta.get("note", ""), created_at=artifact.created_at,
        stale=features is None or artifact.meta.get("features_id") != features.id,
    )


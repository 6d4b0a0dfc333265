"""The embed job and the feature cache every other job reads: the plain-view features and the augmented views,
computed once per backbone (and view settings) and kept as files, rows keyed by item id."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from sqlalchemy.engine import Row

from app.jobs.context import JobContext
from learners.backbones import BackboneSpec, load_backbone
from learners.catalog import REQUIRED_VIEWS, SSLConfig
from learners.embedding import embed_images
from learners.views import VIEW_NAMES, embed_views
from storage.files import latest_artifact, load_matrix, project_dir, save_matrix
from storage.items import item_rows
from storage.models import Job, Project, utcnow
from storage.source_heads import backbone_key


def embed(job: Job, ctx: JobContext) -> str:
    """Idempotent: a rerun finds the files cached and writes nothing."""
    features, _ = ensure_features(ctx, job.project_id)
    message = f"{features.shape[0]} items embedded, {features.shape[1]} features each"
    with ctx.db.read() as s:
        training = s.get(Project, job.project_id).training or {}
    if REQUIRED_VIEWS.get(SSLConfig.from_dict(training.get("ssl", "none")).method):
        views = ensure_views(ctx, job.project_id)
        message += f"; augmented views {', '.join(f'{k} x{len(v)}' for k, v in views.items())}"
    return message


def _pool_items(ctx: JobContext, project_id: int) -> tuple[Project, list[Row]]:
    with ctx.db.read() as s:
        return s.get(Project, project_id), item_rows(s, project_id)


def _num_workers(items: list) -> int:
    return 2 if len(items) > 2000 else 0


def ensure_views(ctx: JobContext, project_id: int) -> dict[str, np.ndarray]:
    """The project's augmented views {name: raw features (K, N, d)}, computed once (training.md: K copies each)."""
    project, items = _pool_items(ctx, project_id)
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
        seed=project.seed, flip=flip, device=ctx.device, num_workers=_num_workers(items),
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


def ensure_features(ctx: JobContext, project_id: int) -> tuple[np.ndarray, np.ndarray]:
    """The project's plain-view features (raw, one row per item id), computing and caching them if needed."""
    project, items = _pool_items(ctx, project_id)
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
        num_workers=_num_workers(items),
        progress=lambda f, m: ctx.progress(0.99 * f, m),
    )
    folder = project_dir(ctx.home, project_id) / "features"
    path = folder / f"plain-{utcnow():%Y%m%d%H%M%S%f}.npy"
    with ctx.db.write() as s:
        save_matrix(s, path, project_id=project_id, kind="features", matrix=features, item_ids=ids,
                    meta={"backbone": key, "view": "plain"})
    ctx.progress(1.0, "features saved")
    return features, ids

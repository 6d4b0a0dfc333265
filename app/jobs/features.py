"""The embed job and the feature cache every other job reads: the plain-view features and the augmented views,
computed once per backbone (and view settings) and kept as files, rows keyed by item id.

Missing items: a file deleted, made unreadable or replaced by a symlink leaving the data root after the import is
not read (`storage.images.file_problem`, the Label page's check) or fails to decode; its feature row is stored as
NaN, and `ensure_features` returns only the items with features, so selection (`missing_items`) and training
leave it out and the project moves on. The embed job's message names how many and the first few."""
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
from storage.images import file_problem
from storage.importers import shown_name
from storage.items import item_rows
from storage.models import Job, Project, utcnow
from storage.source_heads import backbone_key


def embed(job: Job, ctx: JobContext) -> str:
    """Idempotent: a rerun finds the files cached and writes nothing."""
    features, _ = ensure_features(ctx, job.project_id)
    message = f"{features.shape[0]} items embedded, {features.shape[1]} features each"
    note = _missing_note(ctx, job.project_id)
    if note:
        message += f"; {note}"
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
    plain, plain_ids = ensure_features(ctx, project_id)
    present = {int(i) for i in plain_ids}
    items = [item for item in items if item.id in present]
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
    failed: list[tuple[int, str]] = []
    computed = embed_views(
        [Path(project.data_root) / item.key for item in items], backbone, views=missing, copies=copies,
        seed=project.seed, flip=flip, device=ctx.device, num_workers=_num_workers(items),
        progress=lambda f, m: ctx.progress(f, f"augmented views: {m}"), failed=failed,
    )
    if failed:  # gone since the plain view was embedded: its views are its plain features (no augmentation)
        rows = sorted({position for position, _ in failed})
        for array in computed.values():
            array[:, rows] = plain[rows]
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
            return _present(features, ids)
    ctx.progress(0.0, f"loading backbone {project.backbone.get('name')}")
    backbone = load_backbone(BackboneSpec.from_dict(project.backbone), device=ctx.device)
    root = Path(project.data_root)
    problems = {k: problem for k, item in enumerate(items) if (problem := file_problem(root / item.key, root))}
    readable = [k for k in range(len(items)) if k not in problems]
    failed: list[tuple[int, str]] = []
    embedded = embed_images(
        [root / items[k].key for k in readable],
        backbone,
        device=ctx.device,
        num_workers=_num_workers(items),
        progress=lambda f, m: ctx.progress(0.99 * f, m),
        failed=failed,
    )
    features = np.full((len(items), embedded.shape[1]), np.nan, dtype=np.float32)
    features[readable] = embedded
    for position, message in failed:
        problems[readable[position]] = message
    missing = [{"id": int(items[k].id), "key": shown_name(items[k].key), "problem": shown_name(problems[k])}
               for k in sorted(problems)]
    folder = project_dir(ctx.home, project_id) / "features"
    path = folder / f"plain-{utcnow():%Y%m%d%H%M%S%f}.npy"
    with ctx.db.write() as s:
        save_matrix(s, path, project_id=project_id, kind="features", matrix=features, item_ids=ids,
                    meta={"backbone": key, "view": "plain", "missing": missing[:MISSING_LISTED],
                          "missing_count": len(missing)})
    ctx.progress(1.0, "features saved" + (f" ({len(missing)} files missing)" if missing else ""))
    return _present(features, ids)


MISSING_LISTED = 1000  # missing files listed in the features artifact (all are NaN rows; the count is kept)


def _present(features: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows (and ids) of the items that have features: a missing item's row is NaN."""
    keep = ~np.isnan(features).any(axis=1) if features.ndim == 2 and features.size else np.ones(len(ids), bool)
    if keep.all():
        return features, ids
    return features[keep], ids[keep]


def missing_items(ctx: JobContext, project_id: int) -> set[int]:
    """Ids of the items whose file could not be read when the project's current features were computed (their
    feature row is NaN): selection never queues them, training leaves them out."""
    with ctx.db.read() as s:
        project = s.get(Project, project_id)
        artifact = latest_artifact(s, project_id, "features", backbone=backbone_key(project.backbone))
    if artifact is None or not (artifact.meta or {}).get("missing_count"):
        return set()
    features, ids = load_matrix(artifact)
    return {int(i) for i in ids[np.isnan(features).any(axis=1)]}


def _missing_note(ctx: JobContext, project_id: int) -> str:
    with ctx.db.read() as s:
        project = s.get(Project, project_id)
        artifact = latest_artifact(s, project_id, "features", backbone=backbone_key(project.backbone))
    meta = (artifact.meta or {}) if artifact is not None else {}
    count = int(meta.get("missing_count") or 0)
    if not count:
        return ""
    first = ", ".join(f"{m['key']} ({m['problem']})" for m in meta.get("missing", [])[:3])
    return (f"{count} file{'s' if count != 1 else ''} missing or unreadable, left out of selection and training "
            f"(e.g. {first})")

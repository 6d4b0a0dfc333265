"""The embed job and the feature cache every other job reads: the plain-view features and the augmented views,
computed once per backbone (and view settings) and kept as files, rows keyed by item id.

Missing items: a file deleted, made unreadable or replaced by a symlink leaving the data root after the import is
not read (`storage.images.file_problem`, the Label page's check) or fails to decode; its feature row is stored as
NaN, and `ensure_features` returns only the items with features, so selection (`missing_items`) and training
leave it out and the project moves on. The embed job's message names how many and the first few.

The plain view is embedded in shards (`app.jobs.embed_shards`): a rerun after a kill embeds only the shards not yet
written, and idle workers (one per GPU) take shards of a running embed job (`help_embed`). WORKBENCH_EMBED_BACKEND=ray
embeds on a Ray cluster instead (`learners.embed_ray`), into the same features file."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
from sqlalchemy.engine import Row

from app.jobs import embed_shards
from app.jobs.context import JobContext
from learners.backbones import BackboneSpec
from learners.catalog import REQUIRED_VIEWS, SSLConfig
from learners.embed_ray import embed_images_ray
from learners.embedding import embed_images, load_shared_backbone
from learners.views import VIEW_NAMES, embed_views
from storage.files import latest_artifact, load_matrix, project_dir, save_matrix
from storage.images import file_problem
from storage.importers import shown_name
from storage.items import item_rows
from storage.models import Job, Project, utcnow
from storage.source_heads import backbone_key


def embed(job: Job, ctx: JobContext) -> str:
    """Idempotent: a rerun finds the files cached and writes nothing."""
    features, _ = ensure_features(ctx, job.project_id, backend=(job.params or {}).get("backend"))
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


def _num_workers(items: list, device: str = "cpu") -> int:
    """DataLoader processes that decode: WORKBENCH_LOADER_WORKERS when set; on CUDA up to 8 (the GPU outruns one
    decoder); on a CPU 2 for a large pool, none for a small one (starting them costs more than they save)."""
    if os.environ.get("WORKBENCH_LOADER_WORKERS"):
        return int(os.environ["WORKBENCH_LOADER_WORKERS"])
    if device.startswith("cuda"):
        return min(8, os.cpu_count() or 1)
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
    backbone = load_shared_backbone(BackboneSpec.from_dict(project.backbone), device=ctx.device)
    failed: list[tuple[int, str]] = []
    computed = embed_views(
        [Path(project.data_root) / item.key for item in items], backbone, views=missing, copies=copies,
        seed=project.seed, flip=flip, device=ctx.device, num_workers=_num_workers(items, ctx.device),
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


def ensure_features(ctx: JobContext, project_id: int, backend: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The project's plain-view features (raw, one row per item id), computing and caching them if needed.

    `backend` (default: WORKBENCH_EMBED_BACKEND, else "local"): "local" embeds shard by shard on this worker,
    with the other workers that help (`help_embed`), and resumes from the shards already written; "ray" embeds on
    a Ray cluster. Both write the same features artifact."""
    project, items = _pool_items(ctx, project_id)
    key = backbone_key(project.backbone)
    ids = np.array([item.id for item in items], dtype=np.int64)
    with ctx.db.read() as s:
        artifact = latest_artifact(s, project_id, "features", backbone=key)
    if artifact is not None:
        features, cached_ids = load_matrix(artifact)
        if np.array_equal(cached_ids, ids):
            shutil.rmtree(embed_shards.plan_folder(ctx.home, project_id, key, ids), ignore_errors=True)
            ctx.progress(1.0, "features cached")
            return _present(features, ids)
    backend = backend or embed_backend()
    if backend not in BACKENDS:
        raise ValueError(f"unknown embedding backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "ray":
        features, problems = _embed_on_ray(ctx, project, items)
        plan = None
    else:
        plan = embed_shards.open_plan(ctx.home, project_id, key, ids, create=True)
        report = _Reporter(lambda f, m: ctx.progress(0.99 * f, m))
        backbone = _LazyBackbone(project.backbone, ctx.device, report.say)
        try:
            shards = embed_shards.work(plan, _range_embedder(ctx, project, items, backbone), report, owner=True)
        except embed_shards.PlanRemoved:  # merged by another run meanwhile: its artifact is the cache now
            return ensure_features(ctx, project_id, backend)
        features, problems = embed_shards.merge(plan, shards)
        if not len(items):
            features = np.zeros((0, backbone.get().dim), dtype=np.float32)
    by_id = {int(item.id): k for k, item in enumerate(items)}
    missing = [{"id": int(i), "key": shown_name(items[by_id[i]].key), "problem": shown_name(problems[i])}
               for i in sorted(problems)]
    folder = project_dir(ctx.home, project_id) / "features"
    path = folder / f"plain-{utcnow():%Y%m%d%H%M%S%f}.npy"
    with ctx.db.write() as s:
        save_matrix(s, path, project_id=project_id, kind="features", matrix=features, item_ids=ids,
                    meta={"backbone": key, "view": "plain", "missing": missing[:MISSING_LISTED],
                          "missing_count": len(missing)})
    if plan is not None:
        embed_shards.remove_plan(plan)
    ctx.progress(1.0, "features saved" + (f" ({len(missing)} files missing)" if missing else ""))
    return _present(features, ids)


def help_embed(job: Job, ctx: JobContext) -> bool | None:
    """Another worker's part in a running embed job: embed shards of its plan that no live worker holds, until
    none is left to take. True when it embedded any (the job's own worker merges them), False when none was left,
    None when the job has no plan yet (its worker is still starting) or embeds on Ray."""
    project, items = _pool_items(ctx, job.project_id)
    if project is None:
        return False
    key = backbone_key(project.backbone)
    ids = np.array([item.id for item in items], dtype=np.int64)
    plan = embed_shards.open_plan(ctx.home, job.project_id, key, ids, create=False)
    if plan is None:
        return None
    embed_range = _range_embedder(ctx, project, items, _LazyBackbone(project.backbone, ctx.device, lambda _: None))
    embedded = 0

    def counted(start: int, stop: int, report):
        nonlocal embedded
        embedded += 1
        return embed_range(start, stop, report)

    embed_shards.work(plan, counted, ctx.progress, owner=False)
    return embedded > 0


class _Reporter:
    """A progress callback that can also say something new at the fraction last reported (progress never goes
    back on the Jobs page)."""

    def __init__(self, progress) -> None:
        self.progress, self.fraction = progress, 0.0

    def __call__(self, fraction: float, message: str) -> None:
        self.fraction = fraction
        self.progress(fraction, message)

    def say(self, message: str) -> None:
        self.progress(self.fraction, message)


class _LazyBackbone:
    """The project's backbone, loaded on first use: a resumed job whose shards are all written loads none."""

    def __init__(self, spec: dict, device: str, say) -> None:
        self.spec, self.device, self.say, self.backbone = spec, device, say, None

    def get(self):
        if self.backbone is None:
            self.say(f"loading backbone {self.spec.get('name')}")
            self.backbone = load_shared_backbone(BackboneSpec.from_dict(self.spec), device=self.device)
        return self.backbone


def _range_embedder(ctx: JobContext, project: Project, items: list[Row], backbone: _LazyBackbone):
    """(start, stop, progress) -> (features of items[start:stop], {item position: why its file is unreadable})."""
    root = Path(project.data_root)

    def embed_range(start: int, stop: int, report) -> tuple[np.ndarray, dict[int, str]]:
        chunk = items[start:stop]
        problems = {start + k: problem for k, item in enumerate(chunk)
                    if (problem := file_problem(root / item.key, root))}
        readable = [k for k in range(len(chunk)) if start + k not in problems]
        model = backbone.get()
        failed: list[tuple[int, str]] = []
        embedded = embed_images([root / chunk[k].key for k in readable], model, device=ctx.device,
                                num_workers=_num_workers(items, ctx.device), amp=amp_mode(ctx.device),
                                progress=report, failed=failed)
        features = np.full((len(chunk), model.dim), np.nan, dtype=np.float32)
        features[readable] = embedded
        for position, message in failed:
            problems[start + readable[position]] = message
        return features, problems

    return embed_range


def _embed_on_ray(ctx: JobContext, project: Project, items: list[Row]) -> tuple[np.ndarray, dict[int, str]]:
    """Every item's features from the Ray cluster, and {item id: problem} of the files it could not read."""
    root = Path(project.data_root)
    problems = {int(item.id): problem for item in items if (problem := file_problem(root / item.key, root))}
    readable = [k for k, item in enumerate(items) if int(item.id) not in problems]
    failed: list[tuple[int, str]] = []
    embedded = embed_images_ray([root / items[k].key for k in readable], BackboneSpec.from_dict(project.backbone),
                                device=ctx.device, amp=amp_mode(ctx.device), failed=failed,
                                progress=lambda f, m: ctx.progress(0.99 * f, m))
    features = np.full((len(items), embedded.shape[1]), np.nan, dtype=np.float32)
    features[readable] = embedded
    for position, message in failed:
        problems[int(items[readable[position]].id)] = message
    return features, problems


BACKENDS = ("local", "ray")


def embed_backend() -> str:
    """The worker's embedding backend: WORKBENCH_EMBED_BACKEND, "local" (default) or "ray"."""
    backend = os.environ.get("WORKBENCH_EMBED_BACKEND") or "local"
    if backend not in BACKENDS:
        raise ValueError(f"WORKBENCH_EMBED_BACKEND must be one of {', '.join(BACKENDS)}, got {backend!r}")
    return backend


def amp_mode(device: str) -> str:
    """Autocast on CUDA: WORKBENCH_EMBED_AMP (none, bf16, fp16), bf16 by default; a CPU embeds in fp32."""
    if not device.startswith("cuda"):
        return "none"
    return os.environ.get("WORKBENCH_EMBED_AMP") or "bf16"


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

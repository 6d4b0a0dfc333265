"""The review job: find the labeled pool items whose label is likely wrong (learners.label_issues: out-of-fold
probabilities from the project's head kind and settings, supervised, then cleanlab) and store them for the Review
page (storage.reviews), keyed to the labels and settings they were computed on."""
from __future__ import annotations

import numpy as np

from app.jobs.context import JobContext
from app.jobs.features import ensure_features
from learners.embedding import standardize
from learners.errors import LearnerError
from learners.heads import HeadConfig
from learners.label_issues import MULTI_LABEL_REFUSAL, fold_count, out_of_fold_probs, ranked_issues
from storage import reviews
from storage.files import project_dir
from storage.items import item_rows
from storage.labels import current_labels, label_array
from storage.models import Job, Project, utcnow


def review(job: Job, ctx: JobContext) -> str:
    """Idempotent: a scan of the same labels and settings (the same `storage.reviews.scan_key`) is stored once; a
    rerun, or a second job queued before any label changed, finds it and computes nothing."""
    with ctx.db.read() as s:
        if s.get(Project, job.project_id).task != "single_label":
            raise LearnerError(MULTI_LABEL_REFUSAL)
    features, ids = ensure_features(ctx, job.project_id)
    ctx.progress(0.05, "features ready")
    with ctx.db.read() as s:
        project = s.get(Project, job.project_id)
        seen_up_to = reviews.last_annotation_id(s, project.id)
        items = item_rows(s, project.id)
        labels = current_labels(s, project.id)
    row_of = {int(i): r for r, i in enumerate(ids)}
    pool = [it.id for it in items if it.split == "pool" and it.id in row_of]  # a missing file has no features
    scanned = [i for i in pool if i in labels]
    # Labels given between the two reads above are in the scan: they are not changes after it.
    seen_up_to = max([seen_up_to, *(labels[i].annotation_id for i in scanned)])
    key = reviews.scan_key(project, [(i, labels[i].annotation_id) for i in scanned])
    with ctx.db.read() as s:
        done = reviews.scan_with_key(s, project.id, key)
    if done is not None:
        return f"the labels have not changed since the scan of job {done.meta.get('job_id')}: nothing to do"

    num_classes = len(project.classes)
    y = label_array([labels[i].value for i in scanned], num_classes, multi_label=False)
    folds = fold_count(y)  # refuses too few labels before anything is trained
    x, _, _ = standardize(features, fit_rows=np.array([row_of[i] for i in pool], dtype=np.int64))
    config = HeadConfig.from_dict({**project.head, "seed": project.seed})
    probs = out_of_fold_probs(x[[row_of[i] for i in scanned]], y, num_classes, config, seed=project.seed,
                              device=ctx.device, progress=lambda f, m: ctx.progress(0.05 + 0.9 * f, m))
    ctx.progress(0.96, "ranking likely mistakes")
    issues = ranked_issues(y, probs)
    flagged = [scanned[issue.index] for issue in issues]
    with ctx.db.write() as s:
        if reviews.scan_with_key(s, project.id, key) is not None:
            return "another attempt of this job stored the same scan meanwhile; this result is not saved"
        reviews.save_scan(
            s, project_dir(ctx.home, project.id) / "reviews" / f"label-issues-{utcnow():%Y%m%d%H%M%S%f}.npy",
            project_id=project.id, item_ids=flagged, probs=probs[[issue.index for issue in issues]],
            given=[issue.given for issue in issues],
            annotation_ids=[labels[i].annotation_id for i in flagged], key=key, labels=len(scanned), folds=folds,
            seen_up_to=seen_up_to, job_id=job.id,
        )
    return (f"{len(issues)} of {len(scanned)} pool labels flagged as likely wrong "
            f"({folds}-fold out-of-fold {config.kind} head)")

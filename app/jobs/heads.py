"""The project's latest head, as the select and train handlers read it."""
from __future__ import annotations

from learners.heads import TrainedHead
from storage.db import Database
from storage.files import latest_artifact, load_tensors


def load_head(db: Database, project_id: int) -> TrainedHead | None:
    with db.read() as s:
        artifact = latest_artifact(s, project_id, "head")
    if artifact is None:
        return None
    arrays, meta = load_tensors(artifact)
    arrays = {k: v for k, v in arrays.items() if not k.startswith("feature_")}
    return TrainedHead.from_state(arrays, meta)

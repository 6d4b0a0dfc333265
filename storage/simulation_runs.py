"""What a simulation reads from the real project and writes into each run's own database: the project's items
and artifacts as they are, copied without gold labels, and per round what its picks and heads did."""
from __future__ import annotations

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from storage.models import Annotation, Artifact, Item, Project, QueueEntry, Round


def project_items(session: Session, project_id: int) -> list[Item]:
    """Every item of the project (with its gold label: the simulation's oracle holds them), ordered by id."""
    return list(session.scalars(select(Item).where(Item.project_id == project_id).order_by(Item.id)))


def source_head(session: Session, project_id: int) -> Artifact | None:
    """The head the project was started from (stored before any round), or None."""
    first = session.scalars(select(Artifact).where(
        Artifact.project_id == project_id, Artifact.kind == "head", Artifact.round_id.is_(None))
        .order_by(Artifact.id)).first()
    return first if first is not None and first.meta.get("source") else None


def copy_project(session: Session, run: Project, items: list[Item], splits: dict[int, str],
                 artifacts: list[Artifact]) -> None:
    """Fill a run's empty database: the items with the same ids (so cached files keyed by item id apply as they
    are), each in the split `splits` gives it ("pool" or "eval": the simulation's held-out split, not the real
    project's), with no gold label, and references to the real project's artifacts (features, a source head)."""
    session.add(run)
    session.flush()
    session.execute(insert(Item), [
        {"id": it.id, "project_id": run.id, "key": it.key, "content_hash": it.content_hash, "split": splits[it.id],
         "gold": None}
        for it in items
    ])
    for artifact in artifacts:
        session.add(Artifact(project_id=run.id, kind=artifact.kind, path=artifact.path, sha256=artifact.sha256,
                             meta=dict(artifact.meta)))
    session.flush()


def add_labels(session: Session, project_id: int, annotator: str, values: dict[int, list[int]]) -> None:
    """Label many items at once ({item id: value}): the oracle labeling a run's evaluation set up front."""
    session.execute(insert(Annotation), [
        {"project_id": project_id, "item_id": item_id, "annotator": annotator, "kind": "label", "value": value}
        for item_id, value in values.items()
    ])
    session.flush()


def labeled_picks_per_arm(session: Session, project_id: int) -> dict[int, dict[str, int]]:
    """{round index: {arm: labeled pool picks}}; evaluation-set items are not picks."""
    pulls: dict[int, dict[str, int]] = {}
    for index, arm, count in session.execute(
        select(Round.index, QueueEntry.arm, func.count())
        .join(Round, Round.id == QueueEntry.round_id)
        .join(Item, Item.id == QueueEntry.item_id)
        .where(Round.project_id == project_id, QueueEntry.state == "labeled", Item.split == "pool",
               QueueEntry.copy_index == 0)
        .group_by(Round.index, QueueEntry.arm)
    ):
        pulls.setdefault(index, {})[arm] = count
    return pulls


def round_predictions(session: Session, project_id: int) -> dict[int, Artifact]:
    """{round index: the predictions its training saved}."""
    return {index: artifact for index, artifact in session.execute(
        select(Round.index, Artifact).join(Round, Round.id == Artifact.round_id)
        .where(Artifact.project_id == project_id, Artifact.kind == "predictions").order_by(Artifact.id)
    )}  # ordered: should a round hold two predictions files, its latest is the one kept


def pool_item_ids(session: Session, project_id: int) -> set[int]:
    return set(session.scalars(select(Item.id).where(Item.project_id == project_id, Item.split == "pool")))

"""SQLAlchemy models for every table of the data model (DESIGN.md)."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict: JSON, list: JSON}


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    task: Mapped[str] = mapped_column(String(20), default="single_label")
    classes: Mapped[list] = mapped_column(JSON)
    data_root: Mapped[str] = mapped_column(Text)
    backbone: Mapped[dict] = mapped_column(JSON)
    head: Mapped[dict] = mapped_column(JSON)
    training: Mapped[dict] = mapped_column(JSON, default=dict)
    strategy: Mapped[str] = mapped_column(String(50), default="margin")
    strategy_params: Mapped[dict] = mapped_column(JSON, default=dict)
    round_size: Mapped[int] = mapped_column(Integer, default=10)
    eval_size: Mapped[int] = mapped_column(Integer, default=10)
    auto_next_round: Mapped[bool] = mapped_column(default=True)
    # Items a batch round's selection ranks beyond its size, queued at once in the next round when this one goes
    # to training (app.rounds: no waiting at a round boundary); 0 turns it off.
    pick_ahead: Mapped[int] = mapped_column(Integer, default=5, server_default="5")
    # Several annotators on the same items (storage.queue.add_copies): the share of each round's pool items, and
    # whether every evaluation item, goes to `overlap_k` different annotators; their answers agree, or the item is
    # disputed until a reviewer adjudicates it (storage.labels).
    overlap: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    overlap_eval: Mapped[bool] = mapped_column(default=False, server_default=false())
    overlap_k: Mapped[int] = mapped_column(Integer, default=2, server_default="2")
    seed: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    items: Mapped[list[Item]] = relationship(back_populates="project", cascade="all, delete-orphan")


class Item(Base):
    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("project_id", "key"),
        Index("ix_items_project_split", "project_id", "split"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    split: Mapped[str] = mapped_column(String(10), default="pool")
    gold: Mapped[list | None] = mapped_column(JSON(none_as_null=True), nullable=True)

    project: Mapped[Project] = relationship(back_populates="items")


class Round(Base):
    __tablename__ = "rounds"
    __table_args__ = (UniqueConstraint("project_id", "index"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    strategy: Mapped[str] = mapped_column(String(50))
    strategy_params: Mapped[dict] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(20), default="selecting")
    note: Mapped[str] = mapped_column(Text, default="")
    labels_at_start: Mapped[int] = mapped_column(Integer, default=0)
    metrics: Mapped[dict | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    labeling_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    done_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # The selection's ranking beyond the round's picks: [[item id, arm, score], ...], for the next round.
    ranked_ahead: Mapped[list | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    # Opened ahead (while the round before trains) with items that round's selection ranked: how many, whose
    # (the round index), and whether its own selection, with the new head, has still to fill it.
    picked_ahead: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    picked_ahead_by: Mapped[int | None] = mapped_column(Integer, nullable=True)
    awaiting_selection: Mapped[bool] = mapped_column(default=False, server_default=false())


class Annotation(Base):
    """Append-only. kind='label' gives a value; kind='retract' withdraws the row named by `replaces_id`;
    kind='adjudicate' is a reviewer's final label of a disputed item (storage.labels)."""

    __tablename__ = "annotations"
    __table_args__ = (
        Index("ix_annotations_item", "item_id"),
        Index("ix_annotations_project_annotator", "project_id", "annotator"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    annotator: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(10), default="label")
    value: Mapped[list | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    replaces_id: Mapped[int | None] = mapped_column(ForeignKey("annotations.id"), nullable=True)
    round_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id"), nullable=True)
    queue_entry_id: Mapped[int | None] = mapped_column(ForeignKey("queue_entries.id"), nullable=True)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class QueueEntry(Base):
    __tablename__ = "queue_entries"
    __table_args__ = (
        UniqueConstraint("round_id", "item_id", "copy_index", name="uq_queue_entries_round_item_copy"),
        Index("ix_queue_round_state_position", "round_id", "state", "position"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    arm: Mapped[str] = mapped_column(String(100))
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    state: Mapped[str] = mapped_column(String(10), default="pending")
    claimed_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    lease_expires: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # 0 for every item; 1.. for the further copies of an overlap item, each answered by another annotator
    # (storage.queue: nobody takes two copies of one item).
    copy_index: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_state_priority", "state", "priority", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), nullable=True)
    round_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"), nullable=True)
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    priority: Mapped[int] = mapped_column(Integer, default=10)
    state: Mapped[str] = mapped_column(String(10), default="queued")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    heartbeat: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class StrategyState(Base):
    __tablename__ = "strategy_states"
    __table_args__ = (UniqueConstraint("project_id", "strategy"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    strategy: Mapped[str] = mapped_column(String(50))
    state: Mapped[dict] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class Artifact(Base):
    """A file under the project folder (features, head checkpoint, predictions), written atomically.

    The row is added only after the file is complete; `sha256` lets readers refuse a damaged file.
    """

    __tablename__ = "artifacts"
    __table_args__ = (Index("ix_artifacts_project_kind", "project_id", "kind", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    round_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"), nullable=True)
    kind: Mapped[str] = mapped_column(String(20))
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    meta: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class AnswerReceipt(Base):
    """One answer sent by a label surface (storage.answers), applied exactly once.

    Unique by (annotator, client_id, seq): a replayed answer finds its receipt and gets the same outcome without
    writing again. `status` is 'applied' or 'refused' (then `reason` says why, in words). `entry_id` and
    `annotation_id` are plain ids (no foreign keys), so receipts never block deleting a round or a project's rows.
    """

    __tablename__ = "answer_receipts"
    __table_args__ = (
        UniqueConstraint("annotator", "client_id", "seq"),
        Index("ix_answer_receipts_project", "project_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    annotator: Mapped[str] = mapped_column(String(100))
    client_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(Integer)
    entry_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    kind: Mapped[str] = mapped_column(String(10))
    value: Mapped[list | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    status: Mapped[str] = mapped_column(String(10))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    annotation_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Person(Base):
    """Someone who signs in (storage.people): a name stored with each of their answers, a role, and the SHA-256 of
    their token (the token itself is shown once, never stored). A removed person stays (their history names them)
    but can no longer sign in."""

    __tablename__ = "people"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(10))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class SignInLink(Base):
    """A one-time sign-in link for a person (storage.people.make_link): the SHA-256 of its code, used once before
    it expires. A link that leaks through the browser's history or a proxy's log is then worth nothing."""

    __tablename__ = "sign_in_links"

    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"))
    code_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

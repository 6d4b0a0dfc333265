"""The labeling queue: atomic claims with leases, label / skip / undo as append-only annotations.

Overlap (several annotators on the same items, project settings `overlap`, `overlap_eval`, `overlap_k`): an overlap
item has `overlap_k` entries in its round, copies 0, 1, ... (`add_copies`), at the same queue position. Nobody
takes two copies of one item: a claim refuses an entry whose item has another copy in the round that the annotator
holds or answered (`not_a_copy_of_mine`; the entry they answered stays theirs, claimed_by, whatever its state, so
neither a skip, an undo, an expired lease nor a look-ahead claim hands them the other copy). Two claims of one
annotator at once (two tabs, two processes) are serialised on PostgreSQL by a transaction-scoped advisory lock on
the name (`_lock_annotator`), so each sees what the other took; SQLite's write transaction is serialised anyway.
A round is answered when every copy is: its open entries count them all.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import and_, bindparam, exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased
from sqlalchemy.orm.util import identity_key

from storage.errors import StorageError
from storage.labels import answered_item_ids
from storage.models import Annotation, Item, Project, QueueEntry, Round, utcnow

# Arms of queue entries a person chose (storage/hand_picks.py: the grid page, nearest neighbours, the map): not an
# active-learning sample, so they count neither towards a round's size nor as a strategy's picks.
HAND_ARMS = ("grid", "like", "map")

DEFAULT_LEASE_SECONDS = 60  # the Label page renews what it holds (app.settings.Settings.lease_seconds)
OPEN_STATES = ("pending", "claimed")
CLOSED_ROUND_STATES = ("training", "done")
HOLDING_STATES = ("claimed", "labeled", "skipped")  # an entry in these keeps its annotator (claimed_by)
OVERLAP_STREAM = 2  # a seed stream of its own (app.rounds uses 1 for the evaluation order)
ANNOTATOR_LOCK_SPACE = 0x51554555  # pg_advisory_xact_lock's first key for claims by one annotator ("QUEU")


class QueueError(StorageError, RuntimeError):
    pass


@dataclass(frozen=True)
class Claim:
    entry_id: int
    round_id: int
    item_id: int
    position: int
    arm: str
    score: float | None
    lease_expires: datetime


def claim_of(entry: QueueEntry) -> Claim:
    return Claim(entry.id, entry.round_id, entry.item_id, entry.position, entry.arm, entry.score, entry.lease_expires)


def labeling_round(session: Session, project_id: int) -> Round | None:
    return session.scalars(_LABELING_ROUND, {"project_id": project_id}).first()


def claim_next(
    session: Session, round_id: int, annotator: str, lease_seconds: int = DEFAULT_LEASE_SECONDS
) -> Claim | None:
    """Give `annotator` an item of the round: the one they already hold, else the first free or expired one.

    The conditional UPDATE only succeeds if the row is still free, so two annotators never get the same item within
    a lease even when their transactions interleave (PostgreSQL); on SQLite the write transaction is serialised.
    A held claim is re-read under a row lock, so a lease that expires and is taken over meanwhile is not renewed.
    """
    now = utcnow()
    lease = now + timedelta(seconds=lease_seconds)
    held = session.scalars(_HELD, {"round_id": round_id, "annotator": annotator, "now": now}).first()
    if held is not None:
        held.lease_expires = lease
        session.flush()
        return claim_of(held)
    return claim_free(session, round_id, annotator, now, lease)


def is_free(now: datetime):
    """The condition of an entry anyone may take: pending, or claimed with a lease that ran out before `now`."""
    return or_(QueueEntry.state == "pending", and_(QueueEntry.state == "claimed", QueueEntry.lease_expires < now))


def not_a_copy_of_mine(annotator: str):
    """The condition of an entry `annotator` may take: no other copy of its item in its round is held or was
    answered by them (module doc)."""
    other = aliased(QueueEntry)
    return ~exists().where(
        other.round_id == QueueEntry.round_id, other.item_id == QueueEntry.item_id, other.id != QueueEntry.id,
        other.claimed_by == annotator, other.state.in_(HOLDING_STATES),
    )


def _lock_annotator(session: Session, annotator: str) -> None:
    """Serialise the claims of one annotator (PostgreSQL; until the transaction ends): two tabs of one person never
    take two copies of one item, as each claim's check then sees the other's committed claim."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(ANNOTATOR_LOCK_SPACE, func.hashtext(annotator))))


def hold(entry: QueueEntry, annotator: str, lease_seconds: int) -> None:
    """Give `entry` to `annotator` for `lease_seconds` from now (an undo hands its item back this way)."""
    now = utcnow()
    entry.state = "claimed"
    entry.claimed_by = annotator
    entry.claimed_at = now
    entry.lease_expires = now + timedelta(seconds=lease_seconds)


def live_answers(project_id: int, annotator: str):
    """A select of the annotator's labels and skips in the project that no 'retract' row withdrew."""
    retracted = select(Annotation.replaces_id).where(
        Annotation.project_id == project_id, Annotation.kind == "retract", Annotation.replaces_id.is_not(None)
    )
    return select(Annotation).where(
        Annotation.project_id == project_id,
        Annotation.annotator == annotator,
        Annotation.kind.in_(("label", "skip")),
        Annotation.id.not_in(retracted),
    )


def claim_free(session: Session, round_id: int, annotator: str, now: datetime, lease: datetime) -> Claim | None:
    """The round's first free entry (pending, or claimed with an expired lease) that is no copy of an item they
    hold or answered, claimed for `annotator`: a row lock that skips rows being taken, then an UPDATE that succeeds
    only while the row is still free."""
    taken = _take_free(session, round_id, annotator, now, lease)
    if taken is None:
        return None
    stale = session.identity_map.get(identity_key(QueueEntry, taken.id))
    if stale is not None:  # the UPDATE went around the session
        session.expire(stale)
    return Claim(taken.id, taken.round_id, taken.item_id, taken.position, taken.arm, taken.score, lease)


def _take_free(session: Session, round_id: int, annotator: str, now: datetime, lease: datetime):
    """claim_free's claim: the row (id, round_id, item_id, position, arm, score) of the entry it took, or None."""
    _lock_annotator(session, annotator)
    for _attempt in range(20):
        candidate = session.execute(_FREE_CANDIDATE, {"round_id": round_id, "annotator": annotator, "now": now}).first()
        if candidate is None:
            return None
        result = session.execute(_TAKE, {"candidate": candidate.id, "now": now, "who": annotator, "until": lease})
        if result.rowcount == 1:
            return candidate
    raise QueueError("could not claim an item after 20 attempts (heavy contention)")


def _lock_entry(session: Session, entry_id: int) -> QueueEntry | None:
    """The queue entry, re-read under a row lock (PostgreSQL; SQLite's write transaction already holds the database)."""
    return session.get(QueueEntry, entry_id, populate_existing=True, with_for_update={"key_share": True})


def _lock_round(session: Session, round_id: int) -> Round | None:
    """The round, re-read under a row lock that orders every answer in the round after the one before it.

    Taken after the entry's lock (the order close_round also takes them in) and held to the commit. Under
    PostgreSQL's READ COMMITTED an answer's later reads (app.rounds.after_answer counts the open entries) then see
    every earlier answer of the round committed, so the last answer always finds no open entry left and sends the
    round to training exactly once (without it, the last two answers, committed together, each see the other's
    entry still open and the round never closes); and an undo never re-claims an item in a round that another
    annotator's last answer has just closed. FOR NO KEY UPDATE: inserts that reference the round (annotations,
    jobs) do not wait on it. SQLite's write transaction already holds the whole database.
    """
    return session.get(Round, round_id, populate_existing=True, with_for_update={"key_share": True})


def _held_entry(session: Session, entry_id: int, annotator: str) -> QueueEntry:
    entry = _lock_entry(session, entry_id)
    if entry is None:
        raise QueueError(f"queue entry {entry_id} does not exist")
    if entry.state != "claimed" or entry.claimed_by != annotator:
        raise QueueError(
            f"queue entry {entry_id} is no longer yours (state {entry.state}, held by {entry.claimed_by}); "
            "its lease may have expired and another annotator taken it"
        )
    return entry


def submit_label(
    session: Session,
    project_id: int,
    entry_id: int,
    annotator: str,
    value: list[int],
    seconds: float | None = None,
) -> Annotation:
    return _answer(session, project_id, entry_id, annotator, "label", sorted(set(int(v) for v in value)), seconds)


def skip(session: Session, project_id: int, entry_id: int, annotator: str, seconds: float | None = None) -> Annotation:
    """Skip the held item. A skipped evaluation item leaves the set (it returns to the pool) and a random unlabeled,
    unqueued pool item takes its place at the end of the round's queue, so the set keeps its size."""
    row = _answer(session, project_id, entry_id, annotator, "skip", None, seconds)
    item = session.get(Item, row.item_id)
    if item.split == "eval":
        _replace_eval_item(session, project_id, item, session.get(QueueEntry, entry_id).round_id)
    return row


def add_copies(session: Session, round_: Round, project: Project, pool: bool = True) -> int:
    """Queue the further copies (1 .. overlap_k - 1) of the round's overlap items; returns how many entries were
    added. Overlap items: with `overlap_eval` every evaluation item; with `pool` a share `overlap` of the round's
    pool picks (rounded half up), drawn at random (seeded by the project, the round and its number of picks).
    Idempotent: items with copies keep them, and only the missing part of the share is drawn (a round filled in
    steps). Each copy sits at its item's queue position, so two annotators get it at about the same time."""
    k, share = max(2, int(project.overlap_k or 2)), float(project.overlap or 0)
    if not (project.overlap_eval or (pool and share > 0)):
        return 0
    rows = session.execute(
        select(QueueEntry, Item.split).join(Item, Item.id == QueueEntry.item_id)
        .where(QueueEntry.round_id == round_.id, QueueEntry.copy_index == 0, QueueEntry.state != "dropped")
        .order_by(QueueEntry.position)
    ).all()
    copied = set(session.scalars(select(QueueEntry.item_id).where(
        QueueEntry.round_id == round_.id, QueueEntry.copy_index > 0)))
    chosen = [entry for entry, split in rows if split == "eval" and entry.item_id not in copied] \
        if project.overlap_eval else []
    if pool and share > 0:
        picks = [entry for entry, split in rows if split == "pool" and entry.arm not in HAND_ARMS]
        want = int(share * len(picks) + 0.5) - sum(1 for entry in picks if entry.item_id in copied)
        fresh = [entry for entry in picks if entry.item_id not in copied and entry.state != "skipped"]
        if want > 0 and fresh:
            rng = np.random.default_rng([project.seed, round_.index, OVERLAP_STREAM, len(picks)])
            chosen += [fresh[i] for i in sorted(rng.permutation(len(fresh))[:want])]
    for entry in chosen:
        for copy_index in range(1, k):
            session.add(QueueEntry(round_id=round_.id, item_id=entry.item_id, position=entry.position, arm=entry.arm,
                                   score=entry.score, copy_index=copy_index))
    session.flush()
    return len(chosen) * (k - 1)


def pool_picks(session: Session, round_id: int) -> int:
    """The round's pool picks (copy 0 of each pool item queued, dropped and hand-picked ones left out): what its
    size counts."""
    return session.scalar(select(func.count()).select_from(QueueEntry).join(Item, Item.id == QueueEntry.item_id).where(
        QueueEntry.round_id == round_id, QueueEntry.copy_index == 0, QueueEntry.state != "dropped",
        Item.split == "pool", QueueEntry.arm.not_in(HAND_ARMS)))


def waiting_for_others(session: Session, round_id: int, annotator: str) -> int:
    """Free entries of the round that `annotator` may not take (copies of items they hold or answered): they
    wait for other annotators."""
    return session.scalar(select(func.count()).select_from(QueueEntry).where(
        QueueEntry.round_id == round_id, is_free(utcnow()), ~not_a_copy_of_mine(annotator)))


def _replace_eval_item(session: Session, project_id: int, skipped: Item, round_id: int) -> Item | None:
    labeled = select(Annotation.item_id).where(Annotation.project_id == project_id)
    queued = select(QueueEntry.item_id).join(Round, Round.id == QueueEntry.round_id).where(
        Round.project_id == project_id)
    free = list(session.scalars(select(Item.id).where(
        Item.project_id == project_id, Item.split == "pool", Item.id.not_in(labeled), Item.id.not_in(queued)
    ).order_by(Item.id)))
    skipped.split = "pool"
    if not free:
        return None
    # Seeded by the skipped item: the same history gives the same evaluation set.
    replacement = session.get(Item, free[random.Random(skipped.id).randrange(len(free))])
    replacement.split = "eval"
    project = session.get(Project, project_id)
    copies = max(2, int(project.overlap_k or 2)) if project.overlap_eval else 1
    position = next_position(session, round_id)
    for copy_index in range(copies):
        session.add(QueueEntry(round_id=round_id, item_id=replacement.id, position=position, arm="eval",
                               copy_index=copy_index))
    session.flush()
    return replacement


def _answer(
    session: Session, project_id: int, entry_id: int, annotator: str, kind: str, value: list[int] | None,
    seconds: float | None,
) -> Annotation:
    """Close the annotator's claim as labeled or skipped and append the matching annotation row."""
    return answer_held(session, project_id, _held_entry(session, entry_id, annotator), annotator, kind, value, seconds)


def answer_held(
    session: Session, project_id: int, entry: QueueEntry, annotator: str, kind: str, value: list[int] | None,
    seconds: float | None,
) -> Annotation:
    """`_answer` on an entry the caller has just locked (`_lock_entry`) and found held by `annotator`."""
    entry.state = "labeled" if kind == "label" else "skipped"
    row = Annotation(
        project_id=project_id,
        item_id=entry.item_id,
        annotator=annotator,
        kind=kind,
        value=value,
        round_id=entry.round_id,
        queue_entry_id=entry.id,
        seconds=seconds,
    )
    session.add(row)
    session.flush()
    _lock_round(session, entry.round_id)  # last, so the round's answers queue on it as briefly as possible
    return row


def undo_last(session: Session, project_id: int, annotator: str, lease_seconds: int = DEFAULT_LEASE_SECONDS) -> Annotation | None:
    """Retract the annotator's latest label or skip and hand its item back to them (`retract`, the one rule of
    every undo); returns the retracted annotation, or None when there is nothing to undo."""
    last = session.scalars(live_answers(project_id, annotator).order_by(Annotation.id.desc()).limit(1)).first()
    if last is None:
        return None
    retract(session, last, annotator, lease_seconds)
    return last


def retract(session: Session, answer: Annotation, annotator: str, lease_seconds: int) -> Annotation:
    """The one rule of an undo (Workbench.undo and the label surface's): a 'retract' row withdraws `answer`
    (append-only) and its queue entry is held by `annotator` again, whatever its round's state, so the item is
    the next one they see and the label they give replaces the retracted one (storage.labels.current_labels).

    When the answer closed its round (the round went to training, or is done), the round stays closed: the
    reopened entry comes first for that annotator (`claim_reopened`, storage.answers.claim_ahead), the label
    given then is used by the next training, and if its lease runs out unanswered the entry is dropped
    (`drop_expired_reopened`), its item unlabeled and free to be picked again, as after an early close. An answer
    given outside the queue (no entry) is only retracted. Returns the retract row; raises QueueError when another
    annotator holds the entry now.
    """
    entry = _lock_entry(session, answer.queue_entry_id) if answer.queue_entry_id is not None else None
    round_ = _lock_round(session, entry.round_id) if entry is not None else None
    if entry is not None and entry.state == "claimed" and entry.claimed_by not in (None, annotator):
        raise QueueError(f"item {entry.id} is held by {entry.claimed_by} now; your answer on it stays")
    row = Annotation(
        project_id=answer.project_id, item_id=answer.item_id, annotator=annotator, kind="retract", value=None,
        replaces_id=answer.id, round_id=answer.round_id, queue_entry_id=answer.queue_entry_id,
    )
    session.add(row)
    if entry is not None and round_ is not None:
        hold(entry, annotator, lease_seconds)
    session.flush()
    return row


def claim_reopened(session: Session, project_id: int, annotator: str,
                   lease_seconds: int = DEFAULT_LEASE_SECONDS) -> Claim | None:
    """The entry an undo handed back to `annotator` in a closed round of the project (the oldest round's first),
    its lease renewed; None when they hold none. Expired ones are dropped first (`drop_expired_reopened`)."""
    now = utcnow()
    if session.execute(_ANY_REOPENED, {"project_id": project_id}).first() is None:
        return None  # no entry of a closed round is held by anyone: nothing to drop, nothing to renew
    drop_expired_reopened(session, project_id, now)
    entry = session.scalars(_REOPENED, {"project_id": project_id, "annotator": annotator}).first()
    if entry is None:
        return None
    entry.lease_expires = now + timedelta(seconds=lease_seconds)
    session.flush()
    return claim_of(entry)


def drop_expired_reopened(session: Session, project_id: int, now: datetime) -> int:
    """Entries an undo reopened in a closed round and left unanswered past their lease: dropped (the round is
    closed, so nobody else would take them; their items have no label and may be picked again)."""
    return session.execute(_DROP_EXPIRED_REOPENED, {"project_id": project_id, "now": now}).rowcount


def release(session: Session, entry_id: int, annotator: str) -> None:
    """Give a claimed item back to the queue (annotator leaves); one an undo reopened in a closed round is dropped
    instead, as when its lease runs out (`retract`)."""
    round_state = session.scalar(
        select(Round.state).join(QueueEntry, QueueEntry.round_id == Round.id).where(QueueEntry.id == entry_id))
    session.execute(
        update(QueueEntry)
        .where(QueueEntry.id == entry_id, QueueEntry.state == "claimed", QueueEntry.claimed_by == annotator)
        .values(state="dropped" if round_state in CLOSED_ROUND_STATES else "pending", claimed_by=None,
                lease_expires=None)
    )


def round_counts(session: Session, round_id: int) -> dict[str, int]:
    rows = session.execute(_ROUND_COUNTS, {"round_id": round_id}).all()
    counts = {"pending": 0, "claimed": 0, "labeled": 0, "skipped": 0, "dropped": 0}
    counts.update({state: n for state, n in rows})
    return counts


def open_entries(session: Session, round_id: int) -> int:
    return session.scalar(_OPEN_ENTRIES, {"round_id": round_id})


def drop_open_entries(session: Session, round_id: int) -> int:
    """When a round is closed early, its unlabeled entries are dropped (their items may be selected again)."""
    result = session.execute(
        update(QueueEntry)
        .where(QueueEntry.round_id == round_id, QueueEntry.state.in_(OPEN_STATES))
        .values(state="dropped", claimed_by=None, lease_expires=None)
    )
    return result.rowcount


def queued_item_ids(session: Session, project_id: int) -> set[int]:
    """Items waiting in or held by any of the project's queues (pending, claimed or skipped), or answered (labeled,
    or disputed: waiting for adjudication, storage.labels): not to be picked again."""
    return set(session.scalars(
        select(QueueEntry.item_id)
        .join(Round, Round.id == QueueEntry.round_id)
        .where(Round.project_id == project_id, QueueEntry.state.in_(("pending", "claimed", "skipped")))
    )) | set(session.scalars(answered_item_ids(project_id)))


def next_position(session: Session, round_id: int) -> int:
    """The queue position after the round's last entry (0 for an empty queue)."""
    return session.scalar(
        select(func.coalesce(func.max(QueueEntry.position) + 1, 0)).where(QueueEntry.round_id == round_id)
    )


# The statements every claim and answer runs, built once: building a statement costs more than running it on
# SQLite, and a simulation runs them for every label.
_LABELING_ROUND = (select(Round).where(Round.project_id == bindparam("project_id"), Round.state == "labeling")
                   .order_by(Round.index.desc()))
_HELD = (
    select(QueueEntry)
    .where(QueueEntry.round_id == bindparam("round_id"), QueueEntry.state == "claimed",
           QueueEntry.claimed_by == bindparam("annotator"), QueueEntry.lease_expires >= bindparam("now"))
    .order_by(QueueEntry.position, QueueEntry.copy_index)
    .limit(1)
    .with_for_update(key_share=True)
    .execution_options(populate_existing=True)
)
_FREE_CANDIDATE = (
    select(QueueEntry.id, QueueEntry.round_id, QueueEntry.item_id, QueueEntry.position, QueueEntry.arm,
           QueueEntry.score)
    .where(QueueEntry.round_id == bindparam("round_id"), is_free(bindparam("now")),
           not_a_copy_of_mine(bindparam("annotator")))
    .order_by(QueueEntry.position, QueueEntry.copy_index)
    .limit(1)
    .with_for_update(skip_locked=True)
)
_TAKE = (
    update(QueueEntry)
    .where(QueueEntry.id == bindparam("candidate"), is_free(bindparam("now")))
    .values(state="claimed", claimed_by=bindparam("who"), lease_expires=bindparam("until"),
            claimed_at=bindparam("now"))
    .execution_options(synchronize_session=False)
)
_REOPENED = (
    select(QueueEntry)
    .join(Round, Round.id == QueueEntry.round_id)
    .where(Round.project_id == bindparam("project_id"), Round.state.in_(CLOSED_ROUND_STATES),
           QueueEntry.state == "claimed", QueueEntry.claimed_by == bindparam("annotator"))
    .order_by(Round.index, QueueEntry.position, QueueEntry.copy_index)
    .limit(1)
    .with_for_update(key_share=True, of=QueueEntry)
    .execution_options(populate_existing=True)
)
_ANY_REOPENED = (
    select(QueueEntry.id)
    .join(Round, Round.id == QueueEntry.round_id)
    .where(Round.project_id == bindparam("project_id"), Round.state.in_(CLOSED_ROUND_STATES),
           QueueEntry.state == "claimed")
    .limit(1)
)
_DROP_EXPIRED_REOPENED = (
    update(QueueEntry)
    .where(QueueEntry.round_id.in_(select(Round.id).where(Round.project_id == bindparam("project_id"),
                                                          Round.state.in_(CLOSED_ROUND_STATES))),
           QueueEntry.state == "claimed", QueueEntry.lease_expires < bindparam("now"))
    .values(state="dropped", claimed_by=None, lease_expires=None)
    .execution_options(synchronize_session=False)
)
_ROUND_COUNTS = (select(QueueEntry.state, func.count()).where(QueueEntry.round_id == bindparam("round_id"))
                 .group_by(QueueEntry.state))
_OPEN_ENTRIES = select(func.count()).select_from(QueueEntry).where(
    QueueEntry.round_id == bindparam("round_id"), QueueEntry.state.in_(OPEN_STATES))

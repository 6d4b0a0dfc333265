"""The label surface's server side: claim items ahead, apply batches of answers exactly once, renew leases.

A browser-side label surface (app/label_surface) holds the next few queue entries of the labeling round, answers
them locally the moment a key goes down, and sends every answer not yet acknowledged as one batch. Each answer is

    {"seq": int >= 1, "entry_id": int, "kind": "label" | "skip" | "undo", "value": [class index, ...], "seconds": float}

numbered by the client (`client_id`, one per browser tab) in the order it was given. `apply_answers` applies each
(annotator, client_id, seq) exactly once: the first time it writes an `AnswerReceipt` next to its effect (both or
neither, in one savepoint), a replay finds the receipt and returns the same outcome without writing. An answer that
names an entry this annotator does not hold (its lease expired and another annotator took it, it was answered
already, it is not this project's) is refused with a reason in words; it is never moved onto another entry.

Labels and skips go through storage.queue's `submit_label` / `skip`, so there is one way to answer an entry. An
undo retracts the annotator's live answer on the entry named and gives the entry back to that annotator, also when
its round has closed, by storage.queue.retract, the rule Workbench.undo follows too: the label given next replaces
the retracted one in storage.labels.current_labels (the latest live label row of an item wins), so the next
training uses it. A reopened entry of a closed round whose lease runs out unanswered is dropped (its item has no
label any more and may be picked again).

Leases are short (DEFAULT_LEASE_SECONDS): the surface heartbeats while its page is visible (`renew_leases`, and
every `claim_ahead` renews what the annotator holds), so a closed tab's items return to the queue within a minute.

Overlap items (storage.queue's module doc) are claimed with the same rule: never two copies of one item to one
annotator, also ahead and in two tabs.

Adjudication (`apply_adjudications`): the Adjudicate page's surface answers the review queue, the disputed items
(storage.labels), with the same exactly-once receipts. Its answers name an item (`entry_id` is the item's id) and
its client id is kept as `review:<client id>` (`review_client`), so its receipts never mix with the Label page's.
A label is stored as an 'adjudicate' row by the reviewer (append-only; every earlier answer stays) while the item
is still disputed; an undo retracts the reviewer's adjudication (the item is disputed again); a skip writes
nothing but the receipt and moves the item to the end of that reviewer's review queue.

Hand-picked labels (`apply_hand_labels`): the Grid page labels a page of items at once, each ticked item its own
answer with the same receipts. Its answers name an item (`entry_id` is the item's id) and its client id is kept as
`grid:<client id>` (`grid_client`); each label is given through the queue entry storage.hand_picks.claim_hand_picks
holds for the item in the current round (arm "grid", "like" or "map"), so the Label page's undo walks back over it
like any other answer.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Callable, Iterable

from sqlalchemy import case, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage import hand_picks, queue
from storage.labels import ADJUDICATE, DISPUTED, ItemLabel, disputed_items, item_labels
from storage.models import Annotation, AnswerReceipt, Item, Project, QueueEntry, Round, utcnow

DEFAULT_LEASE_SECONDS = queue.DEFAULT_LEASE_SECONDS
DEFAULT_AHEAD = 5
KINDS = ("label", "skip", "undo")
CLOSED_ROUND_STATES = queue.CLOSED_ROUND_STATES

REVIEW_CLIENT_PREFIX = "review:"

AfterAnswer = Callable[[Session, QueueEntry], None]
Applier = Callable[[Session, Project, str, dict], tuple[int | None, str | None]]


@dataclass(frozen=True)
class Outcome:
    """What became of one answer. `status`: 'applied', 'duplicate' (a replay of an applied answer: nothing was
    written) or 'refused' (`reason` says why; a replay of a refused answer is refused again with the same reason).
    `note` adds what the annotator may want to know about an applied answer (a closed round reopened)."""

    seq: int
    entry_id: int | None
    kind: str
    status: str
    reason: str | None = None
    note: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class BatchResult:
    outcomes: list[Outcome]  # one per answer of the batch, in seq order
    acked_seq: int  # the highest n such that every seq 1..n of this client has a receipt (0: none)

    def as_dict(self) -> dict:
        return {"outcomes": [o.as_dict() for o in self.outcomes], "acked_seq": self.acked_seq}


@dataclass(frozen=True)
class HistoryEntry:
    """One of the annotator's live answers (a label or a skip that no retraction withdrew)."""

    annotation_id: int
    entry_id: int | None
    item_id: int
    key: str
    kind: str
    value: list[int] | None
    round_id: int | None
    created_at: datetime


class AnswerRefused(Exception):
    """Raised inside one answer's savepoint: nothing it did is kept, a 'refused' receipt is written instead."""


# ----- holding entries ------------------------------------------------------------------------------------------------
def claim_ahead(
    session: Session, project_id: int, annotator: str, k: int = DEFAULT_AHEAD,
    lease_seconds: int = DEFAULT_LEASE_SECONDS,
) -> list[queue.Claim]:
    """Hold up to `k` entries for `annotator` and return every entry they hold, in the order to show them.

    First what they already hold (an entry reopened by an undo, in a closed round, comes first; then the labeling
    round's by queue position), every lease renewed; then, while fewer than `k`, the labeling round's next free
    entries (pending, or claimed with an expired lease) by position, each taken with the conditional UPDATE of
    storage.queue.claim_next, so two annotators never hold the same entry. More than `k` may come back when an undo
    reopened one. Reopened entries of closed rounds whose lease expired are dropped first (see the module doc).
    """
    now = utcnow()
    lease = now + timedelta(seconds=lease_seconds)
    queue.drop_expired_reopened(session, project_id, now)
    held = list(session.scalars(
        select(QueueEntry)
        .join(Round, Round.id == QueueEntry.round_id)
        .where(Round.project_id == project_id, QueueEntry.state == "claimed", QueueEntry.claimed_by == annotator)
        .order_by(case((Round.state == "labeling", 1), else_=0), Round.index, QueueEntry.position,
                  QueueEntry.copy_index)
        .with_for_update(key_share=True, of=QueueEntry)
        .execution_options(populate_existing=True)
    ))
    for entry in held:
        entry.lease_expires = lease
    session.flush()
    claims = [queue.claim_of(entry) for entry in held]
    round_ = queue.labeling_round(session, project_id)
    while round_ is not None and len(claims) < k:
        claim = queue.claim_free(session, round_.id, annotator, now, lease)
        if claim is None:
            break
        claims.append(claim)
    return claims


def renew_leases(
    session: Session, annotator: str, entry_ids: Iterable[int], lease_seconds: int = DEFAULT_LEASE_SECONDS
) -> list[int]:
    """The page's heartbeat: extend the lease of each entry of `entry_ids` that `annotator` still holds (also one
    whose lease just ran out, as long as nobody took it); returns the ids renewed. Entries not renewed return to
    the queue when their lease expires."""
    ids = sorted({int(i) for i in entry_ids})
    if not ids:
        return []
    lease = utcnow() + timedelta(seconds=lease_seconds)
    held = list(session.scalars(
        select(QueueEntry.id).where(
            QueueEntry.id.in_(ids), QueueEntry.state == "claimed", QueueEntry.claimed_by == annotator
        ).with_for_update(key_share=True)
    ))
    if held:
        session.execute(
            update(QueueEntry)
            .where(QueueEntry.id.in_(held), QueueEntry.state == "claimed", QueueEntry.claimed_by == annotator)
            .values(lease_expires=lease)
            .execution_options(synchronize_session=False)
        )
    return sorted(held)


def release_held(session: Session, project_id: int, annotator: str) -> list[int]:
    """Give back every entry `annotator` holds in the project's open rounds (state `claimed` -> `pending`); an
    entry reopened by an undo in a closed round is dropped, as an expired one is. Returns the ids released."""
    rows = session.execute(
        select(QueueEntry.id, Round.state)
        .join(Round, Round.id == QueueEntry.round_id)
        .where(Round.project_id == project_id, QueueEntry.state == "claimed", QueueEntry.claimed_by == annotator)
    ).all()
    open_ids = [i for i, state in rows if state not in CLOSED_ROUND_STATES]
    closed_ids = [i for i, state in rows if state in CLOSED_ROUND_STATES]
    for ids, state in ((open_ids, "pending"), (closed_ids, "dropped")):
        if ids:
            session.execute(
                update(QueueEntry)
                .where(QueueEntry.id.in_(ids), QueueEntry.state == "claimed", QueueEntry.claimed_by == annotator)
                .values(state=state, claimed_by=None, lease_expires=None)
                .execution_options(synchronize_session=False)
            )
    return sorted(open_ids + closed_ids)


# ----- applying answers -----------------------------------------------------------------------------------------------
def apply_answers(
    session: Session,
    project_id: int,
    annotator: str,
    client_id: str,
    answers: Iterable[dict],
    lease_seconds: int = DEFAULT_LEASE_SECONDS,
    after_answer: AfterAnswer | None = None,
    applier: Applier | None = None,
) -> BatchResult:
    """Apply a batch of answers (see the module doc) in seq order, each exactly once.

    `after_answer(session, entry)` runs after each applied label or skip, inside its savepoint (the app's round
    state machine: the last answer of a round sends it to training). An undo's entry is held again for
    `lease_seconds`. `applier(session, project, annotator, answer) -> (annotation id, note)` applies one new
    answer instead of the queue's rule (the review queue's `_adjudicate`); it raises AnswerRefused to refuse.
    Returns one Outcome per answer and the highest contiguous acknowledged seq of this client.
    """
    client_id = str(client_id or "").strip()[:64]
    if not client_id:
        raise ValueError("a label surface batch needs its client id")
    project = session.get(Project, project_id)
    if project is None:
        raise ValueError(f"project {project_id} does not exist")
    if applier is None:
        rounds: dict[int, Round] = {}  # held for the batch: the session's identity map keeps objects only weakly

        def applier(s: Session, p: Project, name: str, answer: dict) -> tuple[int | None, str | None]:
            return _apply(s, p, name, answer, lease_seconds, after_answer, rounds)
    parsed = sorted((_parse(raw) for raw in answers), key=lambda a: a["seq"])
    known = _receipts(session, annotator, client_id, [a["seq"] for a in parsed])
    outcomes = [_apply_once(session, project, annotator, client_id, answer, applier, known.get(answer["seq"]))
                for answer in parsed]
    return BatchResult(outcomes, last_acked_seq(session, client_id))


def _parse(raw: dict) -> dict:
    """The answer's fields, typed; a malformed answer keeps its seq (if any) and carries its problem."""
    problem = None
    try:
        seq = int(raw["seq"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"an answer without a whole-number seq: {raw!r}") from exc
    if seq < 1:
        raise ValueError(f"answer seq must be 1 or more, got {seq}")
    kind = raw.get("kind")
    if kind not in KINDS:
        problem = f"unknown kind of answer {kind!r} (one of {', '.join(KINDS)})"
    try:
        entry_id = int(raw["entry_id"])
    except (KeyError, TypeError, ValueError):
        entry_id, problem = None, problem or "the answer names no queue entry"
    value = raw.get("value")
    if kind == "label":
        try:
            value = sorted({int(v) for v in (value or [])})
        except (TypeError, ValueError):
            value, problem = None, problem or f"label value {raw.get('value')!r} is not a list of class indices"
    else:
        value = None
    seconds = raw.get("seconds")
    try:
        seconds = None if seconds is None else max(0.0, float(seconds))
    except (TypeError, ValueError):
        seconds = None
    return {"seq": seq, "entry_id": entry_id, "kind": str(kind), "value": value, "seconds": seconds,
            "problem": problem}


def _apply_once(
    session: Session, project: Project, annotator: str, client_id: str, answer: dict, applier: Applier,
    receipt: AnswerReceipt | None,
) -> Outcome:
    """One answer and its receipt, in one savepoint; a refusal undoes whatever the answer had begun and writes a
    'refused' receipt instead. `receipt`: the one this seq already has (a replay), if any."""
    seq, entry_id, kind = answer["seq"], answer["entry_id"], answer["kind"]
    if receipt is not None:
        return _replayed(receipt, answer)
    try:
        try:
            with session.begin_nested():
                if answer["problem"]:
                    raise AnswerRefused(answer["problem"])
                annotation_id, note = applier(session, project, annotator, answer)
                _write_receipt(session, project, annotator, client_id, answer, "applied", note, annotation_id)
            return Outcome(seq, entry_id, kind, "applied", None, note)
        except AnswerRefused as refusal:
            with session.begin_nested():
                _write_receipt(session, project, annotator, client_id, answer, "refused", str(refusal), None)
            return Outcome(seq, entry_id, kind, "refused", str(refusal), None)
    except IntegrityError:  # the same seq applied meanwhile by a concurrent request (its savepoint is undone)
        receipt = _receipts(session, annotator, client_id, [seq]).get(seq)
        if receipt is None:  # another person queued the same item at the same moment (two grids, PostgreSQL)
            return Outcome(seq, entry_id, kind, "refused", "someone else took this item at the same moment; "
                                                           "nothing was saved for it", None)
        return _replayed(receipt, answer)


def _write_receipt(session: Session, project: Project, annotator: str, client_id: str, answer: dict, status: str,
                   reason: str | None, annotation_id: int | None) -> None:
    """The receipt of an answer: its status, and the refusal's reason or the applied answer's note."""
    session.add(AnswerReceipt(
        project_id=project.id, annotator=annotator, client_id=client_id, seq=answer["seq"],
        entry_id=answer["entry_id"], kind=answer["kind"], value=answer["value"], status=status, reason=reason,
        annotation_id=annotation_id,
    ))
    session.flush()


def _receipts(session: Session, annotator: str, client_id: str, seqs: list[int]) -> dict[int, AnswerReceipt]:
    """The receipts these seqs of this client already have, by seq."""
    if not seqs:
        return {}
    return {r.seq: r for r in session.scalars(select(AnswerReceipt).where(
        AnswerReceipt.annotator == annotator, AnswerReceipt.client_id == client_id, AnswerReceipt.seq.in_(seqs)))}


def _replayed(receipt: AnswerReceipt, answer: dict) -> Outcome:
    same = (receipt.entry_id, receipt.kind, receipt.value) == (answer["entry_id"], answer["kind"], answer["value"])
    if not same:
        return Outcome(answer["seq"], answer["entry_id"], answer["kind"], "refused",
                       f"answer number {answer['seq']} of this browser tab was already used for another answer "
                       f"({receipt.kind} on entry {receipt.entry_id}); this one was not stored (a copied tab?)")
    if receipt.status == "refused":
        return Outcome(receipt.seq, receipt.entry_id, receipt.kind, "refused", receipt.reason)
    return Outcome(receipt.seq, receipt.entry_id, receipt.kind, "duplicate", None, receipt.reason)


def _apply(
    session: Session, project: Project, annotator: str, answer: dict, lease_seconds: int,
    after_answer: AfterAnswer | None, rounds: dict[int, Round],
) -> tuple[int | None, str | None]:
    """Apply one new answer; (annotation id, note). Raises AnswerRefused (with the reason in words). `rounds`: the
    rounds the batch has read so far, by id."""
    entry_id, kind = answer["entry_id"], answer["kind"]
    entry = queue._lock_entry(session, entry_id)
    round_ = None
    if entry is not None:
        round_ = rounds.get(entry.round_id) or session.get(Round, entry.round_id)
        if round_ is not None:
            rounds[round_.id] = round_
    if entry is None or round_ is None or round_.project_id != project.id:
        raise AnswerRefused(f"queue entry {entry_id} is not an item of this project")
    if kind == "undo":
        return _undo(session, project, annotator, entry, round_, lease_seconds)
    if entry.state != "claimed" or entry.claimed_by != annotator:
        raise AnswerRefused(_not_held(entry, annotator))
    if kind == "label":
        value = _checked_value(project, answer["value"])
        row = queue.answer_held(session, project.id, entry, annotator, "label", value, answer["seconds"])
    else:
        row = queue.skip(session, project.id, entry.id, annotator, answer["seconds"])
    note = None
    if round_.state in CLOSED_ROUND_STATES:
        note = f"round {round_.index} is closed; the next training uses this answer"
    if after_answer is not None:
        after_answer(session, entry)
    return row.id, note


def _checked_value(project: Project, value: list[int]) -> list[int]:
    bad = [v for v in value if not 0 <= v < len(project.classes)]
    if bad:
        raise AnswerRefused(f"label {value} names no class of {list(project.classes)}")
    if project.task == "single_label" and len(value) != 1:
        raise AnswerRefused(f"label {value} must name exactly one class (a single-label project)")
    return value


def _not_held(entry: QueueEntry, annotator: str) -> str:
    if entry.state == "claimed":
        return (f"item {entry.id} is held by {entry.claimed_by}, not by you (your hold on it may have run out "
                "while the page was closed or hidden); your answer was not stored")
    if entry.state in ("labeled", "skipped"):
        return f"item {entry.id} was already answered ({entry.state}); this answer was not stored"
    if entry.state == "dropped":
        return f"item {entry.id} left the queue when its round was closed; this answer was not stored"
    return (f"item {entry.id} went back to the queue after your hold on it ran out; this answer was not stored "
            "(it will be shown again)")


def _undo(
    session: Session, project: Project, annotator: str, entry: QueueEntry, round_: Round, lease_seconds: int
) -> tuple[int | None, str | None]:
    """Retract the annotator's live answer on `entry` and hold the entry for them again, whatever its round's
    state (storage.queue.retract: the rule Workbench.undo follows too)."""
    live = queue.live_answers(project.id, annotator).where(Annotation.queue_entry_id == entry.id)
    last = session.scalars(live.order_by(Annotation.id.desc()).limit(1)).first()
    if last is None:
        raise AnswerRefused(f"item {entry.id} has no answer of yours to undo")
    try:
        row = queue.retract(session, last, annotator, lease_seconds)
    except queue.QueueError as refusal:
        raise AnswerRefused(str(refusal)) from refusal
    note = None
    if round_.state != "labeling":
        note = (f"round {round_.index} is {round_.state}: the item is yours again; the label you give now "
                "replaces the old one and the next training uses it")
    return row.id, note


# ----- reading what the surface shows ---------------------------------------------------------------------------------
def last_acked_seq(session: Session, client_id: str | None) -> int:
    """The highest seq n such that this client's answers 1..n all have receipts (0 when none or no client id).

    A client id is one browser tab's (a random UUID), so its seqs are counted whatever annotator name or project
    each answer was given under (a tab may change either while answers are on their way)."""
    if not client_id:
        return 0
    seqs = session.scalars(
        select(AnswerReceipt.seq).where(AnswerReceipt.client_id == client_id).order_by(AnswerReceipt.seq)
    )
    acked = 0
    for seq in seqs:
        if seq != acked + 1:
            break
        acked = seq
    return acked


def refusals(session: Session, client_id: str | None, limit: int = 10) -> list[Outcome]:
    """This client's latest refused answers (newest first), for the surface to tell the annotator."""
    if not client_id:
        return []
    rows = session.scalars(
        select(AnswerReceipt)
        .where(AnswerReceipt.client_id == client_id, AnswerReceipt.status == "refused")
        .order_by(AnswerReceipt.seq.desc())
        .limit(limit)
    )
    return [Outcome(r.seq, r.entry_id, r.kind, "refused", r.reason) for r in rows]


def history(session: Session, project_id: int, annotator: str, limit: int = 20) -> list[HistoryEntry]:
    """The annotator's latest live answers in the project (labels and skips not retracted), newest first."""
    rows = session.execute(
        queue.live_answers(project_id, annotator)
        .add_columns(Item.key)
        .join(Item, Item.id == Annotation.item_id)
        .order_by(Annotation.id.desc())
        .limit(limit)
    ).all()
    return [
        HistoryEntry(a.id, a.queue_entry_id, a.item_id, key, a.kind, None if a.value is None else list(a.value),
                     a.round_id, a.created_at)
        for a, key in rows
    ]


def item_files(session: Session, item_ids: Iterable[int]) -> dict[int, tuple[str, str]]:
    """item id -> (key, split) (never the gold label)."""
    ids = sorted({int(i) for i in item_ids})
    if not ids:
        return {}
    return {i: (key, split) for i, key, split in session.execute(
        select(Item.id, Item.key, Item.split).where(Item.id.in_(ids)))}


def round_index_state(session: Session, round_ids: Iterable[int]) -> dict[int, tuple[int, str, str]]:
    """round id -> (index, state, strategy)."""
    ids = sorted({int(i) for i in round_ids})
    if not ids:
        return {}
    return {i: (index, state, strategy) for i, index, state, strategy in session.execute(
        select(Round.id, Round.index, Round.state, Round.strategy).where(Round.id.in_(ids)))}


def arms(session: Session, entry_ids: Iterable[int]) -> dict[int, str]:
    """queue entry id -> the arm that chose it."""
    ids = sorted({int(i) for i in entry_ids})
    if not ids:
        return {}
    return dict(session.execute(select(QueueEntry.id, QueueEntry.arm).where(QueueEntry.id.in_(ids))).all())


def can_claim(session: Session, project_id: int, annotator: str) -> bool:
    """Whether `annotator` holds an entry of the project or could take one from its labeling round now (a pending
    entry, or a claim whose lease ran out): the Label page's waiting view looks with it, cheaply."""
    held = select(QueueEntry.id).join(Round, Round.id == QueueEntry.round_id).where(
        Round.project_id == project_id, QueueEntry.state == "claimed", QueueEntry.claimed_by == annotator)
    if session.scalars(held.limit(1)).first() is not None:
        return True
    round_ = queue.labeling_round(session, project_id)
    if round_ is None:
        return False
    free = select(QueueEntry.id).where(QueueEntry.round_id == round_.id, queue.is_free(utcnow()),
                                       queue.not_a_copy_of_mine(annotator))
    return session.scalars(free.limit(1)).first() is not None


# ----- adjudication: the review queue of disputed items -----------------------------------------------------------------
def review_client(client_id: str | None) -> str | None:
    """The client id the review queue's receipts are kept under (module doc)."""
    client_id = str(client_id or "").strip()
    return (REVIEW_CLIENT_PREFIX + client_id)[:64] if client_id else None


def apply_adjudications(session: Session, project_id: int, reviewer: str, client_id: str,
                        answers: Iterable[dict]) -> BatchResult:
    """Apply a batch from the review queue's surface exactly once (module doc); `client_id` is the tab's own."""
    return apply_answers(session, project_id, reviewer, review_client(client_id) or "", answers, applier=_adjudicate)


def _adjudicate(session: Session, project: Project, reviewer: str, answer: dict) -> tuple[int | None, str | None]:
    item_id, kind = answer["entry_id"], answer["kind"]
    # A row lock on the item orders two reviewers' answers on it (PostgreSQL): the second sees the first's.
    item = session.get(Item, item_id, populate_existing=True, with_for_update={"key_share": True})
    if item is None or item.project_id != project.id:
        raise AnswerRefused(f"item {item_id} is not an item of this project")
    name = item.key.rsplit("/", 1)[-1]
    state = item_labels(session, project.id, item_ids=[item.id]).get(item.id)
    if kind == "undo":
        mine = [a for a in (state.answers if state else ()) if a.kind == ADJUDICATE and a.annotator == reviewer]
        if mine:
            row = Annotation(project_id=project.id, item_id=item.id, annotator=reviewer, kind="retract",
                             replaces_id=mine[-1].annotation_id)
            session.add(row)
            session.flush()
            return row.id, f"{name} is disputed again"
        if _last_review_answer(session, project.id, reviewer, item.id) == "skip":
            return None, None  # a skip taken back: the item is no longer last in the queue
        raise AnswerRefused(f"{name} has no adjudication of yours to undo")
    if kind == "skip":
        return None, None
    if state is None or state.status != DISPUTED:
        if state is not None and state.label is not None and state.label.adjudicated:
            raise AnswerRefused(f"{name} was adjudicated by {state.label.annotator} meanwhile; yours was not stored")
        raise AnswerRefused(f"{name} is no longer disputed (an answer was withdrawn or agrees now); "
                            "yours was not stored")
    row = Annotation(project_id=project.id, item_id=item.id, annotator=reviewer, kind=ADJUDICATE,
                     value=_checked_value(project, answer["value"]), seconds=answer["seconds"])
    session.add(row)
    session.flush()
    return row.id, None


def _review_receipts(project_id: int, reviewer: str):
    return select(AnswerReceipt).where(
        AnswerReceipt.project_id == project_id, AnswerReceipt.annotator == reviewer, AnswerReceipt.status == "applied",
        AnswerReceipt.client_id.startswith(REVIEW_CLIENT_PREFIX, autoescape=True))


def _last_review_answer(session: Session, project_id: int, reviewer: str, item_id: int) -> str | None:
    return session.scalar(_review_receipts(project_id, reviewer).with_only_columns(AnswerReceipt.kind)
                          .where(AnswerReceipt.entry_id == item_id).order_by(AnswerReceipt.id.desc()).limit(1))


def review_queue(session: Session, project_id: int, reviewer: str) -> list[ItemLabel]:
    """The disputed items in the order the reviewer is shown them: the longest disputed first, those the reviewer
    skipped (their latest review answer on it) last, in the order skipped."""
    items = disputed_items(session, project_id)
    last: dict[int, tuple[int, str]] = {}
    for receipt_id, item_id, kind in session.execute(
            _review_receipts(project_id, reviewer).with_only_columns(
                AnswerReceipt.id, AnswerReceipt.entry_id, AnswerReceipt.kind).order_by(AnswerReceipt.id)):
        last[item_id] = (receipt_id, kind)
    skipped = {item_id: receipt_id for item_id, (receipt_id, kind) in last.items() if kind == "skip"}
    return ([state for state in items if state.item_id not in skipped]
            + sorted((state for state in items if state.item_id in skipped), key=lambda s: skipped[s.item_id]))


def review_history(session: Session, project_id: int, reviewer: str, limit: int = 20) -> list[HistoryEntry]:
    """The reviewer's live adjudications in the project, newest first (entry_id: the item's id)."""
    retracted = select(Annotation.replaces_id).where(
        Annotation.project_id == project_id, Annotation.kind == "retract", Annotation.replaces_id.is_not(None))
    rows = session.execute(
        select(Annotation, Item.key).join(Item, Item.id == Annotation.item_id)
        .where(Annotation.project_id == project_id, Annotation.annotator == reviewer, Annotation.kind == ADJUDICATE,
               Annotation.id.not_in(retracted))
        .order_by(Annotation.id.desc()).limit(limit)
    ).all()
    return [HistoryEntry(a.id, a.item_id, a.item_id, key, "label", list(a.value or []), None, a.created_at)
            for a, key in rows]


# ----- hand-picked labels: the grid page ------------------------------------------------------------------------------
GRID_CLIENT_PREFIX = "grid:"


def grid_client(client_id: str | None) -> str | None:
    """The client id the grid page's receipts are kept under: `grid:<client id>`, never mixed with the Label
    page's."""
    client_id = str(client_id or "").strip()
    return (GRID_CLIENT_PREFIX + client_id)[:64] if client_id else None


def apply_hand_labels(session: Session, project_id: int, annotator: str, client_id: str, answers: Iterable[dict],
                      arm: str, lease_seconds: int = DEFAULT_LEASE_SECONDS,
                      after_answer: AfterAnswer | None = None) -> BatchResult:
    """Apply a batch from the grid page exactly once (the receipts of `apply_answers`): each answer names an item
    (`entry_id` is the item's id, as on the review queue) and labels it, through the queue entry
    storage.hand_picks.claim_hand_picks holds for it (new entries get `arm`). An item labeled meanwhile, held by
    someone else or of the evaluation set is refused with the reason; only labels are taken."""

    def label(s: Session, project: Project, name: str, answer: dict) -> tuple[int | None, str | None]:
        if answer["kind"] != "label":
            raise AnswerRefused(f"the grid gives labels only, not {answer['kind']!r}")
        value = _checked_value(project, answer["value"])
        try:
            picks = hand_picks.claim_hand_picks(s, project.id, name, [answer["entry_id"]], arm, lease_seconds)
        except hand_picks.HandPickError as refusal:
            raise AnswerRefused(str(refusal)) from refusal
        if not picks.claims:
            raise AnswerRefused(f"{picks.skipped[answer['entry_id']]}; this answer was not stored")
        row = queue.submit_label(s, project.id, picks.claims[0].entry_id, name, value, answer["seconds"])
        if after_answer is not None:
            after_answer(s, s.get(QueueEntry, picks.claims[0].entry_id))
        return row.id, None

    return apply_answers(session, project_id, annotator, grid_client(client_id) or "", answers, applier=label)

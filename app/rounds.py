"""The round state machine, inside a write transaction (shared by the verbs and the worker). Every change of a
round's state is one of the functions here:

    open_round          -> selecting
    start_labeling      selecting -> labeling    (its picks are queued)
    end_without_picks   selecting -> done        (nothing was left to pick)
    send_to_training    labeling  -> training    (its queue is done, or it was closed early)
                        and, when it ranked items ahead, the next round -> labeling at once (open_ahead)
    selection_filled    labeling (awaiting its selection) -> labeling, or -> training when nothing is left open
    finish_training     training  -> done        (its head is trained and evaluated)
    after_training      the next round's selection is queued: the round opened ahead gets its select job, else a
                        new round opens (when the project opens rounds by itself)

No waiting at a round boundary (project setting `pick_ahead`, default 5; 0 turns it off). A batch round's select
job ranks `pick_ahead` items beyond the round's size and keeps them on the round (`Round.ranked_ahead`). When the
round goes to training, the next round opens at once in `labeling`, awaiting its own selection, with those items
queued (after any evaluation item still open, in its seeded random order): labeling goes on with the rest of the
previous ranking while the head trains. The round records how many it took (`picked_ahead`) and whose ranking
(`picked_ahead_by`, a round index), and its note says so; the entries keep the arm and score that ranked them.
The training's job, once the head is stored, queues the next round's select job (`after_training`): it runs with
the new head, after the training by construction, and fills the round up to its size (budget: round size minus
the picks taken ahead). Until then the round cannot go to training, even when its picked-ahead items are all
answered (the annotator then waits, as without pick-ahead), nor be closed early.

When the next round does not open ahead (it opens as before, after the training):
- pick_ahead is 0, the project does not open rounds by itself, or the ranking left nothing open (the pool ran out);
- the round's strategy is sequential (GALAXY, DIRECT): each pick needs the labels before it, so there is no ranking
  to continue; such a round keeps SEQUENTIAL_LOOKAHEAD picks ahead within itself;
- the next round would run another strategy or other parameters than the one that ranked: the ranking is not the
  next round's. Round 0 without a model is the exception: its picks are random (no model yet), so a few more random
  picks begin round 1 while the first head trains.

At most round_size - 1 items are taken ahead: the new head always chooses part of the round.

Overlap (project settings `overlap`, `overlap_eval`, `overlap_k`): once a round's picks are known its overlap items
get their further copies (`queue_copies`, storage.queue.add_copies), each for another annotator; the round is
answered when every copy is. A batch round copies when it starts labeling; a round opened ahead copies its
evaluation items at once and its pool picks once its own selection filled it (`selection_filled`); a sequential
round copies its pool picks once the last one is queued (`after_answer`). Copies are added after the picks they
copy, so they never take a place of the round's size.
"""
from __future__ import annotations

import json
from functools import lru_cache

import numpy as np
from sqlalchemy.orm import Session, object_session

from app import job_kinds
from learners.strategies import get_strategy
from storage import jobs, queue
from storage.files import latest_artifact
from storage.labels import current_labels
from storage.models import Project, Round, utcnow
from storage.rounds import add_entries, next_round_index, open_items, round_after, round_picks

SEQUENTIAL_LOOKAHEAD = 2  # picks a sequential strategy keeps queued ahead, so an annotator never waits
COLD_START = "random"  # round 0's strategy when there is no model yet
EVAL_ORDER_STREAM = 1  # a seed stream of its own: the evaluation order does not shift the strategies' draws


def open_round(s: Session, project: Project, strategy: str | None = None, params: dict | None = None,
               select: bool = True) -> Round:
    """A new round in state 'selecting' with its select job (`select=False`: without; open_ahead queues its
    first items itself). Round 0 is random (no model yet), unless the project started from a source head: then that
    head's predictions feed the project's strategy from round 0."""
    index = next_round_index(s, project.id)
    if strategy is None:
        cold = index == 0 and latest_artifact(s, project.id, "head") is None
        strategy = COLD_START if cold else project.strategy
    if params is None:
        params = {} if strategy != project.strategy else dict(project.strategy_params or {})
    round_ = Round(
        project_id=project.id,
        index=index,
        strategy=strategy,
        strategy_params=params,
        state="selecting",
        labels_at_start=len(current_labels(s, project.id, split="pool")),
    )
    s.add(round_)
    s.flush()
    if select:
        job_kinds.enqueue(s, "select", project.id, round_.id)
    return round_


def pick_ahead(project: Project, sequential: bool) -> int:
    """How many items a round's selection ranks beyond its size for the next round (0: none)."""
    if sequential or not project.auto_next_round:
        return 0
    return max(0, min(int(project.pick_ahead or 0), project.round_size - 1))


def eval_order(project: Project, round_index: int, item_ids: list[int]) -> list[int]:
    """Evaluation items in the order a round queues them: random, seeded by the project and the round (never by
    path, which would group them by class folder and give the answers away)."""
    order = np.random.default_rng([project.seed, round_index, EVAL_ORDER_STREAM]).permutation(len(item_ids))
    return [int(item_ids[k]) for k in order]


def start_labeling(round_: Round, note: str | None) -> None:
    round_.note = note
    round_.labeling_at = utcnow()
    round_.state = "labeling"
    s = object_session(round_)
    if s is not None:
        queue_copies(s, round_, s.get(Project, round_.project_id))


def queue_copies(s: Session, round_: Round, project: Project) -> int:
    """The copies of the round's overlap items its picks call for now (the module doc); returns how many were
    added. Pool picks are copied only once the round has all of them."""
    if round_.awaiting_selection:
        pool = False
    elif is_sequential(round_.strategy, round_.strategy_params):
        pool = queue.pool_picks(s, round_.id) >= project.round_size
    else:
        pool = True
    return queue.add_copies(s, round_, project, pool=pool)


def is_sequential(strategy: str, params: dict | None = None) -> bool:
    """Whether a round of `strategy` with `params` picks one item after each label (GALAXY, DIRECT; TAILOR unless
    update="round"): read from an instance, since a parameter may decide it."""
    if strategy == COLD_START:
        return False
    return _sequential(strategy, json.dumps(params or {}, sort_keys=True))


@lru_cache(maxsize=256)
def _sequential(strategy: str, params_json: str) -> bool:
    return bool(get_strategy(strategy, **json.loads(params_json)).sequential)


def end_without_picks(round_: Round, note: str | None) -> None:
    round_.note = note
    round_.labeling_at = utcnow()
    round_.state = "done"


def send_to_training(s: Session, round_: Round) -> None:
    round_.state = "training"
    round_.closed_at = utcnow()
    job_kinds.enqueue(s, "train", round_.project_id, round_.id)
    open_ahead(s, s.get(Project, round_.project_id), round_)


def open_ahead(s: Session, project: Project, round_: Round) -> Round | None:
    """The next round, opened now in 'labeling' with the items `round_`'s selection ranked ahead (see the module
    doc), or None when it does not open ahead. Runs once per round: the next round is opened here or after the
    training, never both (a round index is unique in a project)."""
    ranked = list(round_.ranked_ahead or [])
    if not ranked or not project.auto_next_round or next_round_index(s, project.id) != round_.index + 1:
        return None
    strategy, params = project.strategy, dict(project.strategy_params or {})
    if is_sequential(strategy, params):
        return None
    cold = round_.index == 0 and round_.strategy == COLD_START
    if not cold and (round_.strategy, dict(round_.strategy_params or {})) != (strategy, params):
        return None
    limit = pick_ahead(project, sequential=False)
    still_open = set(open_items(s, project.id, "pool", [item_id for item_id, _, _ in ranked]))
    picks = [(int(item_id), arm, score) for item_id, arm, score in ranked if item_id in still_open][:limit]
    if not picks:
        return None
    next_ = open_round(s, project, strategy, params, select=False)
    evals = [(item_id, "eval", None) for item_id in eval_order(project, next_.index, open_items(s, project.id, "eval"))]
    add_entries(s, next_.id, evals + picks)
    whose = round_.strategy + (": no model yet" if cold else "")
    next_.picked_ahead = len(picks)
    next_.picked_ahead_by = round_.index
    next_.awaiting_selection = True  # before start_labeling: its pool picks are copied once the round is filled
    start_labeling(next_, f"{len(picks)} items picked ahead from round {round_.index}'s ranking ({whose}), "
                          f"labeled while round {round_.index} trains")
    return next_


def selection_filled(s: Session, round_: Round, note: str | None) -> None:
    """A round opened ahead got its own selection (with the new head): it may now end like any round."""
    round_.awaiting_selection = False
    if note:
        round_.note = (round_.note + "; " if round_.note else "") + note
    queue_copies(s, round_, s.get(Project, round_.project_id))
    if queue.open_entries(s, round_.id) == 0:
        send_to_training(s, round_)


def finish_training(round_: Round, metrics: dict, note: str) -> None:
    """Store the trained head's metrics; the note is added to the selection's."""
    round_.metrics = metrics
    round_.note = (round_.note + "; " if round_.note else "") + note
    round_.state = "done"
    round_.done_at = utcnow()


def after_training(s: Session, project: Project, round_: Round) -> None:
    """In the transaction that stores `round_`'s head: the next round's selection, so it runs with that head (after
    the training, by construction). A round opened ahead gets its select job, which fills it; else, when the
    project opens rounds by itself and no later round exists, a new round opens."""
    following = round_after(s, round_)
    if following is not None:
        if following.awaiting_selection and following.state == "labeling":
            job_kinds.enqueue(s, "select", project.id, following.id, {"fill": True})
        return
    if project.auto_next_round:
        open_round(s, project)


def after_answer_of(s: Session, answered) -> None:
    """`after_answer` for the round of an answered queue entry or annotation (anything with a `round_id`): the
    hook storage.answers.apply_answers and the verbs run after each label or skip."""
    round_ = s.get(Round, answered.round_id)
    project = s.get(Project, round_.project_id)
    after_answer(s, round_, project, sequential=is_sequential(round_.strategy, round_.strategy_params))


def after_answer(s: Session, round_: Round, project: Project, sequential: bool) -> None:
    """After a label or skip: a sequential round asks the worker for its next pick; a finished round trains (not
    one opened ahead whose own selection is still to come)."""
    if round_.state != "labeling":
        return
    if sequential and round_picks(s, round_.id)[0] < project.round_size:
        if not jobs.is_queued(s, round_.id, "select"):
            job_kinds.enqueue(s, "select", project.id, round_.id, {"next": True})
        return
    if sequential:  # its last pick is queued: now its overlap items are known
        queue_copies(s, round_, project)
    if queue.open_entries(s, round_.id) == 0 and not round_.awaiting_selection:
        send_to_training(s, round_)

"""The label surface's verbs: what the browser component is given (`surface_data`) and what it sends (`receive`).

The page (app/pages/label.py, through app.label_surface.show) calls `receive` with the batch the component sent,
which applies the answers exactly once (storage.answers) and runs the round state machine after each (app.rounds),
then `surface_data` to build the component's next data: the entries held for the annotator (claimed ahead), each
with its image, the round's progress, the model's guess, the class keys and the annotator's last answers.

The Adjudicate page mounts the same component on the review queue (`review_data`, `receive_review`): the disputed
items (storage.labels), each captioned with the answers given and who gave them; a class key stores the reviewer's
final label exactly once (storage.answers.apply_adjudications), u undoes it, s leaves the item for later.

No SQL here: the queries are storage.answers'; images are read and encoded once (a small in-process cache).
"""
from __future__ import annotations

import base64
import io
import logging
import threading
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from app import rounds
from app.read_models import prediction_rows
from app.settings import Settings
from app.ui import image_problem, load_for_display, shortcut_keys
from learners.images import read_image
from learners.neighbours import cosine_neighbours, most_confident
from storage import answers, hand_picks, queue
from storage.db import Database
from storage.files import DamagedFile, latest_artifact, load_matrix
from storage.labels import ItemLabel
from storage.models import Project
from storage.rounds import latest_round
from storage.source_heads import backbone_key

HISTORY_SIZE = 20
REVIEW_AHEAD = 10  # disputed items the review surface is given at once
THUMB_SIDE = 72
GUESS_TOP = 3
JPEG_QUALITY = 88

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SurfaceOptions:
    """How the surface behaves; every field is sent to the browser in data["settings"] or used here."""

    ahead: int = answers.DEFAULT_AHEAD  # entries held for the annotator (the one on screen and the next ones)
    lease_seconds: int = answers.DEFAULT_LEASE_SECONDS  # an entry not renewed for this long returns to the queue
    guard_ms: int = 120  # a press this soon after a new image is painted is ignored (a bounce, a double press)
    repress_ms: int = 350  # the same answer again this soon after the last one is ignored ("did it register?")
    heartbeat_ms: int = 15_000  # while the page is visible the component renews its leases this often
    resend_ms: int = 2_500  # unacknowledged answers are sent again after this long
    accept_keys: tuple[str, ...] = ("Enter", " ")  # single-label: accept the model's guess
    history: int = HISTORY_SIZE

    @classmethod
    def from_settings(cls, settings: Settings) -> SurfaceOptions:
        """The options the workbench's settings give (lease, guard time, items ahead); the heartbeat renews the
        leases four times per lease (at most every 15 s), so a lease runs out only when the tab is gone."""
        lease = max(2, int(settings.lease_seconds))
        return cls(ahead=settings.label_ahead, lease_seconds=lease, guard_ms=settings.guard_ms,
                   repress_ms=settings.repress_ms,
                   heartbeat_ms=min(15_000, lease * 1000 // 4))

    def browser_settings(self) -> dict:
        return {"guard_ms": self.guard_ms, "repress_ms": self.repress_ms, "heartbeat_ms": self.heartbeat_ms, "resend_ms": self.resend_ms,
                "accept_keys": list(self.accept_keys)}




# ----- receiving ------------------------------------------------------------------------------------------------------
def receive(db: Database, project_id: int, annotator: str, batch: dict,
            options: SurfaceOptions = SurfaceOptions(), signed_in: bool = False) -> dict:
    """Apply a batch from the component: {"client_id", "answers": [...], "held": [entry ids]}.

    Each answer is applied to the project and under the annotator it carries (stamped by the component when its key
    went down; so answers given before a project or name change still land where they were given), else to
    `project_id` / `annotator`. With `signed_in` (the session's name comes from its sign-in, app.people_admin)
    every answer is applied under `annotator`, whatever name it carries: a browser cannot answer, or undo, as
    anyone else. The leases of `held` are renewed for `annotator`. Returns
    {"acked_seq": int, "outcomes": [Outcome.as_dict()], "renewed": [entry ids]}.
    """
    client_id = _client_id(batch)
    groups = _groups(batch, project_id, annotator, signed_in)
    outcomes: list[dict] = []
    with db.write() as s:
        renewed = answers.renew_leases(s, _name(annotator), _ids(batch.get("held")), options.lease_seconds)
        for (pid, name), group in groups.items():
            result = answers.apply_answers(s, pid, name, client_id, group, options.lease_seconds,
                                           after_answer=rounds.after_answer_of)
            outcomes.extend(o.as_dict() for o in result.outcomes)
        acked = answers.last_acked_seq(s, client_id)
    return {"acked_seq": acked, "outcomes": sorted(outcomes, key=lambda o: o["seq"]), "renewed": renewed}


def _client_id(batch: dict) -> str:
    client_id = str(batch.get("client_id") or "").strip()[:64]
    if not client_id:
        raise ValueError("the label surface sent a batch without its client id")
    return client_id


def _groups(batch: dict, project_id: int, annotator: str, signed_in: bool) -> dict[tuple[int, str], list[dict]]:
    """The batch's answers by the (project, annotator) each is applied under (see `receive`)."""
    groups: dict[tuple[int, str], list[dict]] = {}
    for raw in batch.get("answers") or []:
        if not isinstance(raw, dict):
            continue
        claimed = annotator if signed_in else (raw.get("annotator") or annotator)
        where = (int(raw.get("project_id") or project_id), _name(claimed))
        groups.setdefault(where, []).append(raw)
    return groups


def receive_review(db: Database, project_id: int, reviewer: str, batch: dict, signed_in: bool = False) -> dict:
    """Apply a batch from the review queue's surface (the Adjudicate page), as `receive` does for the Label page:
    each answer exactly once, under `reviewer` when `signed_in`. Returns {"acked_seq", "outcomes", "renewed": []}."""
    client_id = _client_id(batch)
    outcomes: list[dict] = []
    with db.write() as s:
        for (pid, name), group in _groups(batch, project_id, reviewer, signed_in).items():
            result = answers.apply_adjudications(s, pid, name, client_id, group)
            outcomes.extend(o.as_dict() for o in result.outcomes)
        acked = answers.last_acked_seq(s, answers.review_client(client_id))
    return {"acked_seq": acked, "outcomes": sorted(outcomes, key=lambda o: o["seq"]), "renewed": []}


def _ids(values) -> list[int]:
    out = []
    for v in values or []:
        try:
            out.append(int(v))
        except (TypeError, ValueError):
            continue
    return out


def _name(annotator: str) -> str:
    name = (annotator or "").strip()[:100]
    if not name:
        raise ValueError("an annotator name is needed")
    return name


def release_held(db: Database, project_id: int, annotator: str) -> list[int]:
    """Give back every entry `annotator` holds in the project's labeling round (an annotator renamed in the
    sidebar: the old name's items go back to the queue at once); returns their ids."""
    with db.write() as s:
        return answers.release_held(s, project_id, _name(annotator))


# ----- the component's data -------------------------------------------------------------------------------------------
def surface_data(db: Database, project_id: int, annotator: str, client_id: str | None = None,
                 options: SurfaceOptions = SurfaceOptions(), instance: str = "label_surface",
                 error: str | None = None) -> dict:
    """The data the label surface is mounted with (the contract is in app/label_surface/__init__.py).

    Claims ahead (storage.answers.claim_ahead: up to `options.ahead` entries, leases renewed), so calling it is
    also the heartbeat of a rerun. `client_id` is the component's (from its last batch), for the acknowledgements.
    """
    annotator = _name(annotator)
    with db.write() as s:
        project = s.get(Project, project_id)
        if project is None:
            raise ValueError(f"project {project_id} does not exist")
        classes, task, data_root = list(project.classes), project.task, project.data_root
        claims = answers.claim_ahead(s, project_id, annotator, options.ahead, options.lease_seconds)
        files = answers.item_files(s, [c.item_id for c in claims])
        round_info = answers.round_index_state(s, [c.round_id for c in claims])
        arm_of = answers.arms(s, [c.entry_id for c in claims])
        labeling = queue.labeling_round(s, project_id)
        counts = queue.round_counts(s, labeling.id) if labeling is not None else None
        waiting = queue.waiting_for_others(s, labeling.id, annotator) if labeling is not None and not claims else 0
        latest = latest_round(s, project_id) if labeling is None else labeling
        latest_view = None if latest is None else (latest.index, latest.state, latest.strategy)
        predictions = latest_artifact(s, project_id, "predictions")
        past = answers.history(s, project_id, annotator, options.history)
        past_files = answers.item_files(s, [h.item_id for h in past])
        acked = answers.last_acked_seq(s, client_id)
        refused = answers.refusals(s, client_id)
    probs = prediction_rows(predictions)
    keys = shortcut_keys(classes)
    items = []
    for claim in claims:
        key, split = files[claim.item_id]
        path = Path(data_root) / key
        image_url, thumb_url, problem = _urls(path, image_problem(path, data_root))
        index, state, strategy = round_info[claim.round_id]
        item = {
            "entry_id": claim.entry_id,
            "item_id": claim.item_id,
            "caption": Path(key).name,  # the file name only: a class folder in the path would give the answer away
            "image": image_url,
            "thumb": thumb_url,
            "problem": problem,
            "split": split,
            "round_index": index,
            "reopened": state != "labeling",
            "chosen_by": _chosen_by(split, arm_of.get(claim.entry_id) or "", strategy),
            "guess": None,
            "guess_tags": None,
        }
        if probs is not None:
            item["guess"], item["guess_tags"] = _guess(probs, claim.item_id, task)
        items.append(item)
    history = []
    for h in past:
        key = past_files.get(h.item_id, ("", ""))[0]
        path = Path(data_root) / key
        label = "skipped" if h.kind == "skip" else (", ".join(classes[k] for k in h.value or []) or "none of these")
        history.append({
            "entry_id": h.entry_id, "kind": h.kind, "value": h.value, "label": label, "caption": Path(key).name,
            "thumb": _urls(path, image_problem(path, data_root), image=False)[1],
            "project_id": project_id, "annotator": annotator,
        })
    round_view = None
    if counts is not None:
        round_view = {"index": labeling.index, "state": "labeling",
                      "done": counts["labeled"] + counts["skipped"],
                      "total": sum(counts.values()) - counts["dropped"]}
    return {
        "instance": instance,
        "project_id": project_id,
        "annotator": annotator,
        "task": task,
        "classes": [{"index": k, "name": name, "key": keys[k]} for k, name in enumerate(classes)],
        "items": items,
        "round": round_view,
        "empty_reason": None if items else _empty_reason(latest_view, waiting),
        "history": history,  # newest first
        "client_id": client_id,
        "acked_seq": acked,
        "refusals": [o.as_dict() for o in refused],
        "settings": options.browser_settings(),
        "error": error,
        "more_like_this": task == "single_label",  # the grid page (app/pages/grid.py) labels single-label only
    }


def review_data(db: Database, project_id: int, reviewer: str, client_id: str | None = None,
                options: SurfaceOptions = SurfaceOptions(), instance: str = "review_surface",
                error: str | None = None) -> dict:
    """The label surface's data for the review queue (the contract of app/label_surface/__init__.py): the
    disputed items, the longest disputed first (those this reviewer skipped last), each item's `entry_id` its item
    id and its caption the answers given with who gave them; the history is the reviewer's adjudications."""
    reviewer = _name(reviewer)
    review_client = answers.review_client(client_id)
    with db.read() as s:
        project = s.get(Project, project_id)
        if project is None:
            raise ValueError(f"project {project_id} does not exist")
        classes, task, data_root = list(project.classes), project.task, project.data_root
        waiting = answers.review_queue(s, project_id, reviewer)
        files = answers.item_files(s, [state.item_id for state in waiting[:REVIEW_AHEAD]])
        predictions = latest_artifact(s, project_id, "predictions")
        past = answers.review_history(s, project_id, reviewer, options.history)
        past_files = answers.item_files(s, [h.item_id for h in past])
        acked = answers.last_acked_seq(s, review_client)
        refused = answers.refusals(s, review_client)
    probs = prediction_rows(predictions)
    keys = shortcut_keys(classes)
    items = []
    for state in waiting[:REVIEW_AHEAD]:
        key, split = files[state.item_id]
        path = Path(data_root) / key
        image_url, thumb_url, problem = _urls(path, image_problem(path, data_root))
        item = {"entry_id": state.item_id, "item_id": state.item_id,
                "caption": f"{Path(key).name} · answers: {answers_caption(state, classes)}",
                "image": image_url, "thumb": thumb_url, "problem": problem, "split": split, "round_index": None,
                "reopened": False, "chosen_by": None, "guess": None, "guess_tags": None}
        if probs is not None:
            item["guess"], item["guess_tags"] = _guess(probs, state.item_id, task)
        items.append(item)
    history = []
    for h in past:
        key = past_files.get(h.item_id, ("", ""))[0]
        path = Path(data_root) / key
        history.append({
            "entry_id": h.item_id, "kind": "label", "value": h.value, "label": _value_words(h.value, classes),
            "caption": Path(key).name, "thumb": _urls(path, image_problem(path, data_root), image=False)[1],
            "project_id": project_id, "annotator": reviewer,
        })
    return {
        "instance": instance, "project_id": project_id, "annotator": reviewer, "task": task,
        "classes": [{"index": k, "name": name, "key": keys[k]} for k, name in enumerate(classes)],
        "items": items, "round": None,
        "progress": f"{len(waiting)} disputed item{'s' if len(waiting) != 1 else ''} to adjudicate",
        "empty_reason": None if items else ("No disputed item is waiting: every item answered by several "
                                            "annotators agrees or was adjudicated."),
        "history": history, "client_id": client_id, "acked_seq": acked,
        "refusals": [o.as_dict() for o in refused], "settings": options.browser_settings(), "error": error,
    }


def answers_caption(state: ItemLabel, classes: list[str]) -> str:
    """The answers an item was given, with who gave them: "alice: cat · bob: dog"."""
    given = [f"{a.annotator}: {'skipped' if a.kind == 'skip' else _value_words(a.value, classes)}"
             for a in state.answers if a.kind in ("label", "skip")]
    return " · ".join(given)


def _value_words(value: list[int] | None, classes: list[str]) -> str:
    return ", ".join(classes[k] for k in value or [] if 0 <= k < len(classes)) or "none of these"


def _chosen_by(split: str, arm: str, strategy: str) -> str:
    """Who chose the item, in words; a per-class arm ("most_likely:3") would hint at the answer: the algorithm only."""
    if split == "eval":
        return "the evaluation set (random, never trained on)"
    arm = arm.partition(":")[0]
    return f"{strategy} ({arm} arm)" if arm and arm != strategy else (arm or strategy)


def can_claim(db: Database, project_id: int, annotator: str) -> bool:
    """Whether the annotator holds or could take an item now (storage.answers.can_claim)."""
    with db.read() as s:
        return answers.can_claim(s, project_id, _name(annotator))


def _empty_reason(latest: tuple[int, str, str] | None, waiting_for_others: int = 0) -> str:
    if latest is None:
        return "This project has no round yet."
    index, state, strategy = latest
    if state == "selecting":
        return f"Round {index} is being selected ({strategy}); items appear once it is queued."
    if state == "training":
        return f"Round {index} is closed: the model is training on the labels so far."
    if state == "labeling" and waiting_for_others:
        return (f"The rest of round {index} is for other annotators: {waiting_for_others} item(s) go to several "
                "people each, and you already answered (or hold) them. The round closes once they are answered.")
    if state == "labeling":
        return f"Every item of round {index} is taken by another annotator; free items will show up here."
    return f"Round {index} is done."


def _guess(probs: tuple[np.ndarray, dict[int, int]], item_id: int, task: str):
    """(top-3 [{"class", "p"}], multi-label: the tags at 0.5 or more) of the latest head, or (None, None)."""
    matrix, rows = probs
    row = rows.get(item_id)
    if row is None:
        return None, None
    scores = matrix[row]
    order = np.argsort(-scores)[:GUESS_TOP]
    top = [{"class": int(k), "p": round(float(scores[k]), 4)} for k in order]
    tags = [int(k) for k in np.argsort(-scores) if scores[k] >= 0.5] if task == "multi_label" else None
    return top, tags


# ----- images ---------------------------------------------------------------------------------------------------------
def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


@lru_cache(maxsize=512)
def _image_url(path: str, mtime: float) -> str:
    """The image as a data: URL, small images enlarged with nearest-neighbour (app.ui.load_for_display)."""
    with Image.open(path) as original:
        fmt = original.format
    return _data_url(load_for_display(Path(path)), fmt)


def _urls(path: Path, problem: str | None, image: bool = True) -> tuple[str | None, str | None, str | None]:
    """(image, thumb, problem) of an item: an image that fails to encode becomes the item's problem (the page
    shows it with Skip) rather than an exception that would leave the annotator with no buttons."""
    if problem:
        return None, None, problem
    try:
        full = _image_url(str(path), _mtime(path)) if image else None
        return full, _thumb_url(str(path), _mtime(path)), None
    except Exception as error:  # PIL raises OSError, ValueError, SyntaxError, ... for files changed since import
        _log.warning("cannot show %s: %s: %s", path, type(error).__name__, error)
        return None, None, f"cannot be shown ({type(error).__name__}: {error})"


@lru_cache(maxsize=2048)
def _thumb_url(path: str, mtime: float, side: int = THUMB_SIDE) -> str:
    with Image.open(path) as original:
        fmt = original.format
    image = read_image(path, gray=True)  # as display and model read it: upright, 8-bit
    longest = max(image.size)
    if longest < side:
        factor = max(1, side // longest)
        image = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    else:
        image.thumbnail((side, side))
    return _data_url(image, fmt)


def _data_url(image: Image.Image, fmt: str | None) -> str:
    buf = io.BytesIO()
    if fmt == "JPEG":
        image.convert("RGB").save(buf, format="JPEG", quality=JPEG_QUALITY)
        mime = "image/jpeg"
    else:
        if image.mode not in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"):
            image = image.convert("RGBA")
        image.save(buf, format="PNG", optimize=False)
        mime = "image/png"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"



# ----- the grid: several items labeled at once (app/pages/grid.py, app/label_grid) -----------------------------------
GRID_SIZE = 20  # thumbnails on a page
GRID_THUMB_SIDE = 112
MAX_GRID_ITEMS = hand_picks.MAX_ITEMS
GRID_MODES = {"grid": "grid", "like": "like", "items": "map"}  # page mode -> the arm of its queue entries

_features: tuple[str, np.ndarray, np.ndarray] | None = None
_features_lock = threading.Lock()


@dataclass(frozen=True)
class GridOptions:
    size: int = GRID_SIZE
    guard_ms: int = 120  # a key this soon after a new page is painted is ignored
    resend_ms: int = 2_500
    lease_seconds: int = answers.DEFAULT_LEASE_SECONDS

    def browser_settings(self) -> dict:
        return {"guard_ms": self.guard_ms, "resend_ms": self.resend_ms}


def receive_grid(db: Database, project_id: int, annotator: str, batch: dict, options: GridOptions = GridOptions(),
                 signed_in: bool = False) -> dict:
    """Apply a batch from the grid component: {"client_id", "answers": [{"seq", "entry_id" (the item id), "kind":
    "label", "value", "seconds", "project_id", "annotator", "arm"}]}; each answer exactly once
    (storage.answers.apply_hand_labels), under `annotator` when `signed_in`, with the round state machine after each
    label. Returns {"acked_seq", "outcomes"}."""
    client_id = _client_id(batch)
    by_arm: dict[str, list[dict]] = {}
    for raw in batch.get("answers") or []:
        if isinstance(raw, dict):
            arm = raw.get("arm") if raw.get("arm") in hand_picks.HAND_ARMS else "grid"
            by_arm.setdefault(arm, []).append(raw)
    outcomes: list[dict] = []
    with db.write() as s:
        for arm, raws in by_arm.items():
            for (pid, name), group in _groups({"answers": raws}, project_id, annotator, signed_in).items():
                result = answers.apply_hand_labels(s, pid, name, client_id, group, arm, options.lease_seconds,
                                                   after_answer=rounds.after_answer_of)
                outcomes.extend(o.as_dict() for o in result.outcomes)
        acked = answers.last_acked_seq(s, answers.grid_client(client_id))
    return {"acked_seq": acked, "outcomes": sorted(outcomes, key=lambda o: o["seq"])}


def is_item_id(text: str) -> bool:
    """Plain ASCII digits of a number a database id can hold ("²" is a digit to str.isdigit, 2**63 too large)."""
    return text.isascii() and text.isdigit() and len(text) <= 18


def parse_item_ids(text: str | None) -> list[int]:
    """The item ids of `?items=12,15,...` in their order (duplicates once); ValueError past MAX_GRID_ITEMS."""
    ids = list(dict.fromkeys(int(part) for part in str(text or "").replace(" ", "").split(",")
                             if is_item_id(part)))
    if len(ids) > MAX_GRID_ITEMS:
        raise ValueError(f"{len(ids)} items asked for; a grid takes at most {MAX_GRID_ITEMS}")
    return ids


def _cached_features(artifact) -> tuple[np.ndarray, np.ndarray] | None:
    """The features file's (matrix, ids), read once per file (like app.read_models.prediction_rows)."""
    global _features
    if artifact is None:
        return None
    with _features_lock:
        if _features is None or _features[0] != artifact.path:
            try:
                matrix, ids = load_matrix(artifact)
            except DamagedFile:
                return None
            _features = (artifact.path, matrix, ids)
        return _features[1], _features[2]


def grid_data(db: Database, project_id: int, annotator: str, mode: str = "grid", *, page_class: int | None = None,
              like: int | None = None, item_ids: list[int] | None = None, client_id: str | None = None,
              options: GridOptions = GridOptions(), instance: str = "label_grid", error: str | None = None,
              passed: dict | None = None) -> dict:
    """The data the grid component is mounted with (the contract is in app/label_grid/__init__.py).

    mode "grid": the `options.size` open pool items (not labeled, not queued, not evaluation) the latest
    predictions give the highest probability of `page_class`; "like": the item `like` first, then its
    `options.size - 1` nearest open pool items by cosine on the latest features (learners.neighbours); "items":
    `item_ids` as given, less those labeled since. Items that cannot be labeled by hand now are shown locked,
    with the reason. `passed` (from the component: context -> item ids left unticked on an accepted page) leaves
    those out of the pages of the same context."""
    if mode not in GRID_MODES:
        raise ValueError(f"grid mode {mode!r} is not one of {', '.join(GRID_MODES)}")
    annotator = _name(annotator)
    with db.read() as s:
        project = s.get(Project, project_id)
        if project is None:
            raise ValueError(f"project {project_id} does not exist")
        classes, task, data_root = list(project.classes), project.task, project.data_root
        predictions = latest_artifact(s, project_id, "predictions")
        features = latest_artifact(s, project_id, "features", backbone=backbone_key(project.backbone)) \
            if mode == "like" else None
        closed = hand_picks.closed_items(s, project_id) if mode != "items" else None
        labeled = hand_picks.labeled_items(s, project_id, item_ids or []) if mode == "items" else set()
        acked = answers.last_acked_seq(s, answers.grid_client(client_id))
        refused = answers.refusals(s, answers.grid_client(client_id))
    probs = prediction_rows(predictions)
    chosen = zlib.crc32(",".join(map(str, item_ids or [])).encode())
    context = {"grid": f"grid:{page_class}", "like": f"like:{like}", "items": f"items:{chosen:08x}"}[mode]
    skip = _passed(passed, context)

    def open_ids(ids: np.ndarray) -> np.ndarray:
        """The ids of `ids` a page may offer: open pool items, less those left unticked on this context's pages."""
        ids = np.asarray(ids, dtype=np.int64)
        return ids[~np.isin(ids, np.concatenate([closed, np.fromiter(skip, dtype=np.int64, count=len(skip))]))]
    empty_reason, shown, seed = None, [], None
    if task != "single_label":
        empty_reason = "The grid labels single-label projects only (a multi-label item needs its own set of tags)."
    elif mode == "grid":
        if probs is None:
            empty_reason = "No model yet: the grid shows what the first trained model predicts as one class."
        elif page_class is None or not 0 <= page_class < len(classes):
            empty_reason = "Pick the class of the page."
        else:
            ids = _ids_of(probs)
            shown = [i for i, _ in most_confident(probs[0], ids, page_class, open_ids(ids), options.size)]
            if not shown:
                empty_reason = f"No open pool item left for {classes[page_class]}."
    elif mode == "like":
        matrix = _cached_features(features)
        if like is None:
            empty_reason = "No item to find neighbours of."
        elif matrix is None:
            empty_reason = "This project's features are not computed yet (its embed job runs first)."
        else:
            try:
                near = cosine_neighbours(matrix[0], matrix[1], like, open_ids(matrix[1]), options.size - 1)
            except KeyError as missing:
                empty_reason = f"No neighbours: {missing.args[0]}."
            else:
                seed, shown = like, [like, *(i for i, _ in near)]
    else:
        shown = [i for i in list(item_ids or [])[:MAX_GRID_ITEMS] if i not in skip and i not in labeled]
        if not item_ids:
            empty_reason = "No item ids given (?items=1,2,3)."
        elif not shown:
            empty_reason = "Every chosen item is labeled now, or was left unticked here."
    with db.read() as s:
        locked = hand_picks.not_pickable(s, project_id, annotator, shown)
        files = answers.item_files(s, shown)
    if page_class is None and seed is not None and probs is not None and seed in probs[1]:
        page_class = int(np.argmax(probs[0][probs[1][seed]]))  # the model's guess of the item asked about
    keys = shortcut_keys(classes)
    items = []
    for item_id in shown:
        key = files.get(item_id, ("", ""))[0]
        path = Path(data_root) / key
        problem = image_problem(path, data_root) if key else "not an item of this project"
        thumb, problem = _grid_thumb(path, problem)
        p = None
        if probs is not None and item_id in probs[1] and page_class is not None:
            p = round(float(probs[0][probs[1][item_id]][page_class]), 4)
        items.append({"item_id": item_id, "caption": Path(key).name, "thumb": thumb,
                      "problem": problem, "locked": locked.get(item_id) or problem, "seed": item_id == seed,
                      "p": p})
    page_key = f"{mode}:{page_class}:{seed}:" + ",".join(map(str, shown))
    return {
        "instance": instance, "project_id": project_id, "annotator": annotator, "task": task, "mode": mode,
        "arm": GRID_MODES[mode], "context": context, "page_class": page_class, "page_key": page_key,
        "classes": [{"index": k, "name": name, "key": keys[k]} for k, name in enumerate(classes)],
        "items": items, "empty_reason": None if items else empty_reason, "client_id": client_id,
        "acked_seq": acked, "refusals": [o.as_dict() for o in refused], "settings": options.browser_settings(),
        "error": error,
    }


def _passed(passed: dict | None, context: str) -> set[int]:
    """The item ids the component left unticked in `context` (whatever a browser sent: ids only)."""
    values = passed.get(context) if isinstance(passed, dict) else None
    return set(_ids(values if isinstance(values, list) else []))


def _ids_of(probs: tuple[np.ndarray, dict[int, int]]) -> np.ndarray:
    """The item id of each row of the predictions matrix."""
    rows = probs[1]
    ids = np.zeros(len(probs[0]), dtype=np.int64)
    ids[np.fromiter(rows.values(), np.int64, len(rows))] = np.fromiter(rows.keys(), np.int64, len(rows))
    return ids


def _grid_thumb(path: Path, problem: str | None) -> tuple[str | None, str | None]:
    if problem:
        return None, problem
    try:
        return _thumb_url(str(path), _mtime(path), GRID_THUMB_SIDE), None
    except Exception as error:  # as _urls: a file changed since import is the item's problem, not the page's
        _log.warning("cannot show %s: %s: %s", path, type(error).__name__, error)
        return None, f"cannot be shown ({type(error).__name__}: {error})"

"""Export labels (CSV, JSONL, an ImageFolder zip, a Hugging Face imagefolder zip), every item with its label and
prediction (Parquet), the label order (every answer in the order it was given, with `replay_label_order`) and
predictions; the table of formats is app.exports.

Exports carry the labels people gave (storage.labels' rule), never an import's gold labels.

Spreadsheet formula guard: every text cell of a CSV we write that starts with one of = + - @ tab CR (which
Excel, LibreOffice and Google Sheets could run as a formula) gets a leading apostrophe; so does a cell that
already starts with an apostrophe, which keeps the guard reversible. `read_csv_labels` and the manifest importer
strip it again, so exported CSVs round-trip exactly. Numbers are written as numbers and never guarded.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.errors import StorageError
from storage.importers import FORMULA_PREFIXES, MULTI_LABEL_SEPARATOR, NAME_MAX_BYTES, unguard_cell
from storage.labels import ADJUDICATED, _state, current_labels, item_labels
from storage.models import Annotation, Item, Project, QueueEntry, Round

CSV_COLUMNS = ["path", "label", "split", "annotator", "labeled_at"]
ZIP_SPLIT_FOLDERS = {"pool": "train", "eval": "eval"}  # Hugging Face's imagefolder reads eval/ as its test split
UNLABELED = "unlabeled"  # an ItemRow's status when no one labeled the item (the others are storage.labels')
HF_METADATA = "metadata.parquet"  # the Hugging Face imagefolder's metadata file, one per split folder
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed entry times make the same export give the same bytes
_UNSAFE_CHARS = re.compile(r'[/\\:*?"<>|\x00-\x1f\x7f]')
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul"} | {f"{p}{i}" for p in ("com", "lpt") for i in range(1, 10)}


class ExportProblem(StorageError, ValueError):
    """An export cannot be made (an image file is missing, a stored label names no class, ...)."""


@dataclass
class ExportedAnswer:
    """One answer an item was given (JSONL's `answers`): an annotator's label or skip, a reviewer's adjudication."""

    annotator: str
    kind: str  # "label", "skip", "adjudicate", "relabel" or "confirm" (storage.labels.Answer)
    labels: list[str] | None  # class names (None for a skip)
    at: datetime


@dataclass
class LabeledRow:
    item_id: int
    key: str
    split: str
    labels: list[str]  # class names: the final label (storage.labels.current_labels)
    annotator: str  # who gave it (the reviewer, when adjudicated)
    labeled_at: datetime
    adjudicated: bool = False
    answers: list[ExportedAnswer] = field(default_factory=list)  # every live answer of the item, oldest first


def labeled_rows(session: Session, project_id: int) -> list[LabeledRow]:
    """Every item's final label (storage.labels' rule: retracted answers excluded, several annotators' answers
    agreeing or adjudicated; a disputed item has none yet), in the order the labels were given, each with every
    answer the item was given."""
    project = session.get(Project, project_id)
    if project is None:
        raise ExportProblem(f"project {project_id} does not exist")
    classes = list(project.classes)
    states = item_labels(session, project_id)
    current = sorted((state.label for state in states.values() if state.label is not None),
                     key=lambda c: c.annotation_id)
    items = {
        item_id: (key, split)
        for item_id, key, split in session.execute(
            select(Item.id, Item.key, Item.split).where(Item.project_id == project_id)
        )
    }
    rows: list[LabeledRow] = []
    for label in current:
        key, split = items[label.item_id]
        names = _class_names(project, key, label.value)
        given = [ExportedAnswer(a.annotator, a.kind, None if a.value is None else
                                [classes[i] if 0 <= i < len(classes) else str(i) for i in a.value], a.created_at)
                 for a in states[label.item_id].answers]
        rows.append(LabeledRow(label.item_id, key, split, names, label.annotator, label.created_at,
                               states[label.item_id].status == ADJUDICATED, given))
    return rows


def _class_names(project: Project, key: str, value: list[int]) -> list[str]:
    classes = list(project.classes)
    bad = [i for i in value if not 0 <= i < len(classes)]
    if bad:
        raise ExportProblem(f"{key}: stored label index {bad[0]} is not a class of {project.name!r} ({classes})")
    return [classes[i] for i in value]


@dataclass
class ItemRow:
    """One item of a project, labeled or not (the Parquet export's row)."""

    item_id: int
    key: str  # the path under the data root
    split: str
    status: str  # storage.labels' "labeled", "adjudicated" or "disputed", or UNLABELED
    labels: list[str] | None  # the final label's class names; None when the item has none (unlabeled, disputed)
    annotator: str | None  # who gave the final label (the reviewer, when adjudicated)
    labeled_at: datetime | None
    annotators: list[str]  # who answered it with a label (or adjudicated, confirmed it), first answer first
    prediction: list[str] | None = None  # the latest head's class (multi-label: its tags), None without a head
    confidence: float | None = None  # its probability (multi-label: of the least certain tag decision)


def item_rows(session: Session, project_id: int,
              predictions: tuple[np.ndarray, np.ndarray] | None = None) -> list[ItemRow]:
    """Every item of the project in id order, with its final label (as `labeled_rows`), who answered it and,
    given `predictions` (probabilities, the item ids of their rows: a predictions artifact), the head's
    prediction; an item the artifact does not cover has none."""
    project = session.get(Project, project_id)
    if project is None:
        raise ExportProblem(f"project {project_id} does not exist")
    classes, multi_label = list(project.classes), project.task == "multi_label"
    predicted: dict[int, np.ndarray] = {}
    if predictions is not None:
        probs, ids = predictions
        if probs.ndim != 2 or probs.shape[1] != len(classes):
            raise ExportProblem(f"the latest predictions have shape {probs.shape}, not one column per class of "
                                f"{project.name!r} ({len(classes)}): train again to export them")
        predicted = {int(i): row for i, row in zip(ids, probs)}
    states = item_labels(session, project_id)
    rows: list[ItemRow] = []
    for item_id, key, split in session.execute(
            select(Item.id, Item.key, Item.split).where(Item.project_id == project_id).order_by(Item.id)):
        state = states.get(item_id)
        label = state.label if state is not None else None
        answered = [a.annotator for a in (state.answers if state else ()) if a.kind != "skip"]
        row = ItemRow(item_id, key, split, state.status if state else UNLABELED,
                      _class_names(project, key, label.value) if label else None,
                      label.annotator if label else None, label.created_at if label else None,
                      list(dict.fromkeys(answered)))
        if item_id in predicted:
            row.prediction, row.confidence = _predicted(predicted[item_id], classes, multi_label)
        rows.append(row)
    return rows


def _predicted(probs: np.ndarray, classes: list[str], multi_label: bool) -> tuple[list[str], float]:
    """The predicted class names of one row of probabilities and their confidence: the arg-max class and its
    probability; multi-label: every tag with probability >= 0.5 and min_k max(p_k, 1 - p_k)."""
    if multi_label:
        return [c for c, p in zip(classes, probs) if p >= 0.5], float(np.maximum(probs, 1 - probs).min())
    best = int(np.argmax(probs))
    return [classes[best]], float(probs[best])


# ---------------------------------------------------------------------------------------------------------------
# CSV / JSONL


def guard_cell(value: str) -> str:
    """Prefix an apostrophe to a text cell a spreadsheet could read as a formula (or one starting with ')."""
    if value and (value[0] in FORMULA_PREFIXES or value[0] == "'"):
        return "'" + value
    return value


def to_csv(rows: list[LabeledRow], paths: list[str] | None = None) -> bytes:
    """UTF-8 CSV (no BOM) with columns path,label,split,annotator,labeled_at; formula-guarded (module docstring).

    Several labels of one item are joined with ';'. `labeled_at` is ISO 8601 in UTC. `paths` replaces each row's
    key in the path column (the zip export uses it to point at the files inside the zip).
    """
    if paths is not None and len(paths) != len(rows):
        raise ValueError(f"got {len(paths)} paths for {len(rows)} rows")
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for n, row in enumerate(rows):
        path = paths[n] if paths is not None else row.key
        label = MULTI_LABEL_SEPARATOR.join(row.labels)
        writer.writerow([guard_cell(v) for v in (path, label, row.split, row.annotator, _iso(row.labeled_at))])
    return out.getvalue().encode("utf-8")


def to_jsonl(rows: list[LabeledRow], multi_label: bool = False) -> bytes:
    """UTF-8 JSON lines with path, label (the final label), split, annotator, labeled_at, adjudicated, answers
    (ensure_ascii=False).

    `label` is the class name for single-label projects (null when an item has no class, a list when a
    single-label project somehow holds several); with `multi_label` it is always a list of names. `adjudicated`:
    whether a reviewer chose the label after several annotators disagreed. `answers`: every answer the item was
    given, oldest first, as {"annotator", "kind" ("label", "skip", "adjudicate", "relabel", "confirm"), "value"
    (written as `label` is; null for a skip), "at"}.
    """
    lines = []
    for row in rows:
        obj = {"path": row.key, "label": _json_label(row.labels, multi_label), "split": row.split,
               "annotator": row.annotator, "labeled_at": _iso(row.labeled_at), "adjudicated": row.adjudicated,
               "answers": [{"annotator": a.annotator, "kind": a.kind,
                            "value": None if a.labels is None else _json_label(a.labels, multi_label),
                            "at": _iso(a.at)} for a in row.answers]}
        lines.append(json.dumps(obj, ensure_ascii=False) + "\n")
    return "".join(lines).encode("utf-8")


def _json_label(labels: list[str], multi_label: bool) -> str | list[str] | None:
    if multi_label or len(labels) > 1:
        return list(labels)
    return labels[0] if labels else None


def to_parquet(rows: list[ItemRow], data_root: Path, multi_label: bool = False) -> bytes:
    """A Parquet table of every item (`item_rows`), one row each, in item id order. Columns:

    item_id (int64); path (the key under the data root) and absolute_path (under `data_root` resolved); split
    ("pool" or "eval"); label (the final label: a string, or list<string> of tags for a multi-label project;
    null when the item has none, [] is a multi-label 'none of these'); status ("labeled", "adjudicated",
    "disputed": annotators disagree, no label until a reviewer adjudicates, or "unlabeled"); annotator (who gave
    the label) and labeled_at (a UTC timestamp), both null without a label; annotators (list<string>: who
    answered the item with a label, adjudication or confirmation, skips left out); prediction (the latest head's
    class, or list<string> of its tags, as `label`; null before the first training) and confidence (float32, its
    probability; multi-label: of the least certain tag decision).

    A single-label project that somehow holds several labels for an item gets list columns too.
    """
    root = Path(data_root).resolve()
    as_lists = multi_label or any(len(names) > 1 for row in rows for names in (row.labels or [], row.prediction or []))
    label_type = pa.list_(pa.string()) if as_lists else pa.string()

    def cell(names: list[str] | None) -> list[str] | str | None:
        if names is None or as_lists:
            return names
        return names[0] if names else None

    table = pa.table({
        "item_id": pa.array([row.item_id for row in rows], pa.int64()),
        "path": pa.array([row.key for row in rows], pa.string()),
        "absolute_path": pa.array([str(root.joinpath(*PurePosixPath(row.key).parts)) for row in rows], pa.string()),
        "split": pa.array([row.split for row in rows], pa.string()),
        "label": pa.array([cell(row.labels) for row in rows], label_type),
        "status": pa.array([row.status for row in rows], pa.string()),
        "annotator": pa.array([row.annotator for row in rows], pa.string()),
        "labeled_at": pa.array([_utc(row.labeled_at) if row.labeled_at else None for row in rows],
                               pa.timestamp("s", tz="UTC")),
        "annotators": pa.array([row.annotators for row in rows], pa.list_(pa.string())),
        "prediction": pa.array([cell(row.prediction) for row in rows], label_type),
        "confidence": pa.array([row.confidence for row in rows], pa.float32()),
    })
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def read_csv_labels(data: bytes) -> list[dict[str, str]]:
    """Rows of a CSV we exported, as dicts keyed by column, with the formula guard removed."""
    reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline=""))
    return [{unguard_cell(k): unguard_cell(v or "") for k, v in row.items()} for row in reader]


def _iso(moment: datetime) -> str:
    return _utc(moment).isoformat(timespec="seconds")


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:  # the database stores naive UTC
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).replace(microsecond=0)


# ---------------------------------------------------------------------------------------------------------------
# ImageFolder zip


def to_imagefolder_zip(rows: list[LabeledRow], data_root: Path, hugging_face: bool = False,
                       multi_label: bool = False) -> bytes:
    """A zip in torchvision ImageFolder layout, with both splits: pool items under `train/<class>/<file>`, eval
    items under `eval/<class>/<file>`.

    Only rows with exactly one label get a file (multi-label and empty labels do not fit the layout; export
    those with `hugging_face` and `multi_label`, or as CSV or JSONL). Class folder and file names are made safe
    for any file system (/ \\ : * ? " < > | and control characters become '_'; a leading dot becomes '_', so
    nothing is hidden and nothing is '..'; trailing dots and spaces go; Windows device names get a '_' prefix; a
    name over NAME_MAX_BYTES bytes is shortened by `fit_name`). Two classes that end up with the same folder name
    (ignoring case) get '~2', '~3' suffixes. A file name already used in its folder is prefixed with the item id.
    `labels.csv` at the root lists every file with its path inside the zip and its true class name, split,
    annotator and time, so `read_manifest(<unzipped>/labels.csv)` restores the labels.

    `hugging_face` adds a `metadata.parquet` to each split folder, so `datasets.load_dataset("imagefolder",
    data_dir=<unzipped>)` loads the splits "train" and "test" (its name for eval/) with each image's true label
    (not the file-system-safe folder name) and the columns path (the item's key), item_id, annotator and
    labeled_at. With `multi_label` as well, every row gets a file, directly under its split folder, and `label`
    is the list of its tags ([]: none of these). Parquet, not CSV or JSON lines: a label stays exactly as given
    (a CSV's formula guard would change it), and its column is typed, so a split whose items all have [] still
    has the other split's list-of-strings type (the loader refuses splits of different types).
    """
    root = Path(data_root).resolve()
    flat = hugging_face and multi_label
    kept = rows if flat else [row for row in rows if len(row.labels) == 1]
    reserved = {HF_METADATA} if hugging_face else set()
    folders = {} if flat else _class_folders(sorted({row.labels[0] for row in kept}), reserved)
    used: dict[str, set[str]] = {}
    archive_paths: list[str] = []
    metadata: dict[str, list[dict]] = {}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for row in kept:
            source = root.joinpath(*PurePosixPath(row.key).parts)
            if not source.resolve().is_relative_to(root):
                raise ExportProblem(f"{row.key}: resolves outside the data root {root}")
            try:
                data = source.read_bytes()
            except OSError as e:
                raise ExportProblem(f"{row.key}: cannot read the image for export ({e.strerror or e}): {source}") from e
            split_folder = ZIP_SPLIT_FOLDERS.get(row.split, row.split)
            folder = split_folder if flat else f"{split_folder}/{folders[row.labels[0]]}"
            taken = used.setdefault(folder, set(reserved) if flat else set())
            name = _unique_name(safe_name(PurePosixPath(row.key).name), row.item_id, taken)
            archive_paths.append(f"{folder}/{name}")
            archive.writestr(zipfile.ZipInfo(archive_paths[-1], _ZIP_TIME), data, zipfile.ZIP_STORED)
            if hugging_face:
                metadata.setdefault(split_folder, []).append({
                    "file_name": archive_paths[-1][len(split_folder) + 1:],
                    "label": list(row.labels) if multi_label else row.labels[0], "path": row.key,
                    "item_id": row.item_id, "annotator": row.annotator, "labeled_at": _utc(row.labeled_at)})
        label_type = pa.list_(pa.string()) if multi_label else pa.string()
        schema = pa.schema([("file_name", pa.string()), ("label", label_type), ("path", pa.string()),
                            ("item_id", pa.int64()), ("annotator", pa.string()),
                            ("labeled_at", pa.timestamp("s", tz="UTC"))])
        for split_folder, lines in metadata.items():
            table = io.BytesIO()
            pq.write_table(pa.Table.from_pylist(lines, schema), table)
            archive.writestr(zipfile.ZipInfo(f"{split_folder}/{HF_METADATA}", _ZIP_TIME), table.getvalue(),
                             zipfile.ZIP_STORED)
        labels_csv = to_csv(kept, paths=archive_paths)
        archive.writestr(zipfile.ZipInfo("labels.csv", _ZIP_TIME), labels_csv, zipfile.ZIP_DEFLATED)
    return out.getvalue()


def safe_name(name: str) -> str:
    """A file or folder name valid on Linux, macOS and Windows (see `to_imagefolder_zip`)."""
    cleaned = _UNSAFE_CHARS.sub("_", name).rstrip(" .")  # Windows drops trailing dots and spaces
    if cleaned.startswith("."):  # never hidden, never '.' or '..'
        cleaned = "_" + cleaned[1:]
    cleaned = cleaned or "_"
    if cleaned.split(".")[0].lower() in _WINDOWS_RESERVED:
        cleaned = "_" + cleaned
    return fit_name(cleaned)


def fit_name(name: str, limit: int = NAME_MAX_BYTES) -> str:
    """`name` when its UTF-8 form fits in `limit` bytes; else its start (cut at a character), '~', 8 hex digits of
    the whole name's sha256 and its extension: the same name always gives the same result, and two long names
    that differ only after the cut still give two names."""
    data = name.encode("utf-8")
    if len(data) <= limit:
        return name
    stem, dot, extension = name.rpartition(".")
    suffix = f".{extension}" if dot and stem and len(extension.encode("utf-8")) <= 16 else ""
    tag = "~" + hashlib.sha256(data).hexdigest()[:8]
    room = limit - len(tag) - len(suffix.encode("utf-8"))
    start = name[: len(name) - len(suffix)].encode("utf-8")[:room].decode("utf-8", "ignore")
    return start + tag + suffix


def _class_folders(names: list[str], reserved: Iterable[str] = ()) -> dict[str, str]:
    folders: dict[str, str] = {}
    taken = {name.casefold() for name in reserved}
    for name in names:
        base = safe_name(name)
        folder, n = base, 1
        while folder.casefold() in taken:
            n += 1
            folder = fit_name(f"{base}~{n}")
        taken.add(folder.casefold())
        folders[name] = folder
    return folders


def _unique_name(name: str, item_id: int, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate.casefold() in taken:
        candidate = fit_name(f"{item_id}_{name}" if n == 1 else f"{item_id}_{n}_{name}")
        n += 1
    taken.add(candidate.casefold())
    return candidate


# ---------------------------------------------------------------------------------------------------------------
# Label order


@dataclass(frozen=True)
class OrderStep:
    """One answer in the order it was given: a line of the label-order export (`to_order_jsonl`)."""

    seq: int  # 1, 2, ... in the order the answers were stored
    at: datetime
    path: str  # the item's key
    split: str
    kind: str  # "label", "skip", "retract" (an undo), "adjudicate", "relabel" (a review's), "confirm" (a review's)
    label: list[str] | None  # class names; None for a skip and a retract
    annotator: str
    round: int | None  # the index of the round it was given in; None when given outside the queue
    arm: str | None  # what chose the item: the strategy (or TAILOR arm), "eval", or how it was hand-picked;
    #                  None when given outside the queue (an adjudication, a review's relabel or confirm)
    replaces: int | None  # the seq of the answer a retract withdraws, or that a relabel or confirm reviewed
    seconds: float | None  # time the annotator spent on it, when the label surface measured it


def label_order(session: Session, project_id: int) -> list[OrderStep]:
    """Every answer of the project (storage.models.Annotation, append-only), in the order it was given."""
    project = session.get(Project, project_id)
    if project is None:
        raise ExportProblem(f"project {project_id} does not exist")
    found = session.execute(
        select(Annotation, Item.key, Item.split, Round.index, QueueEntry.arm)
        .join(Item, Item.id == Annotation.item_id)
        .outerjoin(Round, Round.id == Annotation.round_id)
        .outerjoin(QueueEntry, QueueEntry.id == Annotation.queue_entry_id)
        .where(Annotation.project_id == project_id).order_by(Annotation.id)
    ).all()
    seq = {row.id: n for n, (row, *_) in enumerate(found, start=1)}
    return [OrderStep(seq[row.id], row.created_at, key, split,
                      "relabel" if row.kind == "label" and row.replaces_id is not None else row.kind,
                      None if row.value is None else _class_names(project, key, row.value), row.annotator,
                      index, arm, seq.get(row.replaces_id), row.seconds)
            for row, key, split, index, arm in found]


def to_order_jsonl(steps: list[OrderStep], multi_label: bool = False) -> bytes:
    """UTF-8 JSON lines, one per answer in the order given (`OrderStep`'s fields; `at` ISO 8601 in UTC, `label`
    written as `to_jsonl` writes it, null for a skip and a retract). `read_label_order` reads it back and
    `replay_label_order` replays it."""
    lines = []
    for step in steps:
        obj = {"seq": step.seq, "at": _iso(step.at), "path": step.path, "split": step.split, "kind": step.kind,
               "label": None if step.label is None else _json_label(step.label, multi_label),
               "annotator": step.annotator, "round": step.round, "arm": step.arm, "replaces": step.replaces,
               "seconds": step.seconds}
        lines.append(json.dumps(obj, ensure_ascii=False) + "\n")
    return "".join(lines).encode("utf-8")


def read_label_order(data: bytes) -> list[OrderStep]:
    """The steps of a label-order export (`to_order_jsonl`)."""
    steps = []
    for line in data.decode("utf-8").splitlines():
        if not line.strip():
            continue
        obj = json.loads(line)
        label = obj["label"]
        steps.append(OrderStep(obj["seq"], datetime.fromisoformat(obj["at"]), obj["path"], obj["split"], obj["kind"],
                               [label] if isinstance(label, str) else label, obj["annotator"], obj["round"],
                               obj["arm"], obj["replaces"], obj["seconds"]))
    return steps


def replay_label_order(steps: Iterable[OrderStep]) -> Iterator[tuple[OrderStep, dict[str, list[str]]]]:
    """Replay a label order: after each step, yield it with the labels then current, {item path: class names}.

    The labels follow the workbench's own rule (storage.labels): a retract withdraws the answer it names; an
    adjudication or a label given outside the queue settles the item; otherwise the annotators' latest labels
    make the label when they agree, and a disputed item has none. After the last step they are the project's
    current labels, the ones the other exports hold. The same dict is yielded each time, updated in place (copy
    it to keep a step's labels). For example, to feed a model the labels as they grew:

        for step, labels in replay_label_order(read_label_order(Path("p_label_order.jsonl").read_bytes())):
            if step.kind != "skip":
                model.update(step.path, labels.get(step.path))  # None: the item has no label now
    """
    live: dict[str, dict[int, SimpleNamespace]] = {}  # path -> seq -> the answer, not retracted
    labels: dict[str, list[str]] = {}
    for step in steps:
        answers = live.setdefault(step.path, {})
        if step.kind == "retract":
            answers.pop(step.replaces, None)
        else:
            # The fields storage.labels' rule reads from an Annotation row: a relabel is a 'label' row that
            # replaces another, and any queue entry id marks an answer given through the queue.
            answers[step.seq] = SimpleNamespace(
                id=step.seq, item_id=0, annotator=step.annotator, value=step.label, created_at=step.at,
                kind="label" if step.kind == "relabel" else step.kind, replaces_id=step.replaces,
                queue_entry_id=None if step.arm is None else step.seq)
        state = _state(0, list(answers.values())) if answers else None
        if state is not None and state.label is not None:
            labels[step.path] = list(state.label.value)
        else:
            labels.pop(step.path, None)
        yield step, labels


# ---------------------------------------------------------------------------------------------------------------
# Predictions


def unlabeled_predictions(session: Session, project_id: int, probs: np.ndarray,
                          item_ids: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The keys and the rows of `probs` (one row per id of `item_ids`) of the items that have no current label."""
    labeled = set(current_labels(session, project_id))
    keys = dict(session.execute(select(Item.id, Item.key).where(Item.project_id == project_id)).all())
    keep = np.array([int(i) not in labeled for i in item_ids], dtype=bool)
    return [keys[int(i)] for i in item_ids[keep]], probs[keep]


def predictions_csv(keys: list[str], probs: np.ndarray, classes: list[str], multi_label: bool = False) -> bytes:
    """UTF-8 CSV: path, predicted (arg-max class), confidence (its probability), then `p_<class>` per class.
    Multi-label: predicted is every tag with probability >= 0.5 joined by ';' (empty: none of them) and
    confidence the probability of the least certain tag decision, min_k max(p_k, 1 - p_k).

    Text cells (paths, class names, headers) get the formula guard; probabilities are plain numbers.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape != (len(keys), len(classes)):
        raise ValueError(f"probs has shape {probs.shape}; expected ({len(keys)}, {len(classes)}) for keys x classes")
    if not classes:
        raise ValueError("predictions need at least one class")
    if not np.isfinite(probs).all():
        raise ValueError("probs contains NaN or infinite values")
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(["path", "predicted", "confidence"] + [guard_cell(f"p_{c}") for c in classes])
    for key, row in zip(keys, probs):
        names, confidence = _predicted(row, classes, multi_label)
        predicted = MULTI_LABEL_SEPARATOR.join(names)
        writer.writerow([guard_cell(key), guard_cell(predicted), _number(confidence)] + [_number(p) for p in row])
    return out.getvalue().encode("utf-8")


def _number(value: float) -> str:
    return f"{float(value):.6g}"

"""Export labels (CSV, JSONL, Parquet, ImageFolder zip) and predictions; the table of formats is app.exports.

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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.errors import StorageError
from storage.importers import FORMULA_PREFIXES, MULTI_LABEL_SEPARATOR, NAME_MAX_BYTES, unguard_cell
from storage.labels import ADJUDICATED, current_labels, item_labels
from storage.models import Item, Project

CSV_COLUMNS = ["path", "label", "split", "annotator", "labeled_at"]
ZIP_SPLIT_FOLDERS = {"pool": "train", "eval": "eval"}
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
        bad = [i for i in label.value if not 0 <= i < len(classes)]
        if bad:
            raise ExportProblem(f"{key}: stored label index {bad[0]} is not a class of {project.name!r} ({classes})")
        names = [classes[i] for i in label.value]
        given = [ExportedAnswer(a.annotator, a.kind, None if a.value is None else
                                [classes[i] if 0 <= i < len(classes) else str(i) for i in a.value], a.created_at)
                 for a in states[label.item_id].answers]
        rows.append(LabeledRow(label.item_id, key, split, names, label.annotator, label.created_at,
                               states[label.item_id].status == ADJUDICATED, given))
    return rows


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


def to_parquet(rows: list[LabeledRow], multi_label: bool = False) -> bytes:
    """A Parquet table with the JSONL's columns: path, label, split, annotator, labeled_at (a UTC timestamp).

    `label` is a string column of class names (null when an item has no class); with `multi_label`, or when a
    single-label project somehow holds several labels for an item, it is a list-of-strings column.
    """
    as_lists = multi_label or any(len(row.labels) > 1 for row in rows)
    labels = [list(row.labels) if as_lists else (row.labels[0] if row.labels else None) for row in rows]
    table = pa.table({
        "path": pa.array([row.key for row in rows], pa.string()),
        "label": pa.array(labels, pa.list_(pa.string()) if as_lists else pa.string()),
        "split": pa.array([row.split for row in rows], pa.string()),
        "annotator": pa.array([row.annotator for row in rows], pa.string()),
        "labeled_at": pa.array([_utc(row.labeled_at) for row in rows], pa.timestamp("s", tz="UTC")),
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


def to_imagefolder_zip(rows: list[LabeledRow], data_root: Path) -> bytes:
    """A zip in torchvision ImageFolder layout, with both splits: pool items under `train/<class>/<file>`, eval
    items under `eval/<class>/<file>`.

    Only rows with exactly one label get a file (multi-label and empty labels do not fit the layout; export
    those as CSV or JSONL). Class folder and file names are made safe for any file system (/ \\ : * ? " < > |
    and control characters become '_'; a leading dot becomes '_', so nothing is hidden and nothing is '..';
    trailing dots and spaces go; Windows device names get a '_' prefix; a name over NAME_MAX_BYTES bytes is
    shortened by `fit_name`). Two classes that end up with the same folder name (ignoring case) get '~2', '~3'
    suffixes. A file name already used in its folder is prefixed with the item id. `labels.csv` at the root lists
    every file with its path inside the zip and its true class name, split, annotator and time, so
    `read_manifest(<unzipped>/labels.csv)` restores the labels.
    """
    root = Path(data_root).resolve()
    single = [row for row in rows if len(row.labels) == 1]
    folders = _class_folders(sorted({row.labels[0] for row in single}))
    used: dict[str, set[str]] = {}
    archive_paths: list[str] = []
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for row in single:
            source = root.joinpath(*PurePosixPath(row.key).parts)
            if not source.resolve().is_relative_to(root):
                raise ExportProblem(f"{row.key}: resolves outside the data root {root}")
            try:
                data = source.read_bytes()
            except OSError as e:
                raise ExportProblem(f"{row.key}: cannot read the image for export ({e.strerror or e}): {source}") from e
            folder = f"{ZIP_SPLIT_FOLDERS.get(row.split, row.split)}/{folders[row.labels[0]]}"
            name = _unique_name(safe_name(PurePosixPath(row.key).name), row.item_id, used.setdefault(folder, set()))
            archive_paths.append(f"{folder}/{name}")
            archive.writestr(zipfile.ZipInfo(archive_paths[-1], _ZIP_TIME), data, zipfile.ZIP_STORED)
        labels_csv = to_csv(single, paths=archive_paths)
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


def _class_folders(names: list[str]) -> dict[str, str]:
    folders: dict[str, str] = {}
    taken: set[str] = set()
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
        if multi_label:
            predicted = MULTI_LABEL_SEPARATOR.join(c for c, p in zip(classes, row) if p >= 0.5)
            confidence = float(np.maximum(row, 1 - row).min())
        else:
            best = int(row.argmax())
            predicted, confidence = classes[best], row[best]
        writer.writerow([guard_cell(key), guard_cell(predicted), _number(confidence)] + [_number(p) for p in row])
    return out.getvalue().encode("utf-8")


def _number(value: float) -> str:
    return f"{float(value):.6g}"

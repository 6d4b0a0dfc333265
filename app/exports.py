"""The export formats, one row each: `Workbench.export` dispatches through this table, the CLI's `--format` takes
its choices and help from it, and the Export page draws one download button per row.

Adding a format: a writer (storage.exporters for writers that need only the labeled rows and files) and a row here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sqlalchemy.orm import Session

from app.agreement import summary_json
from storage import exporters, source_heads
from storage.exporters import ExportProblem
from storage.files import latest_artifact, load_matrix, load_tensors
from storage.models import Project


@dataclass(frozen=True)
class ExportFormat:
    name: str  # Workbench.export's fmt and the CLI's --format
    title: str  # the Export page's button
    file_suffix: str  # after the project's name: the download's file name
    mime: str
    help: str  # one line: the CLI's --format help and the Export page's caption
    write: Callable[[Session, Project], bytes]
    section: str = "Labels"  # the Export page's heading
    multi_label: bool = True  # whether it holds a multi-label project's tags
    refusal: str = ""  # why a multi-label project cannot have it (multi_label False)
    before_training: str = ""  # set for formats of the trained model: what the page says until the first training
    # Heavy (the zip holds the images; a row per pool item): the page builds it only when asked, never on a draw
    # (a million-item pool's Parquet file takes many seconds).
    build_on_click: bool = False


def _head(session: Session, project: Project) -> bytes:
    artifact = latest_artifact(session, project.id, "head")
    if artifact is None:
        raise ExportProblem("no trained head yet: a head exists after the first round closes")
    arrays, metadata = load_tensors(artifact)
    return source_heads.head_file_bytes(arrays, metadata, classes=project.classes, task=project.task,
                                        project_name=project.name)


def _items_parquet(session: Session, project: Project) -> bytes:
    artifact = latest_artifact(session, project.id, "predictions")
    rows = exporters.item_rows(session, project.id, load_matrix(artifact) if artifact is not None else None)
    return exporters.to_parquet(rows, Path(project.data_root), multi_label=project.task == "multi_label")


def _predictions(session: Session, project: Project) -> bytes:
    artifact = latest_artifact(session, project.id, "predictions")
    if artifact is None:
        raise ExportProblem("no trained model yet: predictions exist after the first round closes")
    probs, ids = load_matrix(artifact)
    keys, unlabeled = exporters.unlabeled_predictions(session, project.id, probs, ids)
    return exporters.predictions_csv(keys, unlabeled, list(project.classes), multi_label=project.task == "multi_label")


FORMATS: dict[str, ExportFormat] = {f.name: f for f in (
    ExportFormat(
        "csv", "Labels (CSV)", "_labels.csv", "text/csv",
        "One row per labeled item, its final label: path, label, split, annotator, labeled_at (a multi-label item's "
        "tags joined by ';'); an item whose annotators disagree comes once a reviewer adjudicated it.",
        lambda s, p: exporters.to_csv(exporters.labeled_rows(s, p.id)),
    ),
    ExportFormat(
        "jsonl", "Labels (JSONL)", "_labels.jsonl", "application/x-ndjson",
        "The same rows as JSON lines (a multi-label item's tags as a list; [] is 'none of these'), each with "
        "whether it was adjudicated and every answer it was given (annotator, kind, value, time).",
        lambda s, p: exporters.to_jsonl(exporters.labeled_rows(s, p.id), multi_label=p.task == "multi_label"),
    ),
    ExportFormat(
        "agreement", "Agreement summary (JSON)", "_agreement.json", "application/json",
        "How far the annotators agree (Krippendorff's alpha, Cohen's kappa per pair, the class confusion between "
        "annotators, each with its n) and each annotator's pace and agreement with the others and the final label.",
        summary_json,
    ),
    ExportFormat(
        "parquet", "Items (Parquet)", "_items.parquet", "application/vnd.apache.parquet",
        "Every item, labeled or not, one row each: path, absolute_path, split, label (null when none; a "
        "multi-label item's tags as a list), status, annotator, labeled_at, annotators (who answered), and the "
        "latest model's prediction and confidence (null before the first training).",
        _items_parquet, build_on_click=True,
    ),
    ExportFormat(
        "zip", "ImageFolder zip", "_imagefolder.zip", "application/zip",
        "The labeled images, one folder per class (train/ for pool labels, eval/ for the eval set).",
        lambda s, p: exporters.to_imagefolder_zip(exporters.labeled_rows(s, p.id), Path(p.data_root)),
        multi_label=False, refusal="an ImageFolder zip holds one class folder per image, so it cannot hold tags",
        build_on_click=True,
    ),
    ExportFormat(
        "hf", "Hugging Face imagefolder zip", "_hf_imagefolder.zip", "application/zip",
        "The labeled images with a metadata.parquet per split (train/ for pool labels, eval/ for the eval set): "
        "datasets.load_dataset(\"imagefolder\", data_dir=<unzipped>) loads each image's label (a multi-label "
        "item's tags as a list) and who gave it.",
        lambda s, p: exporters.to_imagefolder_zip(exporters.labeled_rows(s, p.id), Path(p.data_root),
                                                  hugging_face=True, multi_label=p.task == "multi_label"),
        build_on_click=True,
    ),
    ExportFormat(
        "order", "Label order (JSONL)", "_label_order.jsonl", "application/x-ndjson",
        "Every answer in the order it was given (seq, time, path, kind, label, annotator, round, the arm that "
        "chose the item, the answer an undo retracts): storage.exporters.replay_label_order replays it into "
        "another model, step by step, ending at the current labels.",
        lambda s, p: exporters.to_order_jsonl(exporters.label_order(s, p.id), multi_label=p.task == "multi_label"),
        build_on_click=True,
    ),
    ExportFormat(
        "predictions", "Predictions (CSV)", "_predictions.csv", "text/csv",
        "The latest model's class and confidence for every unlabeled item.",
        _predictions, section="Predictions", build_on_click=True,
        before_training="Predictions exist after the first training: when round 0 closes, or after Retrain now "
                        "(Rounds page).",
    ),
    ExportFormat(
        "head", "Trained head (.safetensors)", "_head.safetensors", "application/octet-stream",
        "The latest head with its classes and backbone: start another project from it (Projects page, "
        "'Start from a source head'), e.g. to adapt it to a new pool.",
        _head, section="Model", before_training="A head exists after the first training.",
    ),
)}


def refusal(fmt: ExportFormat, task: str) -> str | None:
    """Why a project of `task` cannot have `fmt`, naming the formats it can have; None when it can."""
    if task != "multi_label" or fmt.multi_label:
        return None
    holding = ", ".join(f.name for f in FORMATS.values() if f.multi_label and f.section == fmt.section)
    return f"{fmt.refusal}; multi-label projects export {holding}"

"""Exporters: labels from a real SQLite database, read back from CSV, JSONL, Parquet and the ImageFolder zip."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from datetime import timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from sqlalchemy import select

from app.exports import FORMATS
from storage.db import Database
from storage.exporters import (
    labeled_rows,
    predictions_csv,
    read_csv_labels,
    safe_name,
    to_csv,
    to_imagefolder_zip,
    to_jsonl,
    to_parquet,
)
from storage.importers import read_manifest
from storage.models import Annotation, Item, Project

TRICKY_CLASSES = ["cat", "a,b", 'say "hi"', "line\nbreak", "🐱 emoji", "=SUM(A1)", "-minus", "'quoted", "x/y", "..", "CON"]


def write_png(path: Path, seed: int) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(8, 8), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path.read_bytes()


@pytest.fixture
def labeled(tmp_path: Path):  # noqa: ANN201
    """A project with one item per class (plus a few more), labeled, corrected, retracted and multi-labeled."""
    root = tmp_path / "data"
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    keys = [f"{'a' if i % 2 else 'b'}/img.png" if i < 2 else f"dir{i}/{i:02d}.png" for i in range(len(TRICKY_CLASSES))]
    keys += ["=danger.png", "retracted.png", "multi.png", "unlabeled.png"]
    for i, key in enumerate(keys):
        write_png(root / key, seed=i)
    with db.write() as s:
        project = Project(name="p", classes=TRICKY_CLASSES, data_root=str(root), backbone={"name": "pixels"},
                          head={"kind": "linear"}, training={}, strategy="random", strategy_params={})
        s.add(project)
        s.flush()
        items = [Item(project_id=project.id, key=key, content_hash="0" * 64, split="eval" if i % 3 == 0 else "pool")
                 for i, key in enumerate(keys)]
        s.add_all(items)
        s.flush()
        by_key = {item.key: item for item in items}

        def label(key: str, value: list[int], annotator: str = "ann") -> Annotation:
            row = Annotation(project_id=project.id, item_id=by_key[key].id, annotator=annotator, kind="label", value=value)
            s.add(row)
            s.flush()
            return row

        # Labeled in reverse order, so the export order (label order) differs from the key order.
        for i in reversed(range(len(TRICKY_CLASSES))):
            label(keys[i], [1] if i == 0 else [i])  # item i gets class i, item 0 first gets a wrong one...
        label(keys[0], [0], annotator="=cmd")  # ...corrected by a second annotator: the latest label wins
        label("=danger.png", [5])
        wrong = label("retracted.png", [1])
        s.add(Annotation(project_id=project.id, item_id=by_key["retracted.png"].id, annotator="ann", kind="retract",
                         replaces_id=wrong.id))
        label("multi.png", [1, 3])
        project_id = project.id
    yield db, project_id, root, keys
    db.dispose()


def test_labeled_rows_follow_label_order_and_skip_retracted(labeled) -> None:  # noqa: ANN001
    db, project_id, _, keys = labeled
    with db.read() as s:
        rows = labeled_rows(s, project_id)
    order = [row.key for row in rows]
    assert "retracted.png" not in order and "unlabeled.png" not in order
    assert order == list(reversed(keys[1:len(TRICKY_CLASSES)])) + [keys[0], "=danger.png", "multi.png"]
    first = rows[order.index(keys[0])]
    assert first.labels == ["cat"] and first.annotator == "=cmd"
    assert rows[-1].labels == ["a,b", "line\nbreak"]
    assert {row.split for row in rows} == {"pool", "eval"}


def test_csv_round_trip_and_formula_guard(labeled) -> None:  # noqa: ANN001
    db, project_id, _, _ = labeled
    with db.read() as s:
        rows = labeled_rows(s, project_id)
    data = to_csv(rows)
    assert not data.startswith(b"\xef\xbb\xbf")  # no BOM
    back = read_csv_labels(data)
    assert [tuple(r) for r in back] == [("path", "label", "split", "annotator", "labeled_at")] * len(rows)
    assert [(r["path"], r["label"], r["split"], r["annotator"]) for r in back] == [
        (row.key, ";".join(row.labels), row.split, row.annotator) for row in rows]
    assert all(r["labeled_at"].endswith("+00:00") for r in back)

    raw = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    cells = {cell for line in raw for cell in line}
    for dangerous in ["=SUM(A1)", "-minus", "=danger.png", "=cmd", "'quoted"]:
        assert "'" + dangerous in cells and dangerous not in cells
    assert "a,b" in cells and 'say "hi"' in cells and "line\nbreak" in cells and "🐱 emoji" in cells
    assert not any(cell[:1] in ("=", "+", "-", "@", "\t", "\r") for cell in cells)


def test_jsonl_round_trip(labeled, tmp_path: Path) -> None:  # noqa: ANN001
    db, project_id, root, _ = labeled
    with db.read() as s:
        rows = labeled_rows(s, project_id)
    data = to_jsonl(rows)
    assert "🐱 emoji".encode() in data  # ensure_ascii=False
    back = [json.loads(line) for line in data.decode("utf-8").splitlines()]
    assert [(r["path"], r["label"], r["split"], r["annotator"]) for r in back] == [
        (row.key, row.labels[0] if len(row.labels) == 1 else row.labels, row.split, row.annotator) for row in rows]
    assert [json.loads(line)["label"] for line in to_jsonl(rows[:1], multi_label=True).splitlines()] == [rows[0].labels]

    # The export imports again as a manifest (multi-label rows included).
    manifest = tmp_path / "labels.jsonl"
    manifest.write_bytes(data)
    result = read_manifest(manifest, data_root=root, classes=TRICKY_CLASSES)
    assert [(i.key, [TRICKY_CLASSES[g] for g in i.gold], i.split) for i in result.items] == [
        (row.key, row.labels, row.split) for row in rows]


def _current_labels_from_the_database(db: Database, project_id: int) -> list[tuple]:
    """(key, class names, split, annotator, labeled_at in UTC) of each item's latest unretracted label, read from the
    annotation table itself, in label order."""
    with db.read() as s:
        project = s.get(Project, project_id)
        keys = {item.id: (item.key, item.split) for item in s.scalars(select(Item).where(Item.project_id == project_id))}
        annotations = list(s.scalars(select(Annotation).where(Annotation.project_id == project_id).order_by(Annotation.id)))
        classes = list(project.classes)
    retracted = {a.replaces_id for a in annotations if a.kind == "retract"}
    latest = {a.item_id: a for a in annotations if a.kind == "label" and a.id not in retracted}
    return [(keys[a.item_id][0], [classes[v] for v in a.value], keys[a.item_id][1], a.annotator,
             a.created_at.replace(tzinfo=timezone.utc, microsecond=0))
            for a in sorted(latest.values(), key=lambda a: a.id)]


def test_parquet_export_holds_the_labels_of_the_database(labeled) -> None:  # noqa: ANN001
    db, project_id, _, _ = labeled
    expected = _current_labels_from_the_database(db, project_id)
    for task in ("multi_label", "single_label"):
        with db.write() as s:
            s.get(Project, project_id).task = task
        with db.read() as s:
            data = FORMATS["parquet"].write(s, s.get(Project, project_id))  # the table's row, as Workbench.export runs it
        table = pq.read_table(io.BytesIO(data))
        assert table.column_names == ["path", "label", "split", "annotator", "labeled_at"]
        # A list column for multi-label projects, and for a single-label one that somehow holds two labels (multi.png).
        assert table.schema.field("label").type == pa.list_(pa.string())
        frame = pd.read_parquet(io.BytesIO(data))
        got = [(r.path, list(r.label), r.split, r.annotator, r.labeled_at.to_pydatetime()) for r in frame.itertuples()]
        assert got == expected
        assert "🐱 emoji" in {name for _, names, *_ in got for name in names}


def test_parquet_label_column_is_text_for_single_labels(labeled) -> None:  # noqa: ANN001
    db, project_id, _, _ = labeled
    with db.read() as s:
        rows = [row for row in labeled_rows(s, project_id) if len(row.labels) == 1]
    table = pq.read_table(io.BytesIO(to_parquet(rows)))
    assert table.schema.field("label").type == pa.string()
    assert table.column("label").to_pylist() == [row.labels[0] for row in rows]
    assert table.column("path").to_pylist() == [row.key for row in rows]
    assert pq.read_table(io.BytesIO(to_parquet(rows[:1], multi_label=True))).column("label").to_pylist() == [rows[0].labels]


def test_imagefolder_zip_round_trip(labeled, tmp_path: Path) -> None:  # noqa: ANN001
    db, project_id, root, _ = labeled
    with db.read() as s:
        rows = labeled_rows(s, project_id)
    data = to_imagefolder_zip(rows, root)
    assert to_imagefolder_zip(rows, root) == data  # deterministic

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        out = tmp_path / "unzipped"
        archive.extractall(out)
    single = [row for row in rows if len(row.labels) == 1]
    assert len(names) == len(single) + 1 and "labels.csv" in names
    assert all(name.split("/")[0] in ("train", "eval") for name in names if name != "labels.csv")
    assert not any(part in (".", "..") or "\n" in part for name in names for part in name.split("/"))
    folders = {name.rsplit("/", 1)[0] for name in names if "/" in name}
    assert len(folders) == len({(row.split, row.labels[0]) for row in single})  # one folder per split and class

    back = read_csv_labels((out / "labels.csv").read_bytes())
    assert [r["label"] for r in back] == [row.labels[0] for row in single]
    for r, row in zip(back, single):
        assert r["path"].startswith(("train/" if row.split == "pool" else "eval/"))
        assert (out / r["path"]).read_bytes() == (root / row.key).read_bytes()

    # The unzipped folder imports again with the same labels and splits.
    result = read_manifest(out / "labels.csv", classes=TRICKY_CLASSES)
    assert [(TRICKY_CLASSES[i.gold[0]], i.split) for i in result.items] == [(row.labels[0], row.split) for row in single]
    hashes = [hashlib.sha256((root / row.key).read_bytes()).hexdigest() for row in single]
    assert [i.content_hash for i in result.items] == hashes


def test_zip_deduplicates_basenames_with_the_item_id(tmp_path: Path) -> None:
    from datetime import datetime

    from storage.exporters import LabeledRow

    root = tmp_path / "data"
    write_png(root / "a" / "img.png", 1)
    write_png(root / "b" / "IMG.png", 2)
    when = datetime(2024, 1, 1)
    rows = [LabeledRow(7, "a/img.png", "pool", ["cat"], "x", when), LabeledRow(9, "b/IMG.png", "pool", ["cat"], "x", when)]
    with zipfile.ZipFile(io.BytesIO(to_imagefolder_zip(rows, root))) as archive:
        assert archive.namelist() == ["train/cat/img.png", "train/cat/9_IMG.png", "labels.csv"]


def test_zip_names_a_missing_image(tmp_path: Path) -> None:
    from datetime import datetime

    from storage.exporters import ExportProblem, LabeledRow

    rows = [LabeledRow(1, "gone.png", "pool", ["cat"], "x", datetime(2024, 1, 1))]
    with pytest.raises(ExportProblem, match="gone.png"):
        to_imagefolder_zip(rows, tmp_path)


@pytest.mark.parametrize(
    ("name", "safe"),
    [("cat", "cat"), ("x/y", "x_y"), ("a\\b:c*d?e\"f<g>h|i", "a_b_c_d_e_f_g_h_i"), ("..", "_"), (".", "_"),
     (".hidden", "_hidden"), ("line\nbreak", "line_break"), ("CON", "_CON"), ("trailing. ", "trailing"),
     ("🐱", "🐱"), ("", "_")],
)
def test_safe_name(name: str, safe: str) -> None:
    assert safe_name(name) == safe


def test_predictions_csv() -> None:
    probs = np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]])
    data = predictions_csv(["a.png", "=x.png"], probs, ["cat", "-dog", "b,c"])
    raw = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    assert raw[0] == ["path", "predicted", "confidence", "p_cat", "p_-dog", "p_b,c"]
    assert raw[1] == ["a.png", "'-dog", "0.7", "0.1", "0.7", "0.2"]
    assert raw[2][:3] == ["'=x.png", "cat", "0.5"]
    back = read_csv_labels(data)
    assert back[0]["predicted"] == "-dog" and back[1]["path"] == "=x.png"
    with pytest.raises(ValueError, match="shape"):
        predictions_csv(["a.png"], probs, ["cat", "dog", "bird"])

"""Exporters: labels from a real SQLite database, read back from CSV, JSONL, Parquet and the ImageFolder zip."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from datetime import timezone
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from sqlalchemy import select

from app.exports import FORMATS
from storage import queue
from storage.answers import apply_adjudications
from storage.db import Database
from storage.exporters import (
    ExportProblem,
    item_rows,
    label_order,
    labeled_rows,
    predictions_csv,
    read_csv_labels,
    read_label_order,
    replay_label_order,
    safe_name,
    to_csv,
    to_imagefolder_zip,
    to_jsonl,
    to_order_jsonl,
    to_parquet,
)
from storage.importers import read_manifest
from storage.labels import current_labels
from storage.models import Annotation, Item, Project, QueueEntry, Round
from storage.reviews import record_review
from storage.rounds import add_entries
from tests.test_pages import demo_id, demo_template, open_page, trained, wb  # noqa: F401  (the Export page's fixtures)

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


def test_parquet_export_holds_every_item_of_the_database(labeled) -> None:  # noqa: ANN001
    db, project_id, root, keys = labeled
    expected = {key: (names, annotator, at) for key, names, _, annotator, at in
                _current_labels_from_the_database(db, project_id)}
    with db.read() as s:
        items = [(item.id, item.key, item.split) for item in
                 s.scalars(select(Item).where(Item.project_id == project_id).order_by(Item.id))]
    for task in ("multi_label", "single_label"):
        with db.write() as s:
            s.get(Project, project_id).task = task
        with db.read() as s:
            data = FORMATS["parquet"].write(s, s.get(Project, project_id))  # the table's row, as Workbench.export runs it
        table = pq.read_table(io.BytesIO(data))
        assert table.column_names == ["item_id", "path", "absolute_path", "split", "label", "status", "annotator",
                                      "labeled_at", "annotators", "prediction", "confidence"]
        # A list column for multi-label projects, and for a single-label one that somehow holds two labels (multi.png).
        assert table.schema.field("label").type == pa.list_(pa.string())
        assert table.schema.field("annotators").type == pa.list_(pa.string())
        assert table.schema.field("confidence").type == pa.float32()
        frame = pd.read_parquet(io.BytesIO(data))
        assert [(r.item_id, r.path, r.split) for r in frame.itertuples()] == items  # every item, eval ones too
        for r in frame.itertuples():
            assert Path(r.absolute_path).read_bytes() == (root / r.path).read_bytes()
            if r.path in expected:
                names, annotator, at = expected[r.path]
                assert (list(r.label), r.status, r.annotator, r.labeled_at.to_pydatetime()) == (
                    names, "labeled", annotator, at)
            else:  # never labeled, or its only label was retracted
                assert r.path in ("unlabeled.png", "retracted.png")
                assert r.label is None and r.status == "unlabeled" and pd.isna(r.annotator) and pd.isna(r.labeled_at)
            assert r.prediction is None and np.isnan(r.confidence)  # no head yet
        answered = dict(zip(frame.path, frame.annotators))
        assert list(answered[keys[0]]) == ["ann", "=cmd"] and list(answered["retracted.png"]) == []
        assert {"pool", "eval"} == set(frame.split)


def test_parquet_predictions_and_text_columns_of_a_single_label_project(labeled) -> None:  # noqa: ANN001
    db, project_id, root, _ = labeled
    with db.write() as s:  # a single-label project: one label each (multi.png relabeled with one class)
        item = s.scalars(select(Item).where(Item.project_id == project_id, Item.key == "multi.png")).one()
        s.add(Annotation(project_id=project_id, item_id=item.id, annotator="ann", kind="label", value=[2]))
    with db.read() as s:
        ids = np.array(sorted(s.scalars(select(Item.id).where(Item.project_id == project_id))))[1:]  # one not covered
        probs = np.random.default_rng(0).dirichlet(np.ones(len(TRICKY_CLASSES)), size=len(ids)).astype(np.float32)
        rows = item_rows(s, project_id, (probs, ids))
        with pytest.raises(ExportProblem, match="one column per class"):
            item_rows(s, project_id, (probs[:, :3], ids))
    table = pq.read_table(io.BytesIO(to_parquet(rows, root)))
    assert table.schema.field("label").type == pa.string() and table.schema.field("prediction").type == pa.string()
    got = table.to_pylist()
    assert got[0]["prediction"] is None and got[0]["confidence"] is None  # the predictions do not cover it
    for row, p in zip(got[1:], probs):
        assert row["prediction"] == TRICKY_CLASSES[int(p.argmax())]
        assert row["confidence"] == pytest.approx(float(p.max()))
    assert next(r for r in got if r["path"] == "multi.png")["label"] == 'say "hi"'

    with db.write() as s:
        s.get(Project, project_id).task = "multi_label"
    with db.read() as s:
        tags = item_rows(s, project_id, (probs, ids))
    for row, p in zip(tags[1:], probs):
        assert row.prediction == [c for c, q in zip(TRICKY_CLASSES, p) if q >= 0.5]
        assert row.confidence == pytest.approx(float(np.maximum(p, 1 - p).min()))


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

    from storage.exporters import LabeledRow

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


# ----- Hugging Face imagefolder --------------------------------------------------------------------------------------
def load_imagefolder(data: bytes, tmp_path: Path) -> datasets.DatasetDict:
    """The zip unzipped and loaded as a Hugging Face user would."""
    out = tmp_path / "hf_unzipped"
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        archive.extractall(out)
    return datasets.load_dataset("imagefolder", data_dir=str(out), cache_dir=str(tmp_path / "hf_cache"))


def pixels(image: Image.Image) -> list:
    return np.asarray(image.convert("L")).tolist()


def test_hugging_face_imagefolder_loads_the_true_labels(labeled, tmp_path: Path) -> None:  # noqa: ANN001
    db, project_id, root, _ = labeled
    with db.read() as s:
        rows = [row for row in labeled_rows(s, project_id) if len(row.labels) == 1]
        data = FORMATS["hf"].write(s, s.get(Project, project_id))
    loaded = load_imagefolder(data, tmp_path)
    assert set(loaded) == {"train", "test"}  # eval/ is imagefolder's test split
    for split, hf_split in (("pool", "train"), ("eval", "test")):
        expected = {row.key: (row.labels[0], row.annotator, row.item_id) for row in rows if row.split == split}
        got = loaded[hf_split]
        assert got.features["label"].dtype == "string"
        # True class names, also those no file system takes as a folder name ("x/y", "..", "CON", "line\nbreak").
        assert {e["path"]: (e["label"], e["annotator"], e["item_id"]) for e in got} == expected
        for example in got:
            assert pixels(example["image"]) == pixels(Image.open(root / example["path"]))
    # Still a torchvision ImageFolder: one folder per class in each split, labels.csv at the root.
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        images = [name for name in archive.namelist() if name.endswith(".png")]
        assert "train/metadata.parquet" in archive.namelist() and "labels.csv" in archive.namelist()
    assert all(name.count("/") == 2 for name in images) and len(images) == len(rows)


@pytest.fixture
def tagged(tmp_path: Path):  # noqa: ANN201
    """A multi-label project: tags, a 'none of these', an undo given again otherwise, an eval item, an unlabeled one."""
    root = tmp_path / "tags"
    db = Database(f"sqlite:///{tmp_path / 'tags.sqlite'}")
    keys = ["a/0.png", "b/0.png", "c.png", "d.png", "e.png", "unlabeled.png"]
    for i, key in enumerate(keys):
        write_png(root / key, seed=i)
    with db.write() as s:
        project = Project(name="tags", task="multi_label", classes=["cat", "dog", "=bird"], data_root=str(root),
                          backbone={"name": "pixels"}, head={"kind": "linear"}, training={}, strategy="random",
                          strategy_params={})
        s.add(project)
        s.flush()
        items = {key: Item(project_id=project.id, key=key, content_hash="0" * 64,
                           split="eval" if key == "e.png" else "pool") for key in keys}
        s.add_all(items.values())
        s.flush()

        def label(key: str, value: list[int]) -> Annotation:
            row = Annotation(project_id=project.id, item_id=items[key].id, annotator="ann", kind="label", value=value)
            s.add(row)
            s.flush()
            return row

        label("a/0.png", [0, 1])
        label("b/0.png", [])  # none of these
        undone = label("c.png", [1])
        s.add(Annotation(project_id=project.id, item_id=items["c.png"].id, annotator="ann", kind="retract",
                         replaces_id=undone.id))
        label("c.png", [0, 2])
        label("d.png", [2])
        label("e.png", [])  # the eval split's only label is 'none of these': its list column is still typed
        project_id = project.id
    yield db, project_id, root
    db.dispose()


def test_hugging_face_imagefolder_of_a_multi_label_project(tagged, tmp_path: Path) -> None:  # noqa: ANN001
    db, project_id, root = tagged
    with db.read() as s:
        data = FORMATS["hf"].write(s, s.get(Project, project_id))
    loaded = load_imagefolder(data, tmp_path)
    for split in ("train", "test"):
        assert loaded[split].features["label"] == datasets.List(datasets.Value("string"))
    got = {e["path"]: (e["label"], split) for split in loaded for e in loaded[split]}
    assert got == {"a/0.png": (["cat", "dog"], "train"), "b/0.png": ([], "train"), "c.png": (["cat", "=bird"], "train"),
                   "d.png": (["=bird"], "train"), "e.png": ([], "test")}
    for split in loaded:
        for example in loaded[split]:
            assert pixels(example["image"]) == pixels(Image.open(root / example["path"]))


def test_parquet_of_a_multi_label_project(tagged) -> None:  # noqa: ANN001
    db, project_id, _ = tagged
    with db.read() as s:
        data = FORMATS["parquet"].write(s, s.get(Project, project_id))
    table = pq.read_table(io.BytesIO(data))
    assert table.schema.field("label").type == pa.list_(pa.string())
    assert table.schema.field("prediction").type == pa.list_(pa.string())
    assert dict(zip(table.column("path").to_pylist(), table.column("label").to_pylist())) == {
        "a/0.png": ["cat", "dog"], "b/0.png": [], "c.png": ["cat", "=bird"], "d.png": ["=bird"], "e.png": [],
        "unlabeled.png": None}  # [] is 'none of these', null is no answer


# ----- Label order ---------------------------------------------------------------------------------------------------
@pytest.fixture
def queued(tmp_path: Path):  # noqa: ANN201
    """A project labeled through its queue over two rounds, by the storage functions the pages call: eval items,
    strategy and hand-picked arms, a skip, an undo answered again, an overlap item left disputed and one
    adjudicated, a review's relabel, an item never labeled."""
    root = tmp_path / "queued"
    db = Database(f"sqlite:///{tmp_path / 'queued.sqlite'}")
    keys = [f"{i}.png" for i in range(9)]
    for i, key in enumerate(keys):
        write_png(root / key, seed=i)
    with db.write() as s:
        project = Project(name="q", classes=["cat", "dog", "bird"], data_root=str(root), backbone={"name": "pixels"},
                          head={"kind": "linear"}, training={}, strategy="margin", strategy_params={})
        s.add(project)
        s.flush()
        items = [Item(project_id=project.id, key=key, content_hash=str(i) * 64, split="eval" if i < 2 else "pool")
                 for i, key in enumerate(keys)]
        s.add_all(items)
        s.flush()
        ids = {item.key: item.id for item in items}
        first = Round(project_id=project.id, index=0, strategy="margin", strategy_params={}, state="labeling")
        s.add(first)
        s.flush()
        add_entries(s, first.id, [(ids["0.png"], "eval", None), (ids["1.png"], "eval", None),
                                  (ids["2.png"], "margin", 0.9), (ids["3.png"], "margin", 0.8),
                                  (ids["4.png"], "grid", None), (ids["5.png"], "margin", 0.5),
                                  (ids["6.png"], "margin", 0.4)])
        for key in ("5.png", "6.png"):  # a second copy of each, for another annotator (overlap)
            entry = s.scalars(select(QueueEntry).where(QueueEntry.item_id == ids[key])).one()
            s.add(QueueEntry(round_id=first.id, item_id=ids[key], position=entry.position, arm="margin", copy_index=1))
        project_id, first_id = project.id, first.id

    def give(annotator: str, value: list[int] | None, round_id: int = first_id) -> str:
        with db.write() as s:
            claim = queue.claim_next(s, round_id, annotator)
            if value is None:
                queue.skip(s, project_id, claim.entry_id, annotator)
            else:
                queue.submit_label(s, project_id, claim.entry_id, annotator, value)
            return s.get(Item, claim.item_id).key

    assert give("alice", [0]) == "0.png"
    assert give("alice", [1]) == "1.png"
    assert give("alice", [2]) == "2.png"
    with db.write() as s:
        queue.undo_last(s, project_id, "alice")
    assert give("alice", [1]) == "2.png"  # the undone item comes back first
    assert give("alice", None) == "3.png"
    assert give("alice", [0]) == "4.png"
    assert give("alice", [0]) == "5.png"
    assert give("alice", [2]) == "6.png"
    assert give("bob", [1]) == "5.png"  # disagrees: disputed, no label
    assert give("bob", [1]) == "6.png"
    with db.write() as s:
        apply_adjudications(s, project_id, "rev", "tab", [{"seq": 1, "entry_id": ids["6.png"], "kind": "label",
                                                           "value": [1]}])
        record_review(s, project_id, ids["1.png"], "rev", "relabel", [2])
        s.get(Round, first_id).state = "done"
        second = Round(project_id=project_id, index=1, strategy="margin", strategy_params={}, state="labeling")
        s.add(second)
        s.flush()
        add_entries(s, second.id, [(ids["7.png"], "margin", 0.7)])
        second_id = second.id
    assert give("alice", [0], second_id) == "7.png"
    yield db, project_id
    db.dispose()


def current_by_key(db: Database, project_id: int) -> dict[str, list[str]]:
    """The project's current labels (storage.labels), as {item key: class names}."""
    with db.read() as s:
        project = s.get(Project, project_id)
        keys = dict(s.execute(select(Item.id, Item.key).where(Item.project_id == project_id)).all())
        labels = current_labels(s, project_id)
        return {keys[i]: [project.classes[v] for v in label.value] for i, label in labels.items()}


def test_label_order_lists_every_answer_as_given(queued) -> None:  # noqa: ANN001
    db, project_id = queued
    with db.read() as s:
        steps = label_order(s, project_id)
    assert [step.seq for step in steps] == list(range(1, len(steps) + 1))
    assert [(step.path, step.kind, step.annotator, step.round, step.arm) for step in steps] == [
        ("0.png", "label", "alice", 0, "eval"), ("1.png", "label", "alice", 0, "eval"),
        ("2.png", "label", "alice", 0, "margin"), ("2.png", "retract", "alice", 0, "margin"),
        ("2.png", "label", "alice", 0, "margin"), ("3.png", "skip", "alice", 0, "margin"),
        ("4.png", "label", "alice", 0, "grid"), ("5.png", "label", "alice", 0, "margin"),
        ("6.png", "label", "alice", 0, "margin"), ("5.png", "label", "bob", 0, "margin"),
        ("6.png", "label", "bob", 0, "margin"), ("6.png", "adjudicate", "rev", None, None),
        ("1.png", "relabel", "rev", None, None), ("7.png", "label", "alice", 1, "margin")]
    by_seq = {step.seq: step for step in steps}
    retract = steps[3]
    assert retract.label is None and by_seq[retract.replaces] == steps[2] and steps[2].label == ["bird"]
    assert by_seq[steps[12].replaces] == steps[1] and steps[12].label == ["bird"]
    assert steps[5].label is None and [step.split for step in steps[:3]] == ["eval", "eval", "pool"]


def test_replaying_the_label_order_yields_the_current_labels(queued) -> None:  # noqa: ANN001
    db, project_id = queued
    with db.read() as s:
        data = FORMATS["order"].write(s, s.get(Project, project_id))  # the file a user downloads
    steps = read_label_order(data)
    after = [dict(labels) for _, labels in replay_label_order(steps)]
    assert after[-1] == current_by_key(db, project_id)
    assert "5.png" not in after[-1]  # disputed: no label until adjudicated
    assert after[2]["2.png"] == ["bird"] and "2.png" not in after[3] and after[4]["2.png"] == ["dog"]  # the undo
    assert after[7]["5.png"] == ["cat"] and "5.png" not in after[9]  # bob disagreed
    assert "6.png" not in after[10] and after[11]["6.png"] == ["dog"]  # adjudicated
    assert after[11]["1.png"] == ["dog"] and after[12]["1.png"] == ["bird"]  # relabeled by a review
    assert after[5] == after[4]  # a skip labels nothing


def test_label_order_round_trip_and_replay_without_a_queue(labeled, tagged) -> None:  # noqa: ANN001
    for db, project_id, *_ in (labeled, tagged):
        with db.read() as s:
            project = s.get(Project, project_id)
            steps = label_order(s, project_id)
            multi_label = project.task == "multi_label"
        back = read_label_order(to_order_jsonl(steps, multi_label=multi_label))
        assert [(b.seq, b.path, b.split, b.kind, b.label, b.annotator, b.round, b.arm, b.replaces) for b in back] == [
            (a.seq, a.path, a.split, a.kind, a.label, a.annotator, a.round, a.arm, a.replaces) for a in steps]
        assert [b.at for b in back] == [a.at.replace(tzinfo=timezone.utc, microsecond=0) for a in steps]
        *_, (_, final) = replay_label_order(back)
        assert final == current_by_key(db, project_id)
    line = json.loads(to_order_jsonl(steps, multi_label=True).splitlines()[1])
    assert line["label"] == [] and line["kind"] == "label"  # tagged's 'none of these'


# ----- the Export page ------------------------------------------------------------------------------------------------
def test_export_page_builds_the_new_formats_of_a_trained_project(wb, trained: int,  # noqa: ANN001, F811
                                                                 tmp_path: Path) -> None:
    at = open_page("export")
    for name in ("hf", "order"):
        at.button(key=f"build_{name}").click().run()
        assert not at.exception and not at.error
    assert {"download_hf", "download_order"} <= {b.key for b in at.get("download_button")}

    with wb.db.read() as s:  # round 0's strategy (random: there is no head to rank with yet)
        first = s.scalars(select(Round.strategy).where(Round.project_id == trained, Round.index == 0)).one()
    _, data = wb.export(trained, "order")
    steps = read_label_order(data)
    assert {step.round for step in steps} == {0} and {step.arm for step in steps} == {"eval", first}
    *_, (_, final) = replay_label_order(steps)
    assert final == current_by_key(wb.db, trained)

    _, data = wb.export(trained, "parquet")
    frame = pd.read_parquet(io.BytesIO(data))
    assert len(frame) == sum(wb.status(trained).items.values())
    assert frame.prediction.notna().all() and frame.confidence.between(0, 1).all()  # the head's, for every item
    assert set(frame.loc[frame.label.notna(), "path"]) == set(final)

    _, data = wb.export(trained, "hf")
    loaded = load_imagefolder(data, tmp_path)
    assert {e["path"]: [e["label"]] for split in loaded for e in loaded[split]} == final

"""Importers: real PNG files in a temp folder, a real SQLite database file."""
from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select, text

from storage.db import Database
from storage.demo import DEMO_CLASSES, write_demo
from storage.importers import (
    ImportedItem,
    ImportProblem,
    ImportResult,
    read_manifest,
    scan_folder,
    store_import,
)
from storage.models import Item, Project


def write_png(path: Path, seed: int = 0, size: tuple[int, int] = (16, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def problem_message(call) -> str:  # noqa: ANN001
    with pytest.raises(ImportProblem) as info:
        call()
    return str(info.value)


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    yield database
    database.dispose()


def make_project(db: Database, root: Path, classes: list[str], name: str = "p") -> int:
    with db.write() as s:
        project = Project(name=name, classes=classes, data_root=str(root), backbone={"name": "pixels"},
                          head={"kind": "linear"}, training={}, strategy="random", strategy_params={})
        s.add(project)
        s.flush()
        return project.id


def item_count(db: Database) -> int:
    with db.read() as s:
        return s.scalar(select(func.count()).select_from(Item))


# ---------------------------------------------------------------------------------------------------------------
# Folders


def test_flat_folder(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    for i, name in enumerate(["b.png", "a.png", "c.JPG"]):
        write_png(root / name, seed=i)
    (root / "notes.txt").write_text("not an image")
    write_png(root / ".hidden.png", seed=9)
    seen: list[float] = []

    result = scan_folder(root, progress=lambda fraction, message: seen.append(fraction))

    assert [item.key for item in result.items] == ["a.png", "b.png", "c.JPG"]
    assert all(item.gold is None and item.split is None for item in result.items)
    assert result.classes == []
    assert result.data_root == root.resolve()
    assert result.skipped == ["notes.txt"]
    assert len({item.content_hash for item in result.items}) == 3
    assert seen and seen[-1] == 1.0


def test_class_folders(tmp_path: Path) -> None:
    root = tmp_path / "classes"
    write_png(root / "dogs" / "d1.png", seed=1)
    write_png(root / "cats" / "c1.png", seed=2)
    write_png(root / "cats" / "more" / "c2.png", seed=3)  # nested below a class folder: still that class
    (root / "empty").mkdir()

    result = scan_folder(root)
    assert result.classes == ["cats", "dogs"]
    assert [(i.key, i.gold) for i in result.items] == [
        ("cats/c1.png", [0]), ("cats/more/c2.png", [0]), ("dogs/d1.png", [1])]

    given = scan_folder(root, classes=["dogs", "cats", "birds"])
    assert given.classes == ["dogs", "cats", "birds"]
    assert [i.gold for i in given.items] == [[1], [1], [0]]

    message = problem_message(lambda: scan_folder(root, classes=["cats"]))
    assert "dogs/" in message and "not one of the project's classes" in message


def test_folder_with_images_and_class_folders_is_ambiguous(tmp_path: Path) -> None:
    write_png(tmp_path / "loose.png")
    write_png(tmp_path / "cats" / "c.png")
    assert "both images at the top level" in problem_message(lambda: scan_folder(tmp_path))


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert "no images found" in problem_message(lambda: scan_folder(tmp_path / "empty"))
    (tmp_path / "empty" / "readme.md").write_text("hi")
    message = problem_message(lambda: scan_folder(tmp_path / "empty"))
    assert "no images found" in message and "readme.md" in message
    assert "not a folder" in problem_message(lambda: scan_folder(tmp_path / "missing"))


# ---------------------------------------------------------------------------------------------------------------
# Bad files (each answered with the file's name)


def corrupt_png(path: Path) -> None:
    write_png(path, size=(64, 64))
    data = bytearray(path.read_bytes())
    data[60:200] = bytes(140)  # zero out compressed pixel data: the chunk CRC no longer matches
    path.write_bytes(bytes(data))


def truncated_png(path: Path) -> None:
    write_png(path, size=(64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def text_png(path: Path) -> None:
    path.write_text("this is not an image, just text\n")


def random_bytes_jpg(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())


def bomb_png(path: Path) -> None:
    """A tiny PNG whose header claims 100000 x 100000 pixels."""
    write_png(path, size=(1, 1))
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", 100_000, 100_000)  # IHDR width and height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # IHDR CRC over type + data
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("make_bad", "name", "expected"),
    [
        (corrupt_png, "bad.png", "corrupt or truncated"),
        (truncated_png, "bad.png", "corrupt or truncated"),
        (text_png, "bad.png", "not an image"),
        (random_bytes_jpg, "bad.jpg", "not an image"),
        (bomb_png, "bad.png", "decompression bomb"),
    ],
)
def test_bad_image_in_folder_is_named(tmp_path: Path, make_bad, name: str, expected: str) -> None:  # noqa: ANN001
    root = tmp_path / "pool"
    write_png(root / "good.png")
    make_bad(root / name)
    message = problem_message(lambda: scan_folder(root))
    assert f"{name}: " in message and expected in message
    assert "good.png" not in message


def test_decompression_bomb_warning_level_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)  # 16x16 = 256 pixels: over the limit, under twice it
    write_png(tmp_path / "big.png", size=(16, 16))
    write_png(tmp_path / "small.png", size=(8, 8))
    message = problem_message(lambda: scan_folder(tmp_path))
    assert "big.png: image too large" in message and "small.png" not in message


def test_bad_image_in_manifest_names_the_row(tmp_path: Path) -> None:
    write_png(tmp_path / "good.png")
    truncated_png(tmp_path / "cut.png")
    manifest = write_lines(tmp_path / "m.csv", ["path", "good.png", "cut.png"])
    message = problem_message(lambda: read_manifest(manifest))
    assert "m.csv row 3 ('cut.png'): corrupt or truncated" in message


def test_symlink_leaving_the_root(tmp_path: Path) -> None:
    outside = write_png(tmp_path / "outside" / "secret.png")
    root = tmp_path / "pool"
    write_png(root / "good.png")
    (root / "link.png").symlink_to(outside)
    (root / "dirlink").symlink_to(outside.parent, target_is_directory=True)
    message = problem_message(lambda: scan_folder(root))
    assert "link.png: resolves to" in message and "outside the data root" in message
    assert "dirlink/: folder is a link to" in message

    manifest = write_lines(root / "m.csv", ["path", "good.png", "link.png"])
    message = problem_message(lambda: read_manifest(manifest))
    assert "m.csv row 3 ('link.png')" in message and "outside the data root" in message


def test_symlink_inside_the_root_is_fine_but_counts_as_a_duplicate(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png")
    (tmp_path / "alias.png").symlink_to(tmp_path / "a.png")
    assert [i.key for i in read_manifest(write_lines(tmp_path / "one.csv", ["path", "alias.png"])).items] == ["alias.png"]
    message = problem_message(lambda: read_manifest(write_lines(tmp_path / "two.csv", ["path", "a.png", "alias.png"])))
    assert "two.csv row 3 ('alias.png'): duplicate: the same file as two.csv row 2" in message


# ---------------------------------------------------------------------------------------------------------------
# Manifests


def test_csv_manifest(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for i, key in enumerate(["x/1.png", "x/2.png", "3.png", "4.png"]):
        write_png(root / key, seed=i)
    manifest = write_lines(tmp_path / "lists" / "manifest.csv", [
        "path,label,split,extra",
        "x/1.png,dog,,ignored",
        "x\\2.png,cat,eval,",  # backslashes read as folder separators
        f"{root / '3.png'},cat,pool,",  # absolute inside the root
        "4.png,,,",  # unlabeled
        "",
    ])
    result = read_manifest(manifest, data_root=root)
    assert result.classes == ["cat", "dog"]
    assert result.data_root == root.resolve()
    assert [(i.key, i.gold, i.split) for i in result.items] == [
        ("x/1.png", [1], None), ("x/2.png", [0], "eval"), ("3.png", [0], "pool"), ("4.png", None, None)]

    given = read_manifest(manifest, data_root=root, classes=["dog", "cat", "bird"])
    assert given.classes == ["dog", "cat", "bird"] and [i.gold for i in given.items][:2] == [[0], [1]]


def test_csv_manifest_defaults_to_its_folder_and_needs_no_label_column(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png")
    result = read_manifest(write_lines(tmp_path / "m.csv", ["\ufeffPath ", "a.png"]))  # BOM, odd header case
    assert [(i.key, i.gold) for i in result.items] == [("a.png", None)]


def test_jsonl_manifest(tmp_path: Path) -> None:
    for i, key in enumerate(["a.png", "b.png", "c.png", "d.png"]):
        write_png(tmp_path / key, seed=i)
    manifest = write_lines(tmp_path / "m.jsonl", [
        json.dumps({"path": "a.png", "label": "cat"}),
        json.dumps({"path": "b.png", "label": ["dog", "cat"], "split": "eval"}),
        "",
        json.dumps({"path": "c.png", "label": None}),
        json.dumps({"path": "d.png", "label": 7}),  # a number reads as the class named "7"
    ])
    result = read_manifest(manifest)
    assert result.classes == ["7", "cat", "dog"]
    assert [(i.key, i.gold, i.split) for i in result.items] == [
        ("a.png", [1], None), ("b.png", [1, 2], "eval"), ("c.png", None, None), ("d.png", [0], None)]
    ndjson = manifest.with_suffix(".ndjson")
    ndjson.write_bytes(manifest.read_bytes())
    assert len(read_manifest(ndjson).items) == 4


def test_jsonl_bad_lines_are_named(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png")
    manifest = write_lines(tmp_path / "m.jsonl", [
        json.dumps({"path": "a.png"}),
        "{not json",
        "[1, 2]",
        json.dumps({"label": "cat"}),
        json.dumps({"path": "a.png", "label": {"x": 1}}),
    ])
    message = problem_message(lambda: read_manifest(manifest))
    assert "4 problems in" in message
    for fragment in ["m.jsonl line 2: not valid JSON", "m.jsonl line 3: expected a JSON object",
                     "m.jsonl line 4: 'path' is missing", "m.jsonl line 5: 'label' must be"]:
        assert fragment in message


@pytest.mark.parametrize(
    ("row", "classes", "expected"),
    [
        ("b.png,wolf,", ["cat", "dog"], "m.csv row 3 ('b.png'): unknown label 'wolf'"),
        ("a.png,cat,", None, "m.csv row 3 ('a.png'): duplicate: the same file as m.csv row 2"),
        ("./a.png,cat,", None, "m.csv row 3 ('a.png'): duplicate"),
        ("../outside.png,cat,", None, "m.csv row 3: path contains '..'"),
        ("sub/../a.png,cat,", None, "m.csv row 3: path contains '..'"),
        ("OUTSIDE,cat,", None, "m.csv row 3: absolute path is outside the data root"),
        ("missing.png,cat,", None, "m.csv row 3 ('missing.png'): file not found"),
        ("b.png,cat,train", None, "m.csv row 3: split 'train' must be empty, 'pool' or 'eval'"),
        (",cat,", None, "m.csv row 3: empty path"),
    ],
)
def test_bad_manifest_rows_are_named(tmp_path: Path, row: str, classes: list[str] | None, expected: str) -> None:
    root = tmp_path / "root"
    write_png(root / "a.png", seed=1)
    write_png(root / "b.png", seed=2)
    write_png(tmp_path / "outside.png", seed=3)
    row = row.replace("OUTSIDE", str(tmp_path / "outside.png"))
    manifest = write_lines(root / "m.csv", ["path,label,split", "a.png,cat,", row])
    message = problem_message(lambda: read_manifest(manifest, classes=classes))
    assert str(manifest) in message.splitlines()[0]
    assert expected in message


def test_many_problems_are_reported_together(tmp_path: Path) -> None:
    manifest = write_lines(tmp_path / "m.csv", ["path"] + [f"gone{i}.png" for i in range(25)])
    with pytest.raises(ImportProblem) as info:
        read_manifest(manifest)
    message = str(info.value)
    assert message.startswith(f"25 problems in {manifest}:")
    assert "gone0.png" in message and "gone19.png" in message and "gone20.png" not in message
    assert "... and 5 more" in message
    assert len(info.value.problems) == 25


def test_empty_manifests(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert "empty.csv: the manifest is empty" in problem_message(lambda: read_manifest(empty))
    header_only = write_lines(tmp_path / "header.csv", ["path,label"])
    assert "header.csv: the manifest has no rows" in problem_message(lambda: read_manifest(header_only))
    blank = write_lines(tmp_path / "blank.jsonl", ["", "  "])
    assert "blank.jsonl: the manifest has no rows" in problem_message(lambda: read_manifest(blank))
    no_path = write_lines(tmp_path / "nopath.csv", ["file,label", "a.png,cat"])
    assert "no 'path' column" in problem_message(lambda: read_manifest(no_path))
    assert "unknown manifest type" in problem_message(lambda: read_manifest(tmp_path / "m.xlsx"))
    assert "manifest file not found" in problem_message(lambda: read_manifest(tmp_path / "none.csv"))


# ---------------------------------------------------------------------------------------------------------------
# Storing


def test_store_import_picks_eval_items_with_the_seed(tmp_path: Path, db: Database) -> None:
    root = tmp_path / "data"
    lines = ["path,label,split"]
    for i in range(20):
        write_png(root / f"{i:02d}.png", seed=i)
        split = "eval" if i == 0 else ("pool" if i == 1 else "")
        lines.append(f"{i:02d}.png,{'cat' if i % 2 else ''},{split}")
    result = read_manifest(write_lines(root / "m.csv", lines))
    first = make_project(db, root, ["dog", "cat"], name="first")
    second = make_project(db, root, ["dog", "cat"], name="second")

    with db.write() as s:
        assert store_import(s, first, result, eval_size=5, seed=7) == 20
        assert store_import(s, second, result, eval_size=5, seed=7) == 20
    with db.read() as s:
        rows = {pid: s.execute(select(Item.key, Item.split, Item.gold, Item.content_hash)
                               .where(Item.project_id == pid).order_by(Item.key)).all() for pid in (first, second)}
        null_gold = s.scalar(text("SELECT count(*) FROM items WHERE gold IS NULL"))
    by_key = {key: (split, gold, digest) for key, split, gold, digest in rows[first]}
    assert by_key["00.png"][0] == "eval" and by_key["01.png"][0] == "pool"  # the manifest's split is kept
    assert sum(split == "eval" for split, _, _ in by_key.values()) == 6  # 1 given + 5 drawn
    assert [r.split for r in rows[first]] == [r.split for r in rows[second]]  # same seed, same eval set
    assert by_key["03.png"][1] == [1] and by_key["02.png"][1] is None  # gold mapped onto the project's classes
    assert null_gold == 20  # unlabeled items hold SQL NULL, not JSON 'null'
    assert by_key["05.png"][2] == next(i.content_hash for i in result.items if i.key == "05.png")


def test_store_import_maps_classes_by_name_and_refuses_unknown_ones(tmp_path: Path, db: Database) -> None:
    result = ImportResult(tmp_path, ["b", "a"], [ImportedItem("x.png", "0" * 64, [0], None),
                                                 ImportedItem("y.png", "1" * 64, [1], None)])
    project = make_project(db, tmp_path, ["a", "b"])
    with db.write() as s:
        store_import(s, project, result, eval_size=0, seed=0)
    with db.read() as s:
        assert {k: g for k, g in s.execute(select(Item.key, Item.gold))} == {"x.png": [1], "y.png": [0]}

    twice = ImportResult(tmp_path, ["a"], [ImportedItem("z.png", "0" * 64, None, None)] * 2)
    with pytest.raises(ImportProblem, match=r"z\.png: listed twice in this import"):
        with db.write() as s:
            store_import(s, project, twice, eval_size=0, seed=0)

    other = make_project(db, tmp_path, ["a"], name="other")
    with pytest.raises(ImportProblem, match=r"x\.png: class 'b' is not one of the project's classes"):
        with db.write() as s:
            store_import(s, other, result, eval_size=0, seed=0)


def test_failed_import_stores_nothing(tmp_path: Path, db: Database) -> None:
    root = tmp_path / "data"
    for i in range(5):
        write_png(root / f"{i}.png", seed=i)
    result = scan_folder(root)
    project = make_project(db, root, [])
    with db.write() as s:
        s.add(Item(project_id=project, key="3.png", content_hash="0" * 64, split="pool"))
    assert item_count(db) == 1

    # Already-existing key: refused, naming the key, before anything is added.
    with pytest.raises(ImportProblem, match=r"3\.png: project 'p' already has an item with this path"):
        with db.write() as s:
            store_import(s, project, result, eval_size=2, seed=0)
    assert item_count(db) == 1

    # A failure midway through one transaction (after a first batch was inserted) rolls everything back.
    first_half = ImportResult(result.data_root, [], [i for i in result.items if i.key in ("0.png", "1.png")])
    with pytest.raises(ImportProblem):
        with db.write() as s:
            assert store_import(s, project, first_half, eval_size=0, seed=0) == 2
            store_import(s, project, result, eval_size=0, seed=0)  # 0.png and 1.png exist now
    assert item_count(db) == 1


def test_store_import_of_100k_items_with_mixed_gold(tmp_path: Path, db: Database) -> None:
    """100k items in one bulk insert (its speed is a benchmark matter: benchmarks/bench_labeling.py builds such a pool)."""
    items = [ImportedItem(f"img/{i:06d}.png", f"{i:064x}", [i % 3] if i % 2 else None, None) for i in range(100_000)]
    project = make_project(db, tmp_path, ["a", "b", "c"])
    with db.write() as s:
        assert store_import(s, project, ImportResult(tmp_path, ["a", "b", "c"], items), eval_size=100, seed=0) == 100_000
    with db.read() as s:
        assert s.scalar(select(func.count()).where(Item.split == "eval")) == 100
        assert s.scalar(select(func.count()).where(Item.gold.is_(None))) == 50_000


# ---------------------------------------------------------------------------------------------------------------
# Demo


def test_demo_digits(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    dest = write_demo(tmp_path / "digits")
    files = sorted(dest.rglob("*.png"))
    assert len(files) == 1797
    assert sorted(p.name for p in dest.iterdir()) == DEMO_CLASSES
    with Image.open(dest / "0" / "0000.png") as im:
        assert im.size == (32, 32) and im.mode == "L"
        pixels = np.asarray(im)
    assert pixels[0, 0] == 0 and pixels.max() > 200  # white digit on black

    stamp = {p: p.stat().st_mtime_ns for p in files}
    os.utime(files[0], ns=(1, 1))
    write_demo(dest)  # complete already: nothing is rewritten
    assert files[0].stat().st_mtime_ns == 1 and files[1].stat().st_mtime_ns == stamp[files[1]]
    files[5].unlink()
    write_demo(dest)  # only the missing file comes back
    assert files[5].is_file() and files[1].stat().st_mtime_ns == stamp[files[1]]

    result = scan_folder(dest)
    assert result.classes == DEMO_CLASSES
    targets = load_digits().target
    assert [item.gold for item in result.items] == [[int(targets[int(Path(i.key).stem)])] for i in result.items]
    assert len(result.items) == 1797

"""Reliability, second round, each fault as a class with real files (zips written to tmp_path, a real SQLite file,
PostgreSQL where the queue's locking matters):

- A. names: no zip export writes a folder or file name over 255 bytes (shortened deterministically, unique, the
  extension kept); a manifest path with such a name is refused in words; 'é' written as one code point and as
  'e' + a combining accent is one class (a real zip holding both spellings, unpacked as a user would); the default
  export file name fits any project name, even one longer than today's 200-character cap.
- B. a ';'- or tab-separated CSV manifest is read; one without a 'path' column says what separator it looks like.
- C. an undo that arrives after its answer closed the round reopens the item the same way on both undo paths
  (Workbench.undo and the label surface's): the item is the annotator's next one, the label given then replaces
  the retracted one, the round stays closed, and an unanswered reopened entry is dropped, never left open.
- D. what an import says without refusing (the same image in the eval set and the pool, two spellings of a class
  folder) reaches the user: `create_project(on_warning=...)`, the CLI's `import`, the Projects page (as text).
"""
from __future__ import annotations

import csv
import hashlib
import io
import unicodedata
import zipfile
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select, update

from app import cli, rounds, ui
from app.errors import WorkbenchError
from app.settings import Settings
from app.workbench import ProjectConfig, Workbench
from app.worker import Worker
from storage import answers
from storage.db import sqlite_url
from storage.exporters import LabeledRow, fit_name, safe_name, to_imagefolder_zip
from storage.importers import NAME_MAX_BYTES, ImportProblem, read_manifest, scan_folder
from storage.labels import current_labels
from storage.models import Job, Project, QueueEntry, Round, utcnow
from tests.conftest import make_round
from tests.pg_server import pg_server, pg_url  # noqa: F401  (fixtures)

NFC = unicodedata.normalize("NFC", "café")
NFD = unicodedata.normalize("NFD", "café")
WHEN = datetime(2024, 1, 1)


def write_png(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def png_bytes(seed: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()


def write_csv(path: Path, rows: list[list[str]], delimiter: str = ",") -> Path:
    out = io.StringIO(newline="")
    csv.writer(out, delimiter=delimiter).writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(out.getvalue().encode("utf-8"))
    return path


def refused(call) -> str:  # noqa: ANN001
    with pytest.raises((ImportProblem, WorkbenchError)) as caught:
        call()
    return str(caught.value)


# ----- A. names over 255 bytes, NFC / NFD ---------------------------------------------------------------------------
def test_fit_name_is_deterministic_keeps_the_extension_and_keeps_long_names_apart() -> None:
    long_a = "é" * 200 + "a.jpeg"  # 406 bytes
    long_b = "é" * 200 + "b.jpeg"
    assert fit_name("cat.png") == "cat.png" and fit_name("x" * 255) == "x" * 255
    fitted = fit_name(long_a)
    assert len(fitted.encode()) <= NAME_MAX_BYTES and fitted.endswith(".jpeg") and fitted == fit_name(long_a)
    assert fitted != fit_name(long_b)  # the same first 400 bytes, two names
    # 241 bytes of room: cut before the 121st 'é' rather than inside its two bytes
    assert fitted.startswith("é" * 120 + "~") and len(fitted.encode()) == 254
    assert len(safe_name("猫" * 100).encode()) <= NAME_MAX_BYTES  # 300 bytes of a class name as a folder


def test_the_zip_export_never_writes_a_name_over_255_bytes(tmp_path: Path) -> None:
    root = tmp_path / "data"
    file_name = "p" * 250 + ".png"  # 254 bytes: fits on disk, and over 255 once the item id prefixes a duplicate
    write_png(root / "a" / file_name, 1)
    write_png(root / "b" / file_name, 2)
    write_png(root / "c" / "short.jpeg", 3)
    long_one, long_two = "é" * 150 + " one", "é" * 150 + " two"  # 304 bytes each, the same first 255
    rows = [LabeledRow(12345, f"a/{file_name}", "pool", [long_one], "x", WHEN),
            LabeledRow(12346, f"b/{file_name}", "pool", [long_one], "x", WHEN),
            LabeledRow(12347, "c/short.jpeg", "eval", [long_two], "x", WHEN)]
    data = to_imagefolder_zip(rows, root)
    assert to_imagefolder_zip(rows, root) == data  # deterministic
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path / "unzipped")  # failed with "File name too long" before
    parts = [part for name in names for part in name.split("/")]
    assert max(len(part.encode()) for part in parts) <= NAME_MAX_BYTES
    images = [name for name in names if name != "labels.csv"]
    assert len(set(images)) == 3 and all(name.endswith((".png", ".jpeg")) for name in images)
    folders = {name.split("/")[1] for name in images}
    assert len(folders) == 2  # two classes, two folders, although their names agree on the first 255 bytes

    restored = read_manifest(tmp_path / "unzipped" / "labels.csv")  # the true class names come back
    assert sorted(restored.classes) == sorted([long_one, long_two])
    by_hash = {hashlib.sha256((root / row.key).read_bytes()).hexdigest(): row.labels[0] for row in rows}
    assert {item.content_hash: restored.classes[item.gold[0]] for item in restored.items} == by_hash


def test_a_manifest_path_with_a_name_over_255_bytes_is_refused_in_words(tmp_path: Path) -> None:
    write_png(tmp_path / "cat" / "0.png", 0)
    write_png(tmp_path / "dog" / "0.png", 1)
    long = "é" * 130 + ".png"  # 264 bytes
    manifest = write_csv(tmp_path / "m.csv", [["path", "label"], ["cat/0.png", "cat"], ["dog/0.png", "dog"],
                                              [f"dog/{long}", "dog"]])
    message = refused(lambda: read_manifest(manifest))
    assert "m.csv row 4" in message and "is 264 bytes long; file systems allow 255 bytes" in message


def test_one_class_name_in_two_unicode_spellings_is_one_class(settings: Settings, tmp_path: Path) -> None:
    archive = tmp_path / "drinks.zip"  # made on macOS (NFD) and on Linux (NFC), zipped together
    with zipfile.ZipFile(archive, "w") as zf:
        for k, folder in enumerate([NFC, NFC, NFD, NFD, "thé", "thé", "thé", "thé"]):
            zf.writestr(f"{folder}/{k}.png", png_bytes(k))
    folder = tmp_path / "drinks"
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted([NFC, NFD, "thé"])  # Linux keeps both spellings

    result = scan_folder(folder)
    assert result.classes == [NFC, "thé"] and len(result.items) == 8
    assert sum(1 for i in result.items if i.gold == [0]) == 4
    assert any("one class 'café'" in w for w in result.warnings)
    assert scan_folder(folder, classes=[NFD, "thé"]).classes == [NFC, "thé"]  # given classes are NFC too
    assert "two Unicode spellings" in refused(lambda: scan_folder(folder, classes=[NFC, NFD, "thé"]))

    manifest = write_csv(folder / "m.csv", [["path", "label"], [f"{NFC}/0.png", NFC], [f"{NFD}/2.png", NFD],
                                            ["thé/4.png", "thé"]])
    assert read_manifest(manifest).classes == [NFC, "thé"]

    wb = Workbench(settings)  # through to the export: one class, one folder
    said: list[str] = []
    pid = wb.create_project(ProjectConfig(name="drinks", round_size=8, eval_size=0, pick_ahead=0), folder,
                            on_warning=said.append)
    assert wb.project(pid).classes == [NFC, "thé"] and any("one class 'café'" in w for w in said)
    worker = Worker(settings, device="cpu")
    while worker.run_once():
        pass
    while (task := wb.next_assignment(pid, "ann")) is not None:
        wb.submit(pid, task.entry_id, "ann", [0 if task.key.split("/")[0] in (NFC, NFD) else 1])
    _, data = wb.export(pid, "zip")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        folders = {name.split("/")[1] for name in zf.namelist() if name != "labels.csv"}
    assert folders == {NFC, "thé"}


def test_the_default_export_file_name_fits_any_project_name(settings: Settings, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    wb = Workbench(settings)
    too_long = "𝐀" * 5000  # a letter of 4 UTF-8 bytes
    assert "at most 200 characters" in refused(lambda: wb.create_project(ProjectConfig(name=too_long), "demo"))
    with wb.db.write() as s:  # a name stored before the cap existed
        project = Project(name=too_long, classes=["a", "b"], data_root=str(tmp_path), backbone={"name": "pixels"},
                          head={"kind": "linear"}, training={}, strategy="random", strategy_params={})
        s.add(project)
        s.flush()
        pid = project.id
    for fmt in ("csv", "jsonl", "parquet", "zip"):
        name, _ = wb.export(pid, fmt)
        assert len(name.encode()) <= NAME_MAX_BYTES and name.startswith("𝐀")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["export", f"#{pid}", "--format", "csv"]) == 0  # no --out: the file is named after the project
    written = [p for p in tmp_path.iterdir() if p.name.endswith("_labels.csv")]
    assert len(written) == 1 and written[0].read_bytes().startswith(b"path,label")


# ----- B. CSV separators --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_a_manifest_separated_by_semicolons_or_tabs_is_read(tmp_path: Path, delimiter: str) -> None:
    for k, name in enumerate(["cat", "dog", "cat", "dog"]):
        write_png(tmp_path / f"{k}.png", k)
    rows = [["path", "label", "split"], ["0.png", "cat", "eval"], ["1.png", "dog", ""], ["2.png", "cat", "pool"],
            ["3.png", "dog", ""]]
    result = read_manifest(write_csv(tmp_path / "m.csv", rows, delimiter))
    assert result.classes == ["cat", "dog"]
    assert [(i.key, result.classes[i.gold[0]], i.split) for i in result.items] == [
        ("0.png", "cat", "eval"), ("1.png", "dog", None), ("2.png", "cat", "pool"), ("3.png", "dog", None)]
    tags = write_csv(tmp_path / "tags.csv", [["path", "label"], ["0.png", "cat;dog"], ["1.png", "dog"]], delimiter)
    multi = read_manifest(tags, multi_label=True)  # a ';' inside a quoted cell is still the tag separator
    assert [sorted(multi.classes[g] for g in i.gold) for i in multi.items] == [["cat", "dog"], ["dog"]]


def test_a_manifest_without_a_path_column_says_which_separator_it_looks_like(tmp_path: Path) -> None:
    write_png(tmp_path / "0.png", 0)
    semicolons = write_csv(tmp_path / "semi.csv", [["file", "label"], ["0.png", "cat"]], ";")
    message = refused(lambda: read_manifest(semicolons))
    assert str(semicolons) in message and "no 'path' column" in message
    assert "looks ';'-separated, with the columns ['file', 'label']" in message
    commas = write_csv(tmp_path / "comma.csv", [["file", "label"], ["0.png", "cat"]])
    assert "looks" not in refused(lambda: read_manifest(commas))


# ----- C. an undo after its answer closed the round -----------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "undo.sqlite")
    return request.getfixturevalue("pg_url")


def _label(wb: Workbench, pid: int, how: str, value: int, seq: list[int]) -> int:
    """Answer the annotator's next item through one answer path; returns the entry id."""
    if how == "workbench":
        task = wb.next_assignment(pid, "ann")
        wb.submit(pid, task.entry_id, "ann", [value])
        return task.entry_id
    with wb.db.write() as s:
        entry_id = answers.claim_ahead(s, pid, "ann", 1)[0].entry_id
    seq[0] += 1
    with wb.db.write() as s:
        result = answers.apply_answers(s, pid, "ann", "tab", [{"seq": seq[0], "entry_id": entry_id, "kind": "label",
                                                              "value": [value]}],
                                       after_answer=rounds.after_answer_of)
    assert result.outcomes[0].status == "applied", result
    return entry_id


def _undo(wb: Workbench, pid: int, how: str, entry_id: int, seq: list[int]) -> None:
    if how == "workbench":
        assert wb.undo(pid, "ann").queue_entry_id == entry_id
        return
    seq[0] += 1
    with wb.db.write() as s:
        result = answers.apply_answers(s, pid, "ann", "tab", [{"seq": seq[0], "entry_id": entry_id, "kind": "undo"}])
    assert result.outcomes[0].status == "applied" and "round 0 is training" in result.outcomes[0].note


def _state(wb: Workbench, pid: int, round_id: int, entry_id: int) -> tuple:
    with wb.db.read() as s:
        entry = s.get(QueueEntry, entry_id)
        trains = s.scalar(select(func.count()).select_from(Job).where(Job.round_id == round_id, Job.kind == "train"))
        labels = {item: lab.value for item, lab in current_labels(s, pid).items()}
        return entry.state, entry.claimed_by, s.get(Round, round_id).state, trains, labels.get(entry.item_id)


@pytest.mark.parametrize("how", ["workbench", "surface"])
def test_an_undo_after_the_round_closed_reopens_the_item_for_a_new_label(backend_url: str, tmp_path: Path,
                                                                         how: str) -> None:
    wb = Workbench(Settings(home=tmp_path / "home", db_url=backend_url))
    pid, round_id = make_round(wb.db, 3)
    seq = [0]
    entries = [_label(wb, pid, how, 0, seq) for _ in range(3)]
    assert _state(wb, pid, round_id, entries[-1]) == ("labeled", "ann", "training", 1, [0])  # the last answer closed it

    _undo(wb, pid, how, entries[-1], seq)  # arrives after the round went to training
    assert _state(wb, pid, round_id, entries[-1]) == ("claimed", "ann", "training", 1, None)
    # the item is the annotator's next one on either path; labeled again, it replaces the retracted label
    assert wb.next_assignment(pid, "ann").entry_id == entries[-1]
    with wb.db.write() as s:
        assert [c.entry_id for c in answers.claim_ahead(s, pid, "ann", 3)] == [entries[-1]]
    again = _label(wb, pid, how, 2, seq)
    assert again == entries[-1]
    assert _state(wb, pid, round_id, again) == ("labeled", "ann", "training", 1, [2])  # the round still trains once
    with wb.db.read() as s:
        assert sorted(lab.value[0] for lab in current_labels(s, pid).values()) == [0, 0, 2]

    # undone again and left: the reopened entry is dropped when its lease runs out, never left open in a closed round
    _undo(wb, pid, how, again, seq)
    with wb.db.write() as s:
        s.execute(update(QueueEntry).where(QueueEntry.id == again)
                  .values(lease_expires=utcnow() - timedelta(seconds=1)))
    assert wb.next_assignment(pid, "ann") is None  # no labeling round, and the reopened lease ran out
    assert _state(wb, pid, round_id, again) == ("dropped", None, "training", 1, None)
    wb.db.dispose()


def test_an_undo_of_a_closed_rounds_answer_given_back_is_dropped_not_queued(settings: Settings) -> None:
    wb = Workbench(settings)
    pid, round_id = make_round(wb.db, 1)
    entry = _label(wb, pid, "workbench", 1, [0])
    wb.undo(pid, "ann")
    wb.release(entry, "ann")  # the annotator leaves: a closed round's entry is not pending again
    assert _state(wb, pid, round_id, entry) == ("dropped", None, "training", 1, None)
    assert wb.undo(pid, "ann") is None  # nothing left to undo


# ----- D. import warnings reach the user ----------------------------------------------------------------------------
def _leaky_manifest(folder: Path) -> Path:
    """The same image as '**same**.png' in the eval set and as 'copy.png' in the pool."""
    write_png(folder / "**same**.png", 0)
    write_png(folder / "copy.png", 0)
    for k in range(1, 5):
        write_png(folder / f"{k}.png", k)
    rows = [["path", "label", "split"], ["**same**.png", "cat", "eval"], ["copy.png", "cat", "pool"]]
    rows += [[f"{k}.png", "cat" if k % 2 else "dog", ""] for k in range(1, 5)]
    return write_csv(folder / "m.csv", rows)


def test_create_project_hands_the_import_warnings_over(settings: Settings, tmp_path: Path) -> None:
    manifest = _leaky_manifest(tmp_path / "pool")
    (tmp_path / "flat").mkdir()
    wb = Workbench(settings)
    said: list[str] = []
    pid = wb.create_project(ProjectConfig(name="leaky", eval_size=0), manifest, on_warning=said.append)
    assert len(said) == 1 and "'**same**.png' (eval) = 'copy.png' (pool)" in said[0]
    assert wb.status(pid).items == {"eval": 1, "pool": 5}  # warned, not refused

    folder = tmp_path / "pets"
    for k in range(4):
        write_png(folder / ("cat" if k % 2 else "dog") / f"{k}.png", 10 + k)
    (folder / "cat" / "notes.txt").write_text("not an image")
    said.clear()
    wb.create_project(ProjectConfig(name="pets", eval_size=0), folder, on_warning=said.append)
    assert said == ["1 file without an image extension was not imported: 'cat/notes.txt'"]
    said.clear()
    wb.create_project(ProjectConfig(name="tags", task="multi_label", eval_size=10), "demo-tags",
                      on_warning=said.append)
    wb.create_project(ProjectConfig(name="digits", eval_size=10), "demo", on_warning=said.append)
    assert said == []  # the demo's folder, which holds the tag demo's manifest too, says nothing


def test_the_cli_import_prints_the_warnings(settings: Settings, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    manifest = _leaky_manifest(tmp_path / "pool")
    assert cli.main(["import", str(manifest), "--name", "leaky", "--eval-size", "0"]) == 0
    out = capsys.readouterr()
    assert "project 1 'leaky' created" in out.out
    assert "warning: 1 image is both in the evaluation set and in the pool" in out.err
    assert "'**same**.png' (eval) = 'copy.png' (pool)" in out.err


def test_the_projects_page_shows_the_import_warnings_as_text(settings: Settings, tmp_path: Path) -> None:
    from streamlit.testing.v1 import AppTest

    manifest = _leaky_manifest(tmp_path / "pool")
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "streamlit_app.py"), default_timeout=30)
    at.run()
    at.text_input(key="new_name").input("Leaky")
    at.radio(key="new_source").set_value("manifest").run()
    at.text_input(key="new_manifest").input(str(manifest))
    at.number_input(key="new_eval_size").set_value(0)
    at.button(key="create_project").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "Created project 'Leaky'" in at.success[0].value
    (warning,) = [w.value for w in at.warning if "evaluation set" in w.value]
    assert ui.text("'**same**.png' (eval)") in warning  # the stars are escaped: shown as typed, never bold
    assert "**same**" not in warning

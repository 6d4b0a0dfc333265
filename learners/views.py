"""Augmented feature views for semi-supervised training (specs/training.md, "Features and views").

- `weak`: RandomResizedCrop to the backbone's input size (scale 0.6..1) and a horizontal flip (p = 0.5).
- `strong`: `weak` followed by RandAugment(num_ops=3, magnitude=5).

The augmentation runs on the decoded PIL image, then the backbone's own eval transform turns it into the
backbone's input; the backbone then embeds it like any plain image. Each view is embedded `copies` times (K);
training epoch e reads copy e mod K.

Standardize the raw view features with the plain view's mean and std through `standardize_views` (it zeroes
columns that never vary in the plain view, which would otherwise blow up to ~1e6).

Every augmented image is seeded by (seed, view, copy, position in `paths`), so the same call gives the same
features whatever the batch size or the number of DataLoader workers.

Flips: the spec's weak view flips, which suits photos but not handwriting (a flipped 2 is not a 2); pass
`flip=False` for digits, text or other chirality-sensitive images. On the demo digits (benchmarks/bench_ssl.py,
mlp, 50 labels) flexmatch scored 68.2 % with flips and 84.8 % without, against 80.9 % supervised. For the `pixels` backbone the crop is applied
to the decoded image at the backbone's (small) input size, like any other backbone.
"""
from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from learners.backbones import Backbone
from learners.embedding import Progress, embed_images, standardize

VIEW_NAMES = ("weak", "strong")
CROP_SCALE = (0.6, 1.0)
RANDAUGMENT_OPS = 3
RANDAUGMENT_MAGNITUDE = 5


def backbone_input_size(backbone: Backbone) -> tuple[int, int]:
    """(height, width) of the tensor `backbone.transform` produces, read off a blank image."""
    shape = backbone.transform(Image.new("RGB", (64, 64))).shape
    return int(shape[-2]), int(shape[-1])


def view_augmentation(view: str, size: tuple[int, int], *, flip: bool = True) -> Callable[[Image.Image], Image.Image]:
    """The PIL -> PIL augmentation of `view` ('weak' or 'strong'); it draws from torch's global RNG."""
    if view not in VIEW_NAMES:
        raise ValueError(f"unknown view {view!r}; known: {', '.join(VIEW_NAMES)}")
    steps: list[Callable] = [v2.RandomResizedCrop(size, scale=CROP_SCALE, antialias=True)]
    if flip:
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    if view == "strong":
        steps.append(v2.RandAugment(num_ops=RANDAUGMENT_OPS, magnitude=RANDAUGMENT_MAGNITUDE))
    return v2.Compose(steps)


def item_seed(seed: int, view: str, copy: int, position: int) -> int:
    """A deterministic 63-bit seed for one augmented image."""
    words = [seed, zlib.crc32(view.encode()), copy, position]
    return int(np.random.SeedSequence(words).generate_state(2, dtype=np.uint32).view(np.uint64)[0] >> 1)


class SeededViewTransform:
    """(image, position) -> backbone input: the view's augmentation under a per-item seed, then the backbone's
    transform. Torch's global RNG is restored afterwards. A class so DataLoader workers can pickle it."""

    def __init__(self, backbone_transform: Callable[[Image.Image], torch.Tensor], view: str, copy: int,
                 seed: int, size: tuple[int, int], flip: bool = True) -> None:
        self.backbone_transform = backbone_transform
        self.augment = view_augmentation(view, size, flip=flip)
        self.view, self.copy, self.seed = view, copy, seed

    def __call__(self, image: Image.Image, position: int) -> torch.Tensor:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed(self.seed, self.view, self.copy, position))
            augmented = self.augment(image)
        return self.backbone_transform(augmented)


def embed_views(
    paths: Sequence[str | Path],
    backbone: Backbone,
    views: Sequence[str] = VIEW_NAMES,
    copies: int = 2,
    *,
    seed: int = 0,
    flip: bool = True,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str = "cpu",
    progress: Progress | None = None,
    failed: list[tuple[int, str]] | None = None,
) -> dict[str, np.ndarray]:
    """Augmented features: {view: float32 array (copies, len(paths), backbone.dim)}, rows in the order of `paths`.

    Raw backbone outputs: standardize them with the pool's plain-view mean and std (`standardize_views`)
    before training. The same arguments give the same arrays.
    `progress(fraction, message)` covers all views and copies together. With a `failed` list, a file that cannot
    be decoded gets NaN rows and (position, message) in `failed` (once per view and copy) instead of a ValueError.
    """
    if copies < 1:
        raise ValueError(f"copies must be >= 1, got {copies}")
    for view in views:
        view_augmentation(view, (1, 1))  # validates the name before any work
    size = backbone_input_size(backbone)
    passes = [(view, copy) for view in views for copy in range(copies)]
    out = {view: np.empty((copies, len(paths), backbone.dim), dtype=np.float32) for view in views}
    for done, (view, copy) in enumerate(passes):
        transform = SeededViewTransform(backbone.transform, view, copy, seed, size, flip)
        def pass_progress(fraction: float, message: str, done: int = done, view: str = view,
                          copy: int = copy) -> None:
            progress((done + fraction) / len(passes), f"view {view} copy {copy + 1}/{copies}: {message}")
        out[view][copy] = embed_images(paths, backbone, batch_size=batch_size, num_workers=num_workers,
                                       device=device, progress=pass_progress if progress else None,
                                       image_transform=transform, failed=failed)
    if progress and not passes:
        progress(1.0, "no views to embed")
    return out


def standardize_views(views: dict[str, np.ndarray], mean: np.ndarray, std: np.ndarray) -> dict[str, np.ndarray]:
    """Raw view features (K, N, d) standardized with the plain view's `mean` and `std` (from
    `learners.embedding.standardize` of the plain features), float32.

    Columns that are constant in the plain view (std at standardize's 1e-6 floor; e.g. the border pixels of
    the digits under the `pixels` backbone) are set to 0, the value every plain row has there: an augmentation
    that moves ink into them would otherwise give values around 1e6.
    """
    constant = np.asarray(std, dtype=np.float32) <= np.float32(1e-6)
    out = {}
    for name, array in views.items():
        array = np.asarray(array, dtype=np.float32)
        if array.ndim != 3 or array.shape[2] != len(mean):
            raise ValueError(f"view {name!r} must have shape (K, N, {len(mean)}), got {array.shape}")
        copies = np.stack([standardize(copy, mean, std)[0] for copy in array])
        copies[:, :, constant] = 0.0
        out[name] = copies
    return out

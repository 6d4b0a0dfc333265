"""Embedding throughput on CPU, and selection time for the uncertainty strategies.

    .venv/bin/python benchmarks/bench_embedding.py [--images 256] [--image-size 128] [--batch-size 64] [--repeats 3]

For `pixels` and `timm/resnet18` (random weights, no download) it times `embed_images` over PNG files written to
a temp folder (decode + transform + forward, with 0, 1 and 2 DataLoader workers) and a bare forward loop over the
same images already transformed (same batch size, inference_mode), and prints their ratio (goal: >= 0.8 for
the CNN; for `pixels` the forward is a reshape, so the ratio only shows that decoding dominates). Then it times
`select` of margin / confidence / entropy / random at N = 1,000,000 candidates, C = 100 classes, budget 1000.
Each figure is the best of --repeats runs (interleaved, after a warm-up): the machine may be shared.
resnet18 runs at 128 px by default because 224 px is slow on a small CPU (about 10 images/s on 2 cores);
pass --image-size 224 to compare.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from learners.backbones import Backbone, BackboneSpec, load_backbone  # noqa: E402
from learners.embedding import embed_images  # noqa: E402
from learners.strategies import StrategyInputs, get_strategy  # noqa: E402


def best_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def write_images(folder: Path, count: int, side: int = 256, seed: int = 0) -> list[Path]:
    """Smooth random RGB images (low-resolution noise scaled up), like photos in how PNG compresses them."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        small = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((side, side), Image.Resampling.BICUBIC)
        path = folder / f"img_{i:04d}.png"
        image.save(path)
        paths.append(path)
    return paths


def pretransformed(backbone: Backbone, paths: list[Path], batch_size: int) -> list[torch.Tensor]:
    batches = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        batches.append(torch.stack([backbone.transform(Image.open(p).convert("RGB")) for p in chunk]))
    return batches


def forward_all(backbone: Backbone, batches: list[torch.Tensor]) -> None:
    with torch.inference_mode():
        for batch in batches:
            backbone.module(batch)


def bench_embedding(args: argparse.Namespace) -> None:
    specs = [BackboneSpec("pixels"), BackboneSpec("timm/resnet18", pretrained=False, image_size=args.image_size)]
    worker_counts = (0, 1, 2)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_images(Path(tmp), args.images)
        print(f"{args.images} PNG images 256x256, batch {args.batch_size}, torch threads {torch.get_num_threads()}, "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
        print(f"{'backbone':<22} {'workers':>7} {'embed img/s':>12} {'bare img/s':>11} {'embed/bare':>10}")
        for spec in specs:
            backbone = load_backbone(spec)
            batches = pretransformed(backbone, paths, args.batch_size)
            forward_all(backbone, batches[:1])  # warm-up
            runs: dict[str | int, Callable[[], object]] = {"bare": lambda: forward_all(backbone, batches)}
            for workers in worker_counts:
                runs[workers] = lambda w=workers: embed_images(paths, backbone, batch_size=args.batch_size,
                                                               num_workers=w)
            # interleaved repeats, so that a burst of load from elsewhere does not favour one variant
            seconds = {key: float("inf") for key in runs}
            for _ in range(args.repeats):
                for key, run in runs.items():
                    seconds[key] = min(seconds[key], best_time(run, 1))
            bare_rate = len(paths) / seconds["bare"]
            label = f"{spec.name} @{spec.image_size or 16}px"
            for workers in worker_counts:
                rate = len(paths) / seconds[workers]
                note = "  (decode-bound: the forward is a reshape)" if spec.name == "pixels" else ""
                print(f"{label:<22} {workers:>7} {rate:>12.1f} {bare_rate:>11.1f} {rate / bare_rate:>10.2f}{note}")


def bench_selection(args: argparse.Namespace) -> None:
    n, c, budget = 1_000_000, 100, 1000
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((n, c), dtype=np.float32) * 3
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits, out=logits)
    probs /= probs.sum(axis=1, keepdims=True)
    all_items = np.arange(n)
    half = np.sort(rng.permutation(n)[: n // 2])
    print(f"\nselect: N = {n:,} pool rows, C = {c}, budget {budget}, CPU, best of {args.repeats}")
    print(f"{'strategy':<12} {'all N (s)':>10} {'random half (s)':>16}")
    for name in ("margin", "confidence", "entropy", "random"):
        strategy = get_strategy(name)
        row = []
        for candidates in (all_items, half):
            inputs = StrategyInputs(candidates, probs=probs)
            strategy.select(StrategyInputs(candidates[:1000], probs=probs), 10, np.random.default_rng(1))  # warm-up
            row.append(best_time(lambda: strategy.select(inputs, budget, np.random.default_rng(1)), args.repeats))
        print(f"{name:<12} {row[0]:>10.3f} {row[1]:>16.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=128,
                        help="resnet18 input side (default 128: at 224 a 2-core CPU manages ~10 images/s)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-embedding", action="store_true")
    parser.add_argument("--skip-selection", action="store_true")
    args = parser.parse_args()
    if not args.skip_embedding:
        bench_embedding(args)
    if not args.skip_selection:
        bench_selection(args)


if __name__ == "__main__":
    main()

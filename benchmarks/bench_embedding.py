"""Embedding throughput (CPU or CUDA, fp32 or mixed precision), and selection time for the uncertainty strategies.

    .venv/bin/python benchmarks/bench_embedding.py [--images 256] [--image-size 128] [--batch-size 64] [--repeats 3]
        [--device cpu|cuda] [--amp none|bf16|fp16|both] [--backbones pixels,timm/resnet18] [--workers 0,1,2]

For each backbone (random weights, no download) it times `embed_images` over PNG files written to a temp folder
(decode + transform + forward, with each count of DataLoader workers) and a bare forward loop over the same images
already transformed and on the device (same batch size, inference_mode, the same autocast), and prints their
ratio (goal: >= 0.8 for a CNN; for `pixels` the forward is a reshape, so the ratio only shows that decoding
dominates). Then it times `select` of margin / confidence / entropy / random at N = 1,000,000 candidates,
C = 100 classes, budget 1000. Each figure is the best of --repeats runs (interleaved, after a warm-up): the machine
may be shared.

On a CPU `--amp` is ignored (fp32); resnet18 runs at 128 px by default because 224 px is slow on a small CPU
(about 10 images/s on 2 cores). With `--device cuda` the defaults become 1024 images, resnet50 at 224 px, batch
128, loader workers 0 and 8, 2 repeats, and `--amp both` times fp32 (the reference), bf16 and fp16
(`benchmarks/gpu_check.sh`).
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
from learners.embedding import _autocast, embed_images, to_device  # noqa: E402
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


def pretransformed(backbone: Backbone, paths: list[Path], batch_size: int, device: str) -> list[torch.Tensor]:
    batches = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        batch = torch.stack([backbone.transform(Image.open(p).convert("RGB")) for p in chunk])
        batches.append(to_device(batch, device))
    return batches


def forward_all(backbone: Backbone, batches: list[torch.Tensor], device: str, amp: str) -> None:
    with torch.inference_mode(), _autocast(device, amp):
        for batch in batches:
            backbone.module(batch)
    if device == "cuda":
        torch.cuda.synchronize()


def bench_embedding(args: argparse.Namespace) -> None:
    cuda = args.device == "cuda"
    specs = [BackboneSpec(name, pretrained=False, image_size=None if name == "pixels" else args.image_size)
             for name in args.backbones.split(",")]
    worker_counts = [int(w) for w in args.workers.split(",")]
    amps = ["none"] if not cuda else (["none", "bf16", "fp16"] if args.amp == "both" else [args.amp])
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_images(Path(tmp), args.images)
        gpu = f", {torch.cuda.get_device_name()}" if cuda else ""
        print(f"{args.images} PNG images 256x256, batch {args.batch_size}, device {args.device}{gpu}, torch threads "
              f"{torch.get_num_threads()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
        print(f"{'backbone':<22} {'amp':>5} {'workers':>7} {'embed img/s':>12} {'bare img/s':>11} {'embed/bare':>10}")
        for spec in specs:
            backbone = load_backbone(spec, device=args.device)
            if cuda:
                backbone.module.to(memory_format=torch.channels_last)
            batches = pretransformed(backbone, paths, args.batch_size, args.device)
            for amp in amps:
                forward_all(backbone, batches[:2], args.device, amp)  # warm-up (cuDNN picks its kernels)
                runs: dict[str | int, Callable[[], object]] = {
                    "bare": lambda a=amp: forward_all(backbone, batches, args.device, a)}
                for workers in worker_counts:
                    runs[workers] = lambda w=workers, a=amp: embed_images(
                        paths, backbone, batch_size=args.batch_size, num_workers=w, device=args.device, amp=a)
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
                    print(f"{label:<22} {amp:>5} {workers:>7} {rate:>12.1f} {bare_rate:>11.1f} "
                          f"{rate / bare_rate:>10.2f}{note}")


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
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--amp", choices=["none", "bf16", "fp16", "both"], default="none",
                        help="autocast dtype on CUDA (both: fp32, then bf16, then fp16); a CPU always runs fp32")
    parser.add_argument("--images", type=int, default=None, help="default 256 (cpu), 1024 (cuda)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="CNN input side (default 128 on a CPU: at 224 a 2-core CPU manages ~10 images/s; "
                             "224 on CUDA)")
    parser.add_argument("--batch-size", type=int, default=None, help="default 64 (cpu), 128 (cuda)")
    parser.add_argument("--backbones", default=None, help="comma-separated; default pixels,timm/resnet18 (cpu), "
                                                          "timm/resnet50 (cuda)")
    parser.add_argument("--workers", default=None, help="DataLoader worker counts, comma-separated; default 0,1,2 "
                                                        "(cpu), 0,8 (cuda)")
    parser.add_argument("--repeats", type=int, default=None, help="default 3 (cpu), 2 (cuda)")
    parser.add_argument("--skip-embedding", action="store_true")
    parser.add_argument("--skip-selection", action="store_true")
    args = parser.parse_args()
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible")
    defaults = {"images": (256, 1024), "image_size": (128, 224), "batch_size": (64, 128),
                "backbones": ("pixels,timm/resnet18", "timm/resnet50"), "workers": ("0,1,2", "0,8"),
                "repeats": (3, 2)}
    for name, (on_cpu, on_cuda) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, on_cuda if cuda else on_cpu)
    if not args.skip_embedding:
        bench_embedding(args)
    if not args.skip_selection:
        bench_selection(args)


if __name__ == "__main__":
    main()

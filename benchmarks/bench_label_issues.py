"""How well the Review page's scan (learners.label_issues: out-of-fold probabilities + cleanlab) finds wrong labels,
on the bundled digits with a scripted noisy annotator.

    .venv/bin/python benchmarks/bench_label_issues.py [--seeds 5] [--labels 500] [--noise 0.05,0.10]
        [--heads linear,mlp] [--features pixels16]

Per seed s and noise rate r: numpy's default_rng(s) picks `--labels` of the 1797 digits as the labeled pool items;
the annotator gives round(r * labels) of them, chosen at random, another class drawn uniformly from the other 9
(the flips), and the gold class to the rest. Features are standardized with the statistics of all 1797 items (the
pool, as app.jobs.review does); `pixels16` is what the workbench computes for its demo (the 32x32 PNGs of
storage.demo embedded by the `pixels` backbone), `pixels8` the raw 8x8 pixels. The scan: `out_of_fold_probs` (5
stratified folds seeded by s, each fold a head of the kind with HeadConfig defaults) then `ranked_issues`.
With k = the number of flips:
- precision@k: the share of flips among the first k flagged items (among all flagged when fewer are flagged);
- recall@k: the share of the flips found among those first k;
- flagged: how many items cleanlab flags in all, and the precision and recall of that whole list;
- suggestion right: among the flips found in the first k, the share whose suggested class is the gold one.
Each cell: mean over seeds +- standard error (sample std / sqrt(seeds)).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from learners.embedding import standardize
from learners.heads import HeadConfig
from learners.label_issues import out_of_fold_probs, ranked_issues

NUM_CLASSES = 10


def pixel_features(name: str) -> np.ndarray:
    """Raw features of the 1797 digits, in load_digits order."""
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


def noisy_labels(gold: np.ndarray, rate: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(the annotator's labels, the rows flipped): round(rate * n) rows get another class, uniformly."""
    flipped = rng.choice(len(gold), int(round(rate * len(gold))), replace=False)
    given = gold.copy()
    given[flipped] = (gold[flipped] + rng.integers(1, NUM_CLASSES, len(flipped))) % NUM_CLASSES
    return given, np.sort(flipped)


def one_run(x: np.ndarray, gold: np.ndarray, n_labels: int, rate: float, head: str, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(gold), n_labels, replace=False)
    given, flipped = noisy_labels(gold[rows], rate, rng)
    probs = out_of_fold_probs(x[rows], given, NUM_CLASSES, HeadConfig(kind=head, seed=seed), seed=seed)
    issues = ranked_issues(given, probs)
    k = len(flipped)
    flips = set(flipped.tolist())
    top = issues[:k]
    hits = [issue for issue in top if issue.index in flips]
    every = sum(issue.index in flips for issue in issues)
    return {
        "precision@k": len(hits) / len(top) if top else 0.0,
        "recall@k": len(hits) / k,
        "flagged": len(issues),
        "precision(all)": every / len(issues) if issues else 0.0,
        "recall(all)": every / k,
        "suggestion right": (np.mean([issue.suggested == gold[rows][issue.index] for issue in hits])
                             if hits else float("nan")),
    }


def cell(values: list[float]) -> str:
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return "-"
    se = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0.0
    return f"{values.mean():.3f} ± {se:.3f}" if values.mean() <= 1 else f"{values.mean():.1f} ± {se:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--labels", type=int, default=500)
    parser.add_argument("--noise", default="0.05,0.10")
    parser.add_argument("--heads", default="linear")
    parser.add_argument("--features", default="pixels16", choices=("pixels16", "pixels8"))
    args = parser.parse_args()
    gold = load_digits().target.astype(np.int64)
    x, _, _ = standardize(pixel_features(args.features))
    columns = ("precision@k", "recall@k", "flagged", "precision(all)", "recall(all)", "suggestion right")
    print(f"digits ({args.features}), {args.labels} labeled pool items, {args.seeds} seeds, mean ± SE")
    print("| head | noise | flips (k) | " + " | ".join(columns) + " | seconds/scan |")
    print("|---" * (len(columns) + 4) + "|")
    for head in args.heads.split(","):
        for rate in (float(r) for r in args.noise.split(",")):
            runs, started = [], time.perf_counter()
            for seed in range(args.seeds):
                runs.append(one_run(x, gold, args.labels, rate, head, seed))
            seconds = (time.perf_counter() - started) / args.seeds
            k = int(round(rate * args.labels))
            print(f"| {head} | {rate:.0%} | {k} | " + " | ".join(cell([r[c] for r in runs]) for c in columns)
                  + f" | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()

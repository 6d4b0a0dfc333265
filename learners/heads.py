"""Light classification heads trained on cached features (multi-class: softmax + cross-entropy; multi-label:
independent sigmoids + binary cross-entropy).

`linear` is one Linear layer; `mlp` is Linear(d, 512), ReLU, Linear(512, C) whose hidden layer is the
penultimate representation G used by BADGE/coreset; `bottleneck` is LFTL's head (specs/lftl.md): Linear(d, 256),
BatchNorm1d(256) (its output is the penultimate representation), then a weight-normalised Linear(256, C).
Heads are retrained from scratch and fully seeded, unless `init` (a trained head of the same kind and shape)
warm-starts them, as LFTL does from round to round.

Multi-label (`multi_label=True` to `train_head`, like `num_classes` a fact about the labels rather than a tunable
setting): labels are an (N, K) 0/1 matrix, the loss is binary cross-entropy with logits averaged over every
(item, class) entry, and the TrainedHead remembers it (`multi_label`, saved in `metadata()` as "multi_label":
"true"/"false"; heads saved before this key existed load as multi-class), so `predict_proba` applies a sigmoid per
class instead of a softmax. The same architectures serve both: only the output activation and the loss change.

Training (`HeadConfig.solver`). `linear` and `mlp` are fit by default with full-batch L-BFGS ("lbfgs") to the
optimum of the L2-regularised loss in scikit-learn's parametrisation: mean loss + ||theta||^2 / (2 C m), theta
every parameter (weights and biases), m the number of terms the loss averages (labeled rows; rows x classes for
multi-label). For `linear` the objective is strictly convex: the head is multinomial L2 logistic regression
(one-vs-rest for multi-label) with the bias penalised like a weight, i.e. scikit-learn's LogisticRegression at the
same C on the features plus a constant column (liblinear's convention), and reaches that one optimum from any start.
C (DEFAULT_C): 1 for `linear` (scikit-learn's default), 10 for `mlp`; C = "cv" chooses it per training by
cross-validation on the labeled rows (`choose_C`), for features where 1 is far off. It is not the default: on the
digits it gains only with all 1397 pool labels on the workbench's 256 pixel features (+0.5 points; there C = 1 is
a point below the best C, about 0.1), stays within 0.4 points of C = 1 elsewhere, and fits 91 heads per training
(the digits simulation ran about 10 times longer on a CPU).
Why the bias is penalised: scikit-learn's lbfgs leaves it free, so it fits the labeled set's class frequencies,
which are noise at a few labels per class; shrinking it towards equal priors gained 4.2 +- 1.0 points at 20 labels
on the digits, 1.4 +- 0.5 at 50, 0.5 +- 0.1 at 100 and nothing measurable from 200 on (-0.1 +- 0.1, 20 seeds), and
it gives a class without labels a finite logit (a free bias would run to minus infinity). The specs' recipe (Adam,
mini-batches, 20 epochs; solver "adam") left the linear head 1 to 2 points below LogisticRegression on the digits
from 100 labels on (benchmarks/bench_heads_vs_sklearn.py), and a weak supervised head inflates every strategy's
savings against random. `bottleneck` keeps Adam: its BatchNorm's running statistics are an average over training
steps, and LFTL trains it with SGD (learners.vpa).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from learners.catalog import HEAD_KINDS
from learners.cpu import one_cpu_thread
from learners.settings_dict import from_settings

Progress = Callable[[float, str], None]

MLP_HIDDEN = 512
BOTTLENECK_DIM = 256
SOLVERS = ("lbfgs", "adam")
DEFAULT_SOLVER = {"linear": "lbfgs", "mlp": "lbfgs", "bottleneck": "adam"}
# L-BFGS iterations at most: the convex linear fit stops on its own tolerance well before (69 iterations on all the
# digits); the mlp's objective creeps on for thousands but moves < 0.2 % after 200, as scikit-learn's MLP stops.
DEFAULT_MAX_ITER = {"linear": 500, "mlp": 200}
# Inverse L2 strength per kind: scikit-learn's default 1 for the linear head; for the mlp 10, as accurate as 1 or 100
# on the digits from 200 labels on and a point better at 20-50 (5 seeds, within noise). "cv" chooses it (`choose_C`).
DEFAULT_C: dict[str, float | str] = {"linear": 1.0, "mlp": 10.0}
CV_GRID = tuple(float(c) for c in np.logspace(-2, 2, 9))  # half decades, 0.01 .. 100
CV_FOLDS = 10
CV_MAX_ROWS = 2000  # cross-validation fits 10 x 9 heads: on more labels it runs on a random subset of this many
CV_FALLBACK_C = 1.0  # scikit-learn's default, when the labels are too few to cross-validate
# (learning rate, weight decay) of Adam per kind, from specs/training.md; the spec gives none for `bottleneck`
# trained supervised (LFTL trains it with SGD, learners.vpa), so it takes the mlp's.
DEFAULT_OPTIMISER = {"linear": (3e-3, 1e-4), "mlp": (1e-3, 1e-3), "bottleneck": (1e-3, 1e-3)}
LBFGS_HISTORY = 20
# Stop when the largest gradient entry is below this (float32 cannot go much further on a mean loss).
LBFGS_TOLERANCE = 1e-7
PROGRESS_REPORTS = 10  # L-BFGS reports progress this many times at most


@dataclass
class HeadConfig:
    """How to train a head (module docstring, "Training"). `solver` None means the kind's default
    (DEFAULT_SOLVER). "lbfgs" reads `C` (inverse L2 strength, as scikit-learn's; None: DEFAULT_C) and `max_iter`
    (L-BFGS iterations at most; None: DEFAULT_MAX_ITER). "adam" reads `epochs`, `batch_size`, `lr`,
    `weight_decay` (None: the kind's DEFAULT_OPTIMISER) and `min_steps_per_epoch`; the semi-supervised methods of
    learners.ssl read those too, whatever the solver (they train with their own loops)."""

    kind: str = "linear"
    solver: str | None = None
    C: float | str | None = None
    max_iter: int | None = None
    epochs: int = 20
    batch_size: int = 128
    lr: float | None = None
    weight_decay: float | None = None
    seed: int = 0
    # An epoch is one pass over the labels but at least this many optimiser steps: with one pass, 50 labels would
    # train for 20 steps in all (undertrained; measured in benchmarks/bench_ssl.py and bench_simulation.py).
    min_steps_per_epoch: int = 10

    def __post_init__(self) -> None:
        if self.kind not in HEAD_KINDS:
            raise ValueError(f"unknown head kind {self.kind!r}; known: {', '.join(HEAD_KINDS)}")
        if self.solver is not None and self.solver not in SOLVERS:
            raise ValueError(f"unknown head solver {self.solver!r}; known: {', '.join(SOLVERS)}")
        if self.kind == "bottleneck" and self.resolved_solver != "adam":
            raise ValueError("the bottleneck head trains with adam only: its BatchNorm statistics are an average "
                             "over training steps, not over one full batch")
        if self.C is not None and self.C != "cv" and not (isinstance(self.C, int | float) and self.C > 0):
            raise ValueError(f"C must be a number > 0 or 'cv', got {self.C!r}")
        if self.max_iter is not None and self.max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {self.max_iter}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> HeadConfig:
        return from_settings(cls, d, "head")

    @property
    def resolved_solver(self) -> str:
        return self.solver if self.solver is not None else DEFAULT_SOLVER[self.kind]

    @property
    def resolved_C(self) -> float | str:
        return self.C if self.C is not None else DEFAULT_C[self.kind]

    @property
    def resolved_max_iter(self) -> int:
        return self.max_iter if self.max_iter is not None else DEFAULT_MAX_ITER[self.kind]

    @property
    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_OPTIMISER[self.kind][0]

    @property
    def resolved_weight_decay(self) -> float:
        return self.weight_decay if self.weight_decay is not None else DEFAULT_OPTIMISER[self.kind][1]


class _HeadNet(nn.Module):
    """Optional hidden layer (Linear + ReLU) followed by the output Linear."""

    def __init__(self, in_dim: int, num_classes: int, hidden_dim: int | None) -> None:
        super().__init__()
        self.hidden = nn.Linear(in_dim, hidden_dim) if hidden_dim else None
        self.fc = nn.Linear(hidden_dim or in_dim, num_classes)

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.hidden(x)) if self.hidden is not None else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.penultimate(x))


class _BottleneckNet(nn.Module):
    """LFTL's head: Linear(d, 256) -> BatchNorm1d(256) = the penultimate features, then a weight-normalised
    Linear(256, C) (weight = g v / ||v|| per class row; saved as g, v and the bias)."""

    def __init__(self, in_dim: int, num_classes: int) -> None:
        super().__init__()
        self.bottleneck = nn.Linear(in_dim, BOTTLENECK_DIM)
        self.bn = nn.BatchNorm1d(BOTTLENECK_DIM)
        self.fc = nn.utils.parametrizations.weight_norm(nn.Linear(BOTTLENECK_DIM, num_classes))

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """In training mode a batch of one row has no batch statistics (BatchNorm1d refuses it); such a batch
        is normalised with the running statistics, which it leaves as they are. (A batch of copies of one row,
        as train_head makes from a single label, normalises to BatchNorm's bias: such a head learns little.)"""
        h = self.bottleneck(x)
        if self.training and len(h) == 1:
            bn = self.bn
            return nn.functional.batch_norm(h, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        return self.bn(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.penultimate(x))


HeadNet = _HeadNet | _BottleneckNet


def build_net(kind: str, in_dim: int, num_classes: int) -> HeadNet:
    """An untrained network of `kind` (initialised from the global torch RNG: callers fork and seed it)."""
    if kind == "bottleneck":
        return _BottleneckNet(in_dim, num_classes)
    return _HeadNet(in_dim, num_classes, MLP_HIDDEN if kind == "mlp" else None)


def supervised_loss(logits: torch.Tensor, targets: torch.Tensor, multi_label: bool = False) -> torch.Tensor:
    """Cross-entropy on class indices, or (multi-label) binary cross-entropy with logits on a 0/1 float matrix,
    averaged over every (row, class) entry."""
    if multi_label:
        return nn.functional.binary_cross_entropy_with_logits(logits, targets)
    return nn.functional.cross_entropy(logits, targets)


def output_probs(logits: torch.Tensor, multi_label: bool = False) -> torch.Tensor:
    """Softmax over classes, or (multi-label) an independent sigmoid per class."""
    return torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=1)


class TrainedHead:
    """A trained head: class probabilities and penultimate features for feature rows, saveable as arrays.
    `multi_label`: the head outputs independent sigmoids (trained with binary cross-entropy)."""

    def __init__(self, kind: str, num_classes: int, in_dim: int, net: HeadNet, multi_label: bool = False) -> None:
        self.kind = kind
        self.num_classes = num_classes
        self.in_dim = in_dim
        self.multi_label = bool(multi_label)
        self.net = net.eval()

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def predict_proba(self, features: np.ndarray, batch_size: int = 8192) -> np.ndarray:
        """Probabilities, float32 (N, num_classes), in eval mode (BatchNorm uses its running stats): softmax rows,
        or per-class sigmoids for a multi-label head."""
        return self._apply(features, batch_size, lambda x: output_probs(self.net(x), self.multi_label),
                           self.num_classes)

    def penultimate(self, features: np.ndarray, batch_size: int = 8192) -> np.ndarray:
        """The representation the output layer reads: the ReLU hidden layer (mlp), the BatchNorm output
        (bottleneck) or the features (linear)."""
        width = self.net.fc.in_features
        return self._apply(features, batch_size, self.net.penultimate, width)

    def _apply(self, features: np.ndarray, batch_size: int,
               fn: Callable[[torch.Tensor], torch.Tensor], width: int) -> np.ndarray:
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.in_dim:
            raise ValueError(f"expected features of shape (N, {self.in_dim}), got {features.shape}")
        out = np.empty((len(features), width), dtype=np.float32)
        self.net.eval()
        with torch.inference_mode():
            for start in range(0, len(features), batch_size):
                chunk = torch.from_numpy(features[start:start + batch_size]).to(self.device)
                out[start:start + len(chunk)] = fn(chunk).float().cpu().numpy()
        return out

    def metadata(self) -> dict[str, str]:
        return {"kind": self.kind, "num_classes": str(self.num_classes), "in_dim": str(self.in_dim),
                "multi_label": "true" if self.multi_label else "false"}

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The weights as numpy arrays (for safetensors.numpy.save_file with `metadata()`): every entry of the
        state dict, so also BatchNorm's running statistics and the weight norm's g and v."""
        return {name: t.detach().cpu().numpy().copy() for name, t in self.net.state_dict().items()}

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], metadata: dict[str, str]) -> TrainedHead:
        kind = metadata["kind"]
        if kind not in HEAD_KINDS:
            raise ValueError(f"unknown head kind {kind!r} in saved head; known: {', '.join(HEAD_KINDS)}")
        num_classes, in_dim = int(metadata["num_classes"]), int(metadata["in_dim"])
        multi_label = metadata.get("multi_label", "false")  # heads saved before the key existed are multi-class
        if multi_label not in ("true", "false"):
            raise ValueError(f"saved head metadata 'multi_label' must be 'true' or 'false', got {multi_label!r}")
        net = build_net(kind, in_dim, num_classes)
        net.load_state_dict({name: torch.from_numpy(np.asarray(a)) for name, a in arrays.items()})
        return cls(kind, num_classes, in_dim, net, multi_label == "true")


def check_training_data(features: np.ndarray, labels: np.ndarray, num_classes: int,
                        multi_label: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Labeled rows as (float32 features (N, d), int64 labels (N,)), or with `multi_label` (float32 features,
    float32 0/1 label matrix (N, num_classes)); ValueError on empty or bad input."""
    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels)
    if multi_label:
        if features.ndim != 2 or labels.ndim != 2 or labels.shape != (len(features), num_classes):
            raise ValueError(f"need features (N, d) and multi-label labels (N, {num_classes}) (a 0/1 matrix, one "
                             f"column per class), got {features.shape} and {labels.shape}")
        if len(labels) == 0:
            raise ValueError("cannot train a head without any labeled item")
        if not ((labels == 0) | (labels == 1)).all():
            raise ValueError("multi-label labels must be 0/1")
        return features, labels.astype(np.float32)
    if features.ndim != 2 or labels.shape != (len(features),):
        raise ValueError(f"need features (N, d) and labels (N,), got {features.shape} and {labels.shape}")
    if len(labels) == 0:
        raise ValueError("cannot train a head without any labeled item")
    if num_classes < 1 or labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{labels.min()}, {labels.max()}]")
    return features, labels.astype(np.int64)


def initial_net(kind: str, in_dim: int, num_classes: int, seed: int, init: TrainedHead | None = None,
                device: str = "cpu", multi_label: bool = False) -> HeadNet:
    """The network training starts from, in training mode on `device`: a copy of `init`'s weights (warm start;
    `init` itself is left untouched) or, without `init`, a fresh one seeded by `seed`; either way the global torch
    RNG is left as it was. ValueError when `init` is not of the same kind, input width, number of classes and
    multi-label-ness."""
    if init is not None:
        wanted, given = (kind, in_dim, num_classes), (init.kind, init.in_dim, init.num_classes)
        if wanted != given:
            raise ValueError(f"cannot warm-start a {kind} head {in_dim}->{num_classes} from a {init.kind} head "
                             f"{init.in_dim}->{init.num_classes}: kind, input width and classes must match")
        if init.multi_label != multi_label:
            mode = {True: "multi-label", False: "multi-class"}
            raise ValueError(f"cannot warm-start a {mode[multi_label]} head from a {mode[init.multi_label]} one")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_net(kind, in_dim, num_classes)
    if init is not None:
        net.load_state_dict(init.net.state_dict())
    return net.to(device).train()


def new_head(in_dim: int, num_classes: int, config: HeadConfig, device: str = "cpu",
             init: TrainedHead | None = None, multi_label: bool = False) -> tuple[HeadNet, torch.optim.Optimizer]:
    """The starting network (`initial_net`: fresh and seeded by `config.seed`, or a copy of `init`) and its Adam
    optimiser. Shared by `train_head` and `learners.ssl`."""
    net = initial_net(config.kind, in_dim, num_classes, config.seed, init, device, multi_label)
    optimiser = torch.optim.Adam(net.parameters(), lr=config.resolved_lr, weight_decay=config.resolved_weight_decay)
    return net, optimiser


def l2_penalty(net: nn.Module) -> torch.Tensor:
    """Sum of the squares of every parameter of `net` (weights and biases)."""
    return sum(p.square().sum() for p in net.parameters())


def train_head(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    config: HeadConfig,
    *,
    device: str = "cpu",
    progress: Progress | None = None,
    init: TrainedHead | None = None,
    multi_label: bool = False,
) -> TrainedHead:
    """Train a head on the labeled rows (`features[i]` has class `labels[i]`): a fresh one, or a copy of `init`
    when given (warm start; ValueError unless it has `config.kind`, the features' width, `num_classes` and the same
    `multi_label`).

    `multi_label`: `labels` is an (N, num_classes) 0/1 matrix (row i: the classes item i has); the head is trained
    with binary cross-entropy and predicts independent sigmoids.

    Solver `config.resolved_solver` (module docstring): full-batch L-BFGS to the optimum of the L2-regularised
    loss, or Adam on mini-batches reshuffled every epoch. Initialisation and shuffling come from `config.seed`
    only (the global torch RNG is left as it was). Classes absent from `labels` are still output classes.
    On CPU the training runs on one thread (see `one_cpu_thread`). Semi-supervised training
    (unlabeled rows, augmented views) is `learners.ssl.train_head_ssl`.
    """
    features, labels = check_training_data(features, labels, num_classes, multi_label)
    in_dim = features.shape[1]
    x = torch.from_numpy(features).to(device)
    y = torch.from_numpy(labels).to(device)
    with one_cpu_thread(device):
        if config.resolved_solver == "lbfgs":
            c, note = config.resolved_C, ""
            if c == "cv":
                c, note = choose_C(x, y, num_classes, config, init, multi_label, _share(progress, 0.0, 0.8))
                progress = _share(progress, 0.8, 1.0, note)
            net = initial_net(config.kind, in_dim, num_classes, config.seed, init, device, multi_label)
            _fit_lbfgs(net, x, y, float(c), config, multi_label, progress)
        else:
            net, optimiser = new_head(in_dim, num_classes, config, device, init, multi_label)
            _fit_adam(net, optimiser, x, y, config, multi_label, progress)
    return TrainedHead(config.kind, num_classes, in_dim, net, multi_label)


def _share(progress: Progress | None, start: float, end: float, suffix: str = "") -> Progress | None:
    """`progress` with fractions mapped onto [start, end] and `suffix` added to messages."""
    if progress is None:
        return None
    return lambda fraction, message: progress(start + (end - start) * fraction, message + suffix)


def cv_folds(y: torch.Tensor, folds: int, seed: int, multi_label: bool) -> np.ndarray | None:
    """Fold number per labeled row, seeded: each class's rows shuffled and dealt out in turn (stratified), or for
    multi-label all rows so; None when some class that has labels has fewer than `folds` (multi-label: fewer than
    `folds` positives or negatives for some tag that has both)."""
    labels = y.cpu().numpy()
    rng = np.random.default_rng(seed)
    if multi_label:
        positives = labels.sum(axis=0)
        both = (positives > 0) & (positives < len(labels))
        if len(labels) < folds or np.minimum(positives, len(labels) - positives)[both].min(initial=folds) < folds:
            return None
        order = rng.permutation(len(labels))
    else:
        counts = np.bincount(labels)
        if counts[counts > 0].min() < folds:
            return None
        order = np.concatenate([rng.permutation(np.flatnonzero(labels == c)) for c in np.flatnonzero(counts)])
    assigned = np.empty(len(labels), dtype=np.int64)
    assigned[order] = np.arange(len(labels)) % folds
    return assigned


def choose_C(x: torch.Tensor, y: torch.Tensor, num_classes: int, config: HeadConfig,
             init: TrainedHead | None = None, multi_label: bool = False,
             progress: Progress | None = None) -> tuple[float, str]:
    """(C, a note saying how it was chosen), by CV_FOLDS-fold cross-validation on the labeled rows (at most
    CV_MAX_ROWS of them, a seeded random subset): the value of CV_GRID with the most held-out rows classified
    right, ties broken by the lower held-out cross-entropy (multi-label: the lowest held-out binary cross-entropy).
    In each fold the heads are fit from the strongest penalty to the weakest, each warm-started from the one
    before. CV_FALLBACK_C when the labels are too few for the folds (`cv_folds`).

    Measured on the digits (5 seeds, 200 / 400 / all 1397 pool labels; benchmarks/bench_heads_vs_sklearn.py):
    against C = 1 it gains 0.5 points on the workbench's 256 pixel features with all labels and stays within 0.4
    points elsewhere; its picks there range from 0.03 to 1 between seeds, as held-out accuracies of neighbouring C
    differ by a few rows. With 5 folds, or the cross-entropy alone, it strayed more (0.6-0.7 points below C = 1
    at 400 labels, or with all labels on the 64 pixels)."""
    rows = torch.arange(len(y), device=x.device)
    if len(rows) > CV_MAX_ROWS:
        rows = rows[torch.from_numpy(np.random.default_rng(config.seed).permutation(len(y))[:CV_MAX_ROWS])]
    x, y = x[rows], y[rows]
    fold_of = cv_folds(y, CV_FOLDS, config.seed, multi_label)
    if fold_of is None:
        return CV_FALLBACK_C, f", C = {CV_FALLBACK_C:g} (too few labels per class to cross-validate)"
    losses, right = np.zeros(len(CV_GRID)), np.zeros(len(CV_GRID))
    for fold in range(CV_FOLDS):
        held = torch.from_numpy(fold_of == fold).to(x.device)
        start = init
        for i, c in enumerate(CV_GRID):
            net = initial_net(config.kind, x.shape[1], num_classes, config.seed, start, str(x.device), multi_label)
            _fit_lbfgs(net, x[~held], y[~held], c, config, multi_label, None)
            with torch.no_grad():
                logits = net.eval()(x[held])
                losses[i] += supervised_loss(logits, y[held], multi_label).item() * int(held.sum())
                if not multi_label:
                    right[i] += (logits.argmax(dim=1) == y[held]).sum().item()
            start = TrainedHead(config.kind, num_classes, x.shape[1], net, multi_label)
        if progress:
            progress((fold + 1) / CV_FOLDS, f"choosing C: fold {fold + 1}/{CV_FOLDS}")
    best = CV_GRID[int(np.lexsort((losses, -right))[0])]
    return best, f", C = {best:.3g} ({CV_FOLDS}-fold cross-validated)"


def _fit_lbfgs(net: HeadNet, x: torch.Tensor, y: torch.Tensor, c: float, config: HeadConfig, multi_label: bool,
               progress: Progress | None) -> None:
    """Full-batch L-BFGS (strong Wolfe line search) on mean loss + ||theta||^2 / (2 c m) until the gradient or the
    objective stops moving, or `config.resolved_max_iter` iterations; run in chunks so that progress can be
    reported."""
    scale = 1.0 / (2.0 * c * y.numel())  # y.numel(): rows, or rows x classes for multi-label
    max_iter = config.resolved_max_iter
    chunk = math.ceil(max_iter / PROGRESS_REPORTS)
    optimiser = torch.optim.LBFGS(net.parameters(), lr=1.0, max_iter=chunk, history_size=LBFGS_HISTORY,
                                  tolerance_grad=LBFGS_TOLERANCE, tolerance_change=1e-12,
                                  line_search_fn="strong_wolfe")
    latest: list[torch.Tensor] = []

    def objective() -> torch.Tensor:
        optimiser.zero_grad(set_to_none=True)
        loss = supervised_loss(net(x), y, multi_label) + scale * l2_penalty(net)
        loss.backward()
        latest[:] = [loss.detach()]
        return loss

    done = 0
    while done < max_iter:
        steps = min(chunk, max_iter - done)
        optimiser.param_groups[0].update(max_iter=steps, max_eval=steps * 5 // 4)
        state = optimiser.state[optimiser.param_groups[0]["params"][0]]
        iterations, evaluations = state.get("n_iter", 0), state.get("func_evals", 0)
        optimiser.step(objective)
        done += steps
        # Fewer iterations than allowed, and not for want of evaluations: L-BFGS stopped on its tolerances.
        converged = (state["n_iter"] - iterations < steps
                     and state["func_evals"] - evaluations < optimiser.param_groups[0]["max_eval"])
        if progress:
            progress(1.0 if converged else done / max_iter,
                     f"L-BFGS iteration {state['n_iter']}, objective {latest[0].item():.4f}")
        if converged:
            break


def _fit_adam(net: HeadNet, optimiser: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, config: HeadConfig,
              multi_label: bool, progress: Progress | None) -> None:
    """`config.epochs` epochs of shuffled mini-batches, each at least `config.min_steps_per_epoch` steps."""
    shuffle = torch.Generator().manual_seed(config.seed)
    for epoch in range(config.epochs):
        passes = max(1, math.ceil(config.min_steps_per_epoch / math.ceil(len(x) / config.batch_size)))
        order = torch.cat([torch.randperm(len(x), generator=shuffle) for _ in range(passes)]).to(x.device)
        for start in range(0, len(order), config.batch_size):
            batch = order[start:start + config.batch_size]
            loss = supervised_loss(net(x[batch]), y[batch], multi_label)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        if progress:
            progress((epoch + 1) / config.epochs, f"epoch {epoch + 1}/{config.epochs}, loss {loss.item():.4f}")

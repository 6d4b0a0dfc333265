"""Semi-supervised training of the heads on cached features (specs/training.md, "Semi-supervised methods").

    head = train_head_ssl(x, labeled_idx, y, num_classes, HeadConfig(kind="mlp"), "flexmatch", views,
                          eval_excluded=eval_rows)

`features` holds every pool row (standardized); `labeled_idx` says which rows carry `labels`; every other row
that is not in `eval_excluded` is unlabeled data. Evaluation rows never take part in training (their features
and views are never read).

Methods (the registry `SSL_METHODS`):

- `none`: supervised only; exactly `learners.heads.train_head` on the labeled rows (views are not read).
- `pseudo_label` and `flexmatch` share one loop (as LabelBench's semi-supervised trainer does): per step a
  labeled batch of min(batch_size, L) rows and an unlabeled batch of min(uratio x that, U) rows drawn from
  shuffled passes over the unlabeled rows; loss = CE(labeled) + lambda_u x (unlabeled term).
- `pseudo_label`: unlabeled rows whose max probability is >= tau (0.95) get their argmax as target, weight 1:
  the term is the mean cross-entropy over the batch's rows that have a target, like labeled rows in a batch.
  Targets are recomputed each epoch from the head as it stood at the start of the epoch, on the plain features
  (rows are scored when drawn, with a frozen copy of that head: the same targets as scoring the whole pool, at
  the cost of the rows actually drawn). Inputs are the weak view when one is given, else the plain features.
- `flexmatch`: labeled batch on the weak view; yhat = argmax softmax(head(weak)) without gradient; class
  thresholds from `flexmatch_thresholds` over every unlabeled row's latest confident (>= tau) pseudo-label,
  computed before this batch updates them; term = mean(mask * CE(head(strong), yhat)) over the batch. Needs the
  weak and strong views (`learners.views`): without them it raises ValueError rather than inventing feature noise.
- `lftl_vpa`: LFTL's Visual Persistence-guided Adaptation (specs/lftl.md; losses and optimiser in
  learners.vpa). It always trains a `bottleneck` head, whatever `config.kind` says (the method is defined on that
  head); `config.epochs` and `config.seed` apply, the optimiser is SGD with `vpa_lr`, `vpa_weight_decay` and
  batches of `vpa_batch` (not `config`'s Adam settings). Its epoch is LFTL's, not the one below: one pass over
  the unlabeled rows, ceil(U / vpa_batch) steps, the labeled rows cycled in passes of their own that run on across
  epochs (learners.vpa); `min_steps_per_epoch` and `warmup_epochs` do not apply (the reference has neither), and
  the learning-rate schedule spans epochs x those steps. The anchor memory is refreshed in eval mode at the start
  of every epoch on the plain features of the labeled rows; unlabeled rows are read on their plain features (the
  reference augments images, views are not read here). The memory lives for one call (one round) and its rows
  follow `labeled_idx`, i.e. the caller's items. With `init`, training continues from that head (LFTL
  warm-starts round after round). See the measurement below.

Epochs (pseudo_label, flexmatch): an epoch is one pass over the labeled rows (as LabelBench counts them) but at least
`min_steps_per_epoch` (default 10) steps, so `config.epochs` = 20 gives >= 200 steps. Without that floor 50
labels make one step per epoch, 20 in all, too few for the unlabeled term to matter. `none` keeps train_head's
definition (one pass, no floor), so part of a method's gain over `none` on small label sets is the extra steps:
benchmarks/bench_ssl.py also reports `none` trained for the same number of steps.

Warm-up (a deviation from the spec, `warmup_epochs`, default 1): the first epoch uses the labeled rows only.
With FlexMatch's threshold warm-up, T_c starts at 0 while most unlabeled rows have no confident label yet, so
every pseudo-label of an untrained head counts; on 100,000 unlabeled rows (d = 512, 200 labels) that collapsed
the mlp onto two classes (20 % accuracy, against 97 % supervised) and one supervised epoch first fixed it
(99.9 %); on the digits it changes nothing measurable. `warmup_epochs=0` gives the spec's loss from step one.

Views: `views[name]` is an array (K, N, d) aligned with `features` (standardized with the plain view's mean and
std: `learners.views.standardize_views`); epoch e reads copy e mod K.

Labeled batch view (`labeled_view`, default "weak" as the spec says): the head is evaluated on plain features
but, by the spec, trains its labeled rows on the weak view only, which costs accuracy where the weak view is far
from the plain one. benchmarks/bench_ssl.py, demo digits through `learners.views` (pixels backbone, mlp,
50 labels, 3 seeds): `none` for the same steps 80.9 %; flexmatch with flips 68.2 % (labeled weak) / 78.8 %
(labeled plain); without flips 84.8 % / 85.1 %. "plain" is offered for such cases; flips are the bigger issue.

Warm start: `init` (a TrainedHead of the same kind, input width and classes) makes every method start from a
copy of its weights instead of a fresh seeded initialisation; an incompatible `init` is a ValueError.

lftl_vpa keeps the reference's defaults (SGD lr 1e-3). On the digits that lr needs about 5 x the steps of lr 1e-2
for the same accuracy (more under a domain shift), so whether it is enough depends on the steps, which LFTL's
epoch ties to the unlabeled pool (20 epochs: ~440 steps per round on 1,350 unlabeled rows, ~31,000 on 100,000,
where one CPU takes ~5 s per 1,563 steps at d = 512, so no cap is needed). benchmarks/bench_vpa.py, digits,
10 seeds, test accuracy % (+- s.e.) at 50 / 100 labels:
- same domain, 1,347 / 1,297 unlabeled (22 / 21 steps per epoch): `none` (bottleneck head, Adam) 81.3 +- 1.4 /
  88.8 +- 0.4; lftl_vpa with the defaults 85.2 +- 1.1 / 89.8 +- 0.4 (the same SGD on the labels alone 80.8 +- 1.1 /
  87.2 +- 0.4), for 5 x the epochs 88.8 +- 1.0 / 92.2 +- 0.4, with vpa_lr = 1e-2 88.7 +- 1.0 / 92.3 +- 0.5. (With
  the former epoch, 10 steps, the defaults gave 81.7 +- 1.2 / 85.9 +- 0.8: no gain over `none`.)
- source-free adaptation to rotated, shifted digits from a source head at 43.2 %, a target pool of 499 (8 / 7
  steps per epoch, fewer than the former 10): `none` warm-started 82.0 +- 0.9 / 87.8 +- 0.7; lftl_vpa warm with
  the defaults 72.8 +- 0.9 / 75.8 +- 0.7 (former epoch 75.8 +- 0.8 / 79.5 +- 0.6), for 5 x the epochs 83.7 +- 0.8 /
  86.4 +- 0.4, with vpa_lr = 1e-2 85.6 +- 0.7 / 88.2 +- 0.5.
Through the app (benchmarks/bench_lftl.py, lftl + lftl_vpa, digits rotated 30 degrees and blurred, ~1,480
unlabeled, 3 seeds, area under accuracy from 10 to 90 labels): lr 1e-3 0.873 +- 0.007 (former epoch 0.858 +-
0.007), lr 1e-2 0.890 +- 0.015 (0.893 +- 0.003). So lr 1e-3 is slow, not wrong: on ~1,400 unlabeled rows it now
gains from the unlabeled terms (+4.4 points at 50 labels) but stays below lr 1e-2 for 20 epochs; on a few hundred
rows it stays below the supervised head. For small pools set `vpa_lr` = 1e-2 (or more `epochs`).

Everything is seeded by `config.seed` (initialisation, batch order, mixup draws); the global torch RNG is
untouched.

Multi-label (`train_head_ssl(..., multi_label=True)`, `labels` an (L, K) 0/1 matrix; specs/training.md):
- `none`: `train_head(..., multi_label=True)` (sigmoids + binary cross-entropy).
- `pseudo_label`: per class (`multilabel_pseudo_label_targets`): for each unlabeled row and class k the target is
  1 if P_k >= tau, 0 if P_k <= 1 - tau, else the entry is masked (needs tau > 0.5); the unlabeled term is the
  binary cross-entropy averaged over the batch's unmasked entries (0 when every entry is masked). The labeled term
  is the binary cross-entropy averaged over every entry, as in `train_head`. Same loop, frozen scorer and epochs.
- `flexmatch` and `lftl_vpa`: refused with a ValueError (`MULTI_LABEL_REFUSALS` says why). FlexMatch's
  pseudo-label is one argmax class per item and its thresholds count items per predicted class; LFTL's VPA
  (information maximisation, class anchors) is defined on softmax outputs and one class per labeled item. The
  spec gives neither a multi-label version.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from learners import vpa
from learners.catalog import METHOD_NAMES, MULTI_LABEL_METHODS, MULTI_LABEL_REFUSALS, REQUIRED_VIEWS, SSLConfig
from learners.cpu import one_cpu_thread
from learners.heads import (
    HeadConfig,
    Progress,
    TrainedHead,
    check_training_data,
    initial_net,
    new_head,
    output_probs,
    supervised_loss,
    train_head,
)

Views = dict[str, np.ndarray]


@dataclass
class SSLProblem:
    """Validated inputs of one semi-supervised training run (positions are rows of `features`)."""

    features: np.ndarray  # (N, d) float32, every pool row
    labeled_idx: np.ndarray  # (L,) int64
    labels: np.ndarray  # (L,) int64
    unlabeled_idx: np.ndarray  # (U,) int64: not labeled, not excluded
    num_classes: int
    config: HeadConfig
    ssl: SSLConfig
    views: Views | None
    device: str
    init: TrainedHead | None = None  # warm start
    multi_label: bool = False  # labels is then an (L, K) float32 0/1 matrix

    def inputs(self, view: str | None, epoch: int, rows: np.ndarray) -> torch.Tensor:
        """Feature rows `rows` of `view` (copy epoch mod K), or of the plain features when `view` is None."""
        source = self.features if view is None else self.views[view][epoch % len(self.views[view])]
        return torch.from_numpy(source[rows]).to(self.device)


SSLMethod = Callable[[SSLProblem, Progress | None], TrainedHead]


def flexmatch_thresholds(latest_confident_label: np.ndarray, num_classes: int, tau: float) -> np.ndarray:
    """FlexMatch's class-wise thresholds T (num_classes,), float64.

    `latest_confident_label[i]` is unlabeled item i's latest pseudo-label predicted with confidence >= tau, or
    -1 if it never had one. sigma_c = items whose latest confident label is c, sigma_unused = items with none;
    beta_c = sigma_c / max(max_c sigma_c, sigma_unused) (0 when there is no unlabeled item);
    T_c = tau * beta_c / (2 - beta_c).
    """
    latest = np.asarray(latest_confident_label)
    if latest.ndim != 1 or (len(latest) and (latest.min() < -1 or latest.max() >= num_classes)):
        raise ValueError(f"latest_confident_label must be 1-D with values in [-1, {num_classes})")
    counts = np.bincount(latest.astype(np.int64) + 1, minlength=num_classes + 1)
    unused, sigma = counts[0], counts[1:]
    denominator = max(int(sigma.max(initial=0)), int(unused))
    beta = sigma / denominator if denominator > 0 else np.zeros(num_classes)
    return tau * beta / (2.0 - beta)


def pseudo_label_targets(probs: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """(rows, targets): the rows of `probs` whose max probability is >= tau, and their argmax."""
    probs = np.asarray(probs)
    rows = np.flatnonzero(probs.max(axis=1) >= tau)
    return rows, probs[rows].argmax(axis=1)


def multilabel_pseudo_label_targets(probs: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """Multi-label pseudo-labels per class: (targets, mask), both (n, K). For each row and class k, target 1 where
    P_k >= tau, 0 where P_k <= 1 - tau; `mask` is True on those entries and False on the rest (no target; their
    `targets` entry is 0). Needs tau > 0.5 (otherwise an entry could be both)."""
    if not tau > 0.5:
        raise ValueError(f"multi-label pseudo-labels need tau > 0.5 (target 1 at P >= tau, 0 at P <= 1 - tau), "
                         f"got {tau}")
    probs = np.asarray(probs)
    positive, negative = probs >= tau, probs <= 1.0 - tau
    return positive.astype(np.float32), positive | negative


class _BatchCycler:
    """Endless seeded mini-batches of positions 0..n-1: shuffled passes, a batch may straddle two passes."""

    def __init__(self, n: int, generator: torch.Generator) -> None:
        self.n = n
        self.generator = generator
        self.pending = np.empty(0, dtype=np.int64)

    def take(self, size: int) -> np.ndarray:
        while len(self.pending) < size:
            self.pending = np.concatenate([self.pending, torch.randperm(self.n, generator=self.generator).numpy()])
        batch, self.pending = self.pending[:size], self.pending[size:]
        return batch


def _steps_per_epoch(rows: int, batch_size: int, minimum: int) -> int:
    return max(math.ceil(rows / batch_size), minimum)


def _train_none(problem: SSLProblem, progress: Progress | None) -> TrainedHead:
    return train_head(problem.features[problem.labeled_idx], problem.labels, problem.num_classes, problem.config,
                      device=problem.device, progress=progress, init=problem.init, multi_label=problem.multi_label)


class _UnlabeledTerm:
    """The unlabeled part of a semi-supervised loss; subclasses say how pseudo-labels and masks are made."""

    view: str | None = "weak"  # view the labeled batch (and the method's own inputs) read; None = plain features

    def start_epoch(self, net: nn.Module, epoch: int) -> None:
        """Called before each epoch (after warm-up) with the current network."""

    def loss(self, net: nn.Module, epoch: int, positions: np.ndarray) -> tuple[torch.Tensor, int]:
        """(loss term, rows that contributed) for unlabeled batch `positions` (indices into unlabeled_idx)."""
        raise NotImplementedError


class _PseudoLabelTerm(_UnlabeledTerm):
    """Targets fixed per epoch: the head as it was at the start of the epoch scores the plain features; rows
    with max prob >= tau get their argmax. The loss is the mean cross-entropy over the batch's rows that have a
    target (each weighs like a labeled row in its batch). Rows are scored when drawn, with that frozen copy,
    which gives the same targets as scoring every unlabeled row up front at a fraction of the cost on big pools
    (rescoring 100,000 rows of d = 512 every epoch took 40 of 49 s). Multi-label: per-class targets and mask
    (`multilabel_pseudo_label_targets`), binary cross-entropy averaged over the unmasked entries; a row
    contributes when at least one of its entries has a target."""

    def __init__(self, problem: SSLProblem) -> None:
        self.p = problem
        self.view = "weak" if problem.views is not None and "weak" in problem.views else None
        self.frozen: nn.Module | None = None

    def start_epoch(self, net: nn.Module, epoch: int) -> None:
        self.frozen = copy.deepcopy(net).eval().requires_grad_(False)

    def loss(self, net: nn.Module, epoch: int, positions: np.ndarray) -> tuple[torch.Tensor, int]:
        p = self.p
        rows = p.unlabeled_idx[positions]
        with torch.no_grad():
            probs = output_probs(self.frozen(p.inputs(None, epoch, rows)), p.multi_label).cpu().numpy()
        if p.multi_label:
            return self._multilabel_loss(net, epoch, rows, probs)
        keep, targets = pseudo_label_targets(probs, p.ssl.tau)
        if len(keep) == 0:
            return torch.zeros((), device=p.device), 0
        logits = net(p.inputs(self.view, epoch, rows[keep]))
        return nn.functional.cross_entropy(logits, torch.from_numpy(targets).to(p.device)), len(keep)

    def _multilabel_loss(self, net: nn.Module, epoch: int, rows: np.ndarray,
                         probs: np.ndarray) -> tuple[torch.Tensor, int]:
        p = self.p
        targets, mask = multilabel_pseudo_label_targets(probs, p.ssl.tau)
        keep = np.flatnonzero(mask.any(axis=1))
        if len(keep) == 0:
            return torch.zeros((), device=p.device), 0
        logits = net(p.inputs(self.view, epoch, rows[keep]))
        entry_mask = torch.from_numpy(mask[keep]).to(p.device, logits.dtype)
        per_entry = nn.functional.binary_cross_entropy_with_logits(
            logits, torch.from_numpy(targets[keep]).to(p.device, logits.dtype), reduction="none")
        return (per_entry * entry_mask).sum() / entry_mask.sum(), len(keep)


class _FlexMatchTerm(_UnlabeledTerm):
    """yhat from the weak view (no gradient), class thresholds from every unlabeled row's latest confident
    pseudo-label (before this batch updates them), loss mean(mask * CE(head(strong), yhat)) over the batch."""

    def __init__(self, problem: SSLProblem) -> None:
        self.p = problem
        self.latest_confident = np.full(len(problem.unlabeled_idx), -1, dtype=np.int64)

    def loss(self, net: nn.Module, epoch: int, positions: np.ndarray) -> tuple[torch.Tensor, int]:
        p = self.p
        rows = p.unlabeled_idx[positions]
        with torch.no_grad():
            max_prob, y_hat = torch.softmax(net(p.inputs("weak", epoch, rows)), dim=1).max(dim=1)
        thresholds = torch.from_numpy(flexmatch_thresholds(self.latest_confident, p.num_classes, p.ssl.tau))
        mask = (max_prob >= thresholds.to(p.device, max_prob.dtype)[y_hat]).float()
        per_row = nn.functional.cross_entropy(net(p.inputs("strong", epoch, rows)), y_hat, reduction="none")
        confident = (max_prob >= p.ssl.tau).cpu().numpy()
        self.latest_confident[positions[confident]] = y_hat.cpu().numpy()[confident]
        return (mask * per_row).mean(), int(mask.sum().item())


def _train_with_unlabeled(problem: SSLProblem, term: _UnlabeledTerm, progress: Progress | None) -> TrainedHead:
    """The loop pseudo_label and flexmatch share: per step a labeled batch of min(batch_size, L) rows and an
    unlabeled batch of min(uratio x that, U) rows; loss = CE(labeled) + lambda_u x term; epochs as in the
    module docstring; no unlabeled term during the first `warmup_epochs` epochs."""
    p, config, ssl = problem, problem.config, problem.ssl
    dim = p.features.shape[1]
    net, optimiser = new_head(dim, p.num_classes, config, p.device, p.init, p.multi_label)
    shuffle = torch.Generator().manual_seed(config.seed)
    labeled_y = torch.from_numpy(p.labels).to(p.device)
    labeled_batches = _BatchCycler(len(p.labeled_idx), shuffle)
    unlabeled_batches = _BatchCycler(len(p.unlabeled_idx), shuffle)
    batch_l = min(config.batch_size, len(p.labeled_idx))
    batch_u = min(ssl.uratio * batch_l, len(p.unlabeled_idx))
    steps = _steps_per_epoch(len(p.labeled_idx), batch_l, ssl.min_steps_per_epoch)
    labeled_view = None if ssl.labeled_view == "plain" else term.view
    with one_cpu_thread(p.device):
        for epoch in range(config.epochs):
            use_unlabeled = batch_u > 0 and epoch >= ssl.warmup_epochs
            if use_unlabeled:
                term.start_epoch(net, epoch)
            used = seen = 0
            for _ in range(steps):
                lb = labeled_batches.take(batch_l)
                logits = net(p.inputs(labeled_view, epoch, p.labeled_idx[lb]))
                loss = supervised_loss(logits, labeled_y[torch.from_numpy(lb).to(p.device)], p.multi_label)
                if use_unlabeled:
                    ub = unlabeled_batches.take(batch_u)
                    unlabeled_loss, contributed = term.loss(net, epoch, ub)
                    loss = loss + ssl.lambda_u * unlabeled_loss
                    used, seen = used + contributed, seen + len(ub)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
            if progress:
                share = f"{used / seen:.0%} of unlabeled rows used" if seen else "labeled rows only"
                progress((epoch + 1) / config.epochs, f"epoch {epoch + 1}/{config.epochs}, {share}, "
                                                      f"loss {loss.item():.4f}")
    return TrainedHead(config.kind, p.num_classes, dim, net, p.multi_label)


def _train_pseudo_label(problem: SSLProblem, progress: Progress | None) -> TrainedHead:
    return _train_with_unlabeled(problem, _PseudoLabelTerm(problem), progress)


def _train_flexmatch(problem: SSLProblem, progress: Progress | None) -> TrainedHead:
    return _train_with_unlabeled(problem, _FlexMatchTerm(problem), progress)


def _train_lftl_vpa(problem: SSLProblem, progress: Progress | None) -> TrainedHead:
    """LFTL's VPA (module docstring, learners.vpa): epochs of `vpa.steps_per_epoch` steps, each with a labeled and
    an unlabeled batch of up to vpa_batch rows (`vpa.PassBatches`); anchor memory refreshed before each epoch; the
    learning rate decays over the call's epochs x steps; optional mixup pass after each epoch."""
    p, ssl = problem, problem.ssl
    dim = p.features.shape[1]
    net = initial_net("bottleneck", dim, p.num_classes, p.config.seed, p.init, p.device)
    optimiser = vpa.sgd_optimiser(net, ssl.vpa_lr, ssl.vpa_weight_decay)
    shuffle = torch.Generator().manual_seed(p.config.seed)
    mixup_rng = np.random.default_rng(p.config.seed)
    anchors_x = p.inputs(None, 0, p.labeled_idx)
    anchors_y = torch.from_numpy(p.labels).to(p.device)
    labeled_batches = vpa.PassBatches(len(p.labeled_idx), ssl.vpa_batch, shuffle)
    unlabeled_batches = vpa.PassBatches(len(p.unlabeled_idx), ssl.vpa_batch, shuffle) if len(p.unlabeled_idx) else None
    steps = vpa.steps_per_epoch(len(p.labeled_idx), len(p.unlabeled_idx), ssl.vpa_batch)
    total_steps = p.config.epochs * steps
    memory = None
    with one_cpu_thread(p.device):
        for epoch in range(p.config.epochs):
            memory = vpa.update_anchor_memory(memory, vpa.anchor_features(net, anchors_x))
            drawn, sums = [], {"loss": 0.0, "ce": 0.0, "im": 0.0, "vpa": 0.0}
            for step in range(steps):
                lr = vpa.scheduled_lr(ssl.vpa_lr, epoch * steps + step + 1, total_steps)
                vpa.set_lr(optimiser, lr)
                lb = torch.from_numpy(labeled_batches.take()).to(p.device)
                unlabeled_x = (p.inputs(None, epoch, p.unlabeled_idx[unlabeled_batches.take()])
                               if unlabeled_batches else None)
                loss, parts = vpa.vpa_loss(net, anchors_x[lb], anchors_y[lb], unlabeled_x, memory,
                                           ssl.beta_im, ssl.beta_vpa)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                drawn.append(lb)
                for name, value in (("loss", loss.item()), *parts.items()):
                    sums[name] += value / steps
            mixed = ""
            if ssl.mixup:
                rows = torch.cat(drawn)
                mix_loss = vpa.mixup_pass(net, optimiser, anchors_x[rows], anchors_y[rows], p.num_classes,
                                          ssl.vpa_batch, mixup_rng)
                mixed = f", mixup {mix_loss:.4f}"
            if progress:
                progress((epoch + 1) / p.config.epochs,
                         f"epoch {epoch + 1}/{p.config.epochs} ({steps} steps, lr {lr:.3g}), loss {sums['loss']:.4f} "
                         f"(ce {sums['ce']:.4f}, im {sums['im']:.4f}, vpa {sums['vpa']:.4f}){mixed}")
    return TrainedHead("bottleneck", p.num_classes, dim, net)


SSL_METHODS: dict[str, SSLMethod] = {
    "none": _train_none,
    "pseudo_label": _train_pseudo_label,
    "flexmatch": _train_flexmatch,
    "lftl_vpa": _train_lftl_vpa,
}
assert tuple(SSL_METHODS) == METHOD_NAMES


def _check_views(views: Views | None, method: str, n: int, dim: int) -> Views | None:
    required = REQUIRED_VIEWS.get(method, ())
    missing = [name for name in required if views is None or name not in views]
    if missing:
        raise ValueError(f"ssl method {method!r} needs augmented feature views {', '.join(missing)} "
                         f"(arrays of shape (K, {n}, {dim}) from learners.views.embed_views, standardized); "
                         f"got {'no views' if views is None else 'views ' + ', '.join(sorted(views))}")
    if views is None:
        return None
    checked = {}
    for name, array in views.items():
        array = np.asarray(array, dtype=np.float32)
        if array.ndim != 3 or array.shape[0] < 1 or array.shape[1:] != (n, dim):
            raise ValueError(f"view {name!r} must have shape (K >= 1, {n}, {dim}), got {array.shape}")
        checked[name] = array
    return checked


def _positions(values: np.ndarray | None, n: int, what: str) -> np.ndarray:
    values = np.asarray([] if values is None else values)
    if values.ndim != 1 or (len(values) and not np.issubdtype(values.dtype, np.integer)):
        raise ValueError(f"{what} must be a 1-D array of row positions")
    values = values.astype(np.int64)
    if len(values) and (values.min() < 0 or values.max() >= n):
        raise ValueError(f"{what} must lie in [0, {n}), got range [{values.min()}, {values.max()}]")
    if len(np.unique(values)) != len(values):
        raise ValueError(f"{what} repeats a row")
    return values


def train_head_ssl(
    features: np.ndarray,
    labeled_idx: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    config: HeadConfig,
    ssl: str | SSLConfig = "none",
    views: Views | None = None,
    *,
    eval_excluded: np.ndarray | None = None,
    device: str = "cpu",
    progress: Progress | None = None,
    init: TrainedHead | None = None,
    multi_label: bool = False,
) -> TrainedHead:
    """Train a head on `features[labeled_idx]` (classes `labels`; with `multi_label` an (L, K) 0/1 matrix, see
    the module docstring: `none` and `pseudo_label` only, the others raise ValueError) plus, for semi-supervised
    methods, the unlabeled rows: every row neither in `labeled_idx` nor in `eval_excluded` (pass the evaluation
    set's rows there; they are never read). `ssl` is a method name or an SSLConfig. The head starts fresh, or from a copy
    of `init` (warm start; ValueError unless it has the trained kind - `bottleneck` for lftl_vpa, else
    `config.kind` -, the features' width and `num_classes`). See the module docstring."""
    settings = ssl if isinstance(ssl, SSLConfig) else SSLConfig(method=ssl)
    if multi_label and settings.method in MULTI_LABEL_REFUSALS:
        raise ValueError(f"ssl method {settings.method!r} has no multi-label version: "
                         f"{MULTI_LABEL_REFUSALS[settings.method]}; multi-label projects can use "
                         f"{', '.join(MULTI_LABEL_METHODS)}")
    if multi_label and settings.method == "pseudo_label" and not settings.tau > 0.5:
        raise ValueError(f"multi-label pseudo_label needs tau > 0.5, got {settings.tau}")
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2:
        raise ValueError(f"features must be a 2-D array (rows x dims), got shape {features.shape}")
    n, dim = features.shape
    labeled = _positions(labeled_idx, n, "labeled_idx")
    excluded = _positions(eval_excluded, n, "eval_excluded")
    _, labels = check_training_data(features[labeled], labels, num_classes, multi_label)
    if np.intersect1d(labeled, excluded).size:
        raise ValueError("a row is both labeled for training and excluded as evaluation data")
    unlabeled = np.setdiff1d(np.arange(n), np.concatenate([labeled, excluded]))
    problem = SSLProblem(features, labeled, labels, unlabeled, num_classes, config, settings,
                         _check_views(views, settings.method, n, dim), device, init, multi_label)
    return SSL_METHODS[settings.method](problem, progress)

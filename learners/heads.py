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
# (learning rate, weight decay) of Adam per kind, from specs/training.md; the spec gives none for `bottleneck`
# trained supervised (LFTL trains it with SGD, learners.vpa), so it takes the mlp's.
DEFAULT_OPTIMISER = {"linear": (3e-3, 1e-4), "mlp": (1e-3, 1e-3), "bottleneck": (1e-3, 1e-3)}


@dataclass
class HeadConfig:
    """How to train a head. `lr`/`weight_decay` None mean the kind's defaults (DEFAULT_OPTIMISER)."""

    kind: str = "linear"
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
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> HeadConfig:
        return from_settings(cls, d, "head")

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
    `init` itself is left untouched) or, without `init`, a fresh one seeded by `seed` (the global torch RNG is
    left as it was). ValueError when `init` is not of the same kind, input width, number of classes and
    multi-label-ness."""
    if init is not None:
        wanted, given = (kind, in_dim, num_classes), (init.kind, init.in_dim, init.num_classes)
        if wanted != given:
            raise ValueError(f"cannot warm-start a {kind} head {in_dim}->{num_classes} from a {init.kind} head "
                             f"{init.in_dim}->{init.num_classes}: kind, input width and classes must match")
        if init.multi_label != multi_label:
            mode = {True: "multi-label", False: "multi-class"}
            raise ValueError(f"cannot warm-start a {mode[multi_label]} head from a {mode[init.multi_label]} one")
        net = build_net(kind, in_dim, num_classes)
        net.load_state_dict(init.net.state_dict())
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = build_net(kind, in_dim, num_classes)
    return net.to(device).train()


def new_head(in_dim: int, num_classes: int, config: HeadConfig, device: str = "cpu",
             init: TrainedHead | None = None, multi_label: bool = False) -> tuple[HeadNet, torch.optim.Optimizer]:
    """The starting network (`initial_net`: fresh and seeded by `config.seed`, or a copy of `init`) and its Adam
    optimiser. Shared by `train_head` and `learners.ssl`."""
    net = initial_net(config.kind, in_dim, num_classes, config.seed, init, device, multi_label)
    optimiser = torch.optim.Adam(net.parameters(), lr=config.resolved_lr, weight_decay=config.resolved_weight_decay)
    return net, optimiser



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

    Adam, mini-batches reshuffled every epoch; initialisation and shuffling come from `config.seed` only
    (the global torch RNG is left as it was). Classes absent from `labels` are still output classes.
    On CPU the training loop runs on one thread (see `one_cpu_thread`). Semi-supervised training
    (unlabeled rows, augmented views) is `learners.ssl.train_head_ssl`.
    """
    features, labels = check_training_data(features, labels, num_classes, multi_label)
    in_dim = features.shape[1]
    net, optimiser = new_head(in_dim, num_classes, config, device, init, multi_label)
    x = torch.from_numpy(features).to(device)
    y = torch.from_numpy(labels).to(device)
    shuffle = torch.Generator().manual_seed(config.seed)

    with one_cpu_thread(device):
        for epoch in range(config.epochs):
            passes = max(1, math.ceil(config.min_steps_per_epoch / math.ceil(len(x) / config.batch_size)))
            order = torch.cat([torch.randperm(len(x), generator=shuffle) for _ in range(passes)]).to(device)
            for start in range(0, len(order), config.batch_size):
                batch = order[start:start + config.batch_size]
                loss = supervised_loss(net(x[batch]), y[batch], multi_label)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
            if progress:
                progress((epoch + 1) / config.epochs, f"epoch {epoch + 1}/{config.epochs}, loss {loss.item():.4f}")
    return TrainedHead(config.kind, num_classes, in_dim, net, multi_label)

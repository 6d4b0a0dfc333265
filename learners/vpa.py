"""Building blocks of LFTL's Visual Persistence-guided Adaptation (specs/lftl.md, "Visual Persistence-guided
Adaptation"); the training loop that uses them is `lftl_vpa` in learners.ssl.

The head is a `bottleneck` head (learners.heads): Linear(d, 256) -> BatchNorm1d = the bottleneck feature f,
then a weight-normalised classifier. Anchors are the labeled items; `update_anchor_memory` keeps one f per anchor.
Per step, with a labeled batch and an unlabeled batch (`vpa_loss`):

    L = CE(labeled) + beta_im L_im(unlabeled) + beta_vpa L_vpa(unlabeled)

- L_im (SHOT's information maximisation): mean entropy of the items' predictions minus the entropy of the
  batch-mean prediction (confident, yet diverse). The batch mean's log takes +1e-5, as SHOT's code does, since a
  class may get ~0 mass; the items' entropies are exact (log_softmax).
- L_vpa: for each unlabeled f, a softmax over its cosine similarities to every anchor memory (1e-8 added to the
  norms); the mean entropy of those distributions. Pulls unlabeled items toward one anchor.

Epochs and batches as the reference defines them (lyumengyao/lftl, `train_one_round_with_unlabel`): an epoch is one
pass over the unlabeled rows, ceil(U / batch) steps (`steps_per_epoch`); the labeled rows are cycled alongside, in
shuffled passes that run on across epochs (`PassBatches`). Both batches have `batch` rows (64), the last batch of a
pass is shorter. The reference skips a step whose batch has one row (its BatchNorm refuses it); the bottleneck head
here normalises such a batch with its running statistics, so no step is skipped. Optimiser: SGD, momentum 0.9,
Nesterov, with lr_t = lr (1 + 10 t / T)^-0.75 for steps t = 1..T, T = epochs x steps per epoch, of one call (one
round), as the reference schedules it; no warm-up. Optional mixup (`mixup_pass`): after an epoch, the labeled rows drawn
during it are mixed in pairs in feature space (lambda ~ Beta(0.75, 0.75), taken >= 0.5 as the reference does) and
trained on with soft targets, at the current learning rate.

Everything here works on tensors already on the device; nothing reads a database or files.
"""
from __future__ import annotations

import math
from collections import deque

import numpy as np
import torch
from torch import nn

MEMORY_MOMENTUM = 0.9  # weight of the new feature in the anchor memory (reference convention)
COSINE_EPS = 1e-8
SHOT_EPS = 1e-5
SGD_MOMENTUM = 0.9
LR_GAMMA, LR_POWER = 10.0, 0.75
MIXUP_ALPHA = 0.75


class PassBatches:
    """Endless seeded mini-batches of positions 0..n-1, as a shuffling DataLoader without drop_last that is
    restarted whenever it runs out: each pass is a fresh permutation cut into batches of `size`, the last one
    shorter; a batch never spans two passes."""

    def __init__(self, n: int, size: int, generator: torch.Generator) -> None:
        self.n, self.size, self.generator = n, size, generator
        self.pending: deque[np.ndarray] = deque()

    def take(self) -> np.ndarray:
        if not self.pending:
            order = torch.randperm(self.n, generator=self.generator).numpy()
            self.pending.extend(order[start:start + self.size] for start in range(0, self.n, self.size))
        return self.pending.popleft()


def steps_per_epoch(labeled: int, unlabeled: int, batch: int) -> int:
    """ceil(U / batch): one pass over the unlabeled rows. The reference requires U >= L; where the labeled rows
    are more (or there are no unlabeled rows) an epoch is one pass over them instead, so every label is still
    seen once per epoch."""
    return math.ceil(max(labeled, unlabeled) / batch)


def update_anchor_memory(memory: torch.Tensor | None, fresh: torch.Tensor,
                         momentum: float = MEMORY_MOMENTUM) -> torch.Tensor:
    """The anchor memory after a refresh, row i = anchor i: (1 - momentum) memory + momentum fresh, detached;
    the first refresh (`memory` None) stores `fresh` itself. (The reference starts from zeros, which gives
    0.9 fresh: the same cosine similarities, up to the epsilon.)"""
    fresh = fresh.detach()
    if memory is None:
        return fresh.clone()
    return (1.0 - momentum) * memory + momentum * fresh


def anchor_features(net: nn.Module, anchors: torch.Tensor) -> torch.Tensor:
    """The bottleneck features of the anchor rows, computed in eval mode without gradient (the network's mode is
    restored afterwards)."""
    was_training = net.training
    net.eval()
    with torch.no_grad():
        features = net.penultimate(anchors)
    net.train(was_training)
    return features


def information_maximisation_loss(logits: torch.Tensor) -> torch.Tensor:
    """L_im = mean_i H(p_i) - H(mean_i p_i) over a batch of logits (nats)."""
    log_p = torch.log_softmax(logits, dim=1)
    p = log_p.exp()
    item_entropy = -(p * log_p).sum(dim=1).mean()
    mean_p = p.mean(dim=0)
    return item_entropy + (mean_p * (mean_p + SHOT_EPS).log()).sum()


def persistence_loss(features: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """L_vpa: mean entropy of softmax_j cos(features_i, memory_j) over the rows of `features`."""
    norms = (features.norm(dim=1, keepdim=True) + COSINE_EPS) * (memory.norm(dim=1) + COSINE_EPS).unsqueeze(0)
    log_q = torch.log_softmax(features @ memory.T / norms, dim=1)
    return -(log_q.exp() * log_q).sum(dim=1).mean()


def vpa_loss(net: nn.Module, labeled_x: torch.Tensor, labeled_y: torch.Tensor, unlabeled_x: torch.Tensor | None,
             memory: torch.Tensor, beta_im: float, beta_vpa: float) -> tuple[torch.Tensor, dict[str, float]]:
    """(L, its parts as floats) for one step; without unlabeled rows L is the cross-entropy alone."""
    ce = nn.functional.cross_entropy(net(labeled_x), labeled_y)
    parts = {"ce": ce.item(), "im": 0.0, "vpa": 0.0}
    if unlabeled_x is None:
        return ce, parts
    features = net.penultimate(unlabeled_x)
    im = information_maximisation_loss(net.fc(features))
    vpa = persistence_loss(features, memory)
    parts.update(im=im.item(), vpa=vpa.item())
    return ce + beta_im * im + beta_vpa * vpa, parts


def sgd_optimiser(net: nn.Module, lr: float, weight_decay: float) -> torch.optim.SGD:
    return torch.optim.SGD(net.parameters(), lr=lr, momentum=SGD_MOMENTUM, nesterov=True, weight_decay=weight_decay)


def scheduled_lr(base_lr: float, step: int, total_steps: int) -> float:
    """lr (1 + 10 step / total)^-0.75, step = 1..total (the reference counts from 1)."""
    return base_lr * (1.0 + LR_GAMMA * step / total_steps) ** -LR_POWER


def set_lr(optimiser: torch.optim.Optimizer, lr: float) -> None:
    for group in optimiser.param_groups:
        group["lr"] = lr


def mixup_pass(net: nn.Module, optimiser: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               num_classes: int, batch_size: int, rng: np.random.Generator) -> float:
    """One pass over rows `x` (labels `y`) mixed with a shuffled copy of themselves, soft cross-entropy;
    returns the mean loss. Draws (pairing, lambdas, batch order) come from `rng` only."""
    partner = torch.from_numpy(rng.permutation(len(x))).to(x.device)
    lam = rng.beta(MIXUP_ALPHA, MIXUP_ALPHA, size=len(x))
    lam = torch.from_numpy(np.maximum(lam, 1.0 - lam)).to(x.device, x.dtype).unsqueeze(1)
    one_hot = nn.functional.one_hot(y, num_classes).to(x.dtype)
    mixed_x = lam * x + (1.0 - lam) * x[partner]
    mixed_y = lam * one_hot + (1.0 - lam) * one_hot[partner]
    order = torch.from_numpy(rng.permutation(len(x))).to(x.device)
    losses = []
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        loss = -(mixed_y[batch] * torch.log_softmax(net(mixed_x[batch]), dim=1)).sum(dim=1).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return float(np.mean(losses))

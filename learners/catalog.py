"""The torch-free catalog of what a project can be set to: head kinds, training methods (with what each needs and
implies), and the metrics each task is judged on. The web process builds its forms and checks settings from it;
the training itself is learners.heads and learners.ssl. `SSLConfig` is the semi-supervised settings a project stores.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from learners.settings_dict import from_settings

# Head kinds and their help (learners.heads builds and trains them).
HEAD_KINDS: dict[str, str] = {
    "linear": "one linear layer on the features: L2 logistic regression (C = 1), fit to convergence with L-BFGS.",
    "mlp": "one hidden layer of 512 units, L2-regularised (C = 10), fit with full-batch L-BFGS.",
    "bottleneck": "Linear-256-BatchNorm + weight-normalised classifier (LFTL's head).",
}


@dataclass(frozen=True)
class TrainingMethod:
    """A semi-supervised training method. `views`: augmented views it cannot run without (the worker embeds them
    for a project using it); `multi_label_refusal`: why it has no multi-label version (None: it has one);
    `warm_start`: whether training starts from the latest head unless the project says otherwise; `head_kind`:
    the head kind it always trains, whatever the project's head setting (None: the project's)."""

    help: str
    views: tuple[str, ...] = ()
    multi_label_refusal: str | None = None
    warm_start: bool = False
    head_kind: str | None = None


TRAINING_METHODS: dict[str, TrainingMethod] = {
    "none": TrainingMethod("labels only."),
    "pseudo_label": TrainingMethod("confident predictions on unlabeled items join training."),
    "flexmatch": TrainingMethod(
        "class-adaptive thresholds on augmented views (the worker embeds weak and strong views).",
        views=("weak", "strong"),
        multi_label_refusal="its pseudo-label is one argmax class per item and its class thresholds count items per "
                            "predicted class; specs/training.md gives no multi-label version",
    ),
    "lftl_vpa": TrainingMethod(
        "LFTL's visual-persistence adaptation (bottleneck head, warm-started round after round).",
        multi_label_refusal="VPA's information-maximisation and anchor losses are defined on softmax outputs and one "
                            "class per labeled item; specs/lftl.md gives no multi-label version",
        warm_start=True,  # LFTL adapts one model round after round
        head_kind="bottleneck",
    ),
}
METHOD_NAMES = tuple(TRAINING_METHODS)
REQUIRED_VIEWS: dict[str, tuple[str, ...]] = {name: m.views for name, m in TRAINING_METHODS.items() if m.views}
MULTI_LABEL_REFUSALS: dict[str, str] = {
    name: m.multi_label_refusal for name, m in TRAINING_METHODS.items() if m.multi_label_refusal
}
MULTI_LABEL_METHODS = tuple(m for m in METHOD_NAMES if m not in MULTI_LABEL_REFUSALS)
WARM_START_METHODS = tuple(name for name, m in TRAINING_METHODS.items() if m.warm_start)

# The eval-set metrics a task is judged on, with their display names (first: the headline).
TASK_METRICS: dict[str, dict[str, str]] = {
    "single_label": {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "macro_f1": "macro F1"},
    "multi_label": {"mAP": "mAP", "macro_f1": "macro F1", "micro_f1": "micro F1"},
}
METRIC_NAMES = {**TASK_METRICS["single_label"], **TASK_METRICS["multi_label"]}


def help_text(table: dict[str, str] | dict[str, TrainingMethod]) -> str:
    """Every entry of HEAD_KINDS or TRAINING_METHODS as 'name: help', for a form's help text."""
    return " ".join(f"{name}: {getattr(entry, 'help', entry)}" for name, entry in table.items())


@dataclass
class SSLConfig:
    """Semi-supervised settings. `tau`: confidence cut-off (pseudo_label's 0.95, FlexMatch's tau); `lambda_u`:
    weight of the unlabeled term; `uratio`: unlabeled batch size / labeled batch size; `min_steps_per_epoch`:
    the floor on optimiser steps per epoch; `warmup_epochs`: first epochs on labeled rows only;
    `labeled_view`: what the labeled batch reads, the spec's "weak" view or the "plain" features (module
    docstring). lftl_vpa only (specs/lftl.md, reference defaults): `beta_im`, `beta_vpa` (loss weights; the
    reference uses beta_vpa = 10 on large pools), `vpa_lr`, `vpa_weight_decay` (SGD), `vpa_batch` (labeled and
    unlabeled batch size), `mixup` (the optional feature-space mixup pass after each epoch)."""

    method: str = "none"
    tau: float = 0.95
    lambda_u: float = 1.0
    uratio: int = 5
    min_steps_per_epoch: int = 10
    warmup_epochs: int = 1
    labeled_view: str = "weak"
    beta_im: float = 0.9
    beta_vpa: float = 1.0
    vpa_lr: float = 1e-3
    vpa_weight_decay: float = 1e-3
    vpa_batch: int = 64
    mixup: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHOD_NAMES:
            raise ValueError(f"unknown ssl method {self.method!r}; known: {', '.join(METHOD_NAMES)}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau must lie in (0, 1], got {self.tau}")
        if self.labeled_view not in ("weak", "plain"):
            raise ValueError(f"labeled_view must be 'weak' or 'plain', got {self.labeled_view!r}")
        if self.lambda_u < 0 or self.uratio < 1 or self.min_steps_per_epoch < 1 or self.warmup_epochs < 0:
            raise ValueError(f"need lambda_u >= 0, uratio >= 1, min_steps_per_epoch >= 1 and warmup_epochs >= 0, "
                             f"got {self.lambda_u}, {self.uratio}, {self.min_steps_per_epoch} and "
                             f"{self.warmup_epochs}")
        if self.beta_im < 0 or self.beta_vpa < 0 or self.vpa_lr <= 0 or self.vpa_weight_decay < 0 \
                or self.vpa_batch < 1:
            raise ValueError(f"need beta_im >= 0, beta_vpa >= 0, vpa_lr > 0, vpa_weight_decay >= 0 and "
                             f"vpa_batch >= 1, got {self.beta_im}, {self.beta_vpa}, {self.vpa_lr}, "
                             f"{self.vpa_weight_decay} and {self.vpa_batch}")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | str | None) -> SSLConfig:
        """From a project's settings: a method name, or a dict of the fields above."""
        if isinstance(d, str):
            return cls(method=d)
        return from_settings(cls, d, "ssl")

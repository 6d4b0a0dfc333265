"""The semi-supervised settings a project stores (`SSLConfig`) and what each method needs, without torch: the web
process validates settings with this module; the training itself is `learners.ssl`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from learners.settings_dict import from_settings

METHOD_NAMES = ("none", "pseudo_label", "flexmatch", "lftl_vpa")
# Views each method cannot run without (the app embeds them when a project's method is listed here).
REQUIRED_VIEWS: dict[str, tuple[str, ...]] = {"flexmatch": ("weak", "strong")}
# Methods without a multi-label version, and why (train_head_ssl refuses them with this reason when multi_label).
MULTI_LABEL_REFUSALS: dict[str, str] = {
    "flexmatch": "its pseudo-label is one argmax class per item and its class thresholds count items per predicted "
                 "class; specs/training.md gives no multi-label version",
    "lftl_vpa": "VPA's information-maximisation and anchor losses are defined on softmax outputs and one class per "
                "labeled item; specs/lftl.md gives no multi-label version",
}
MULTI_LABEL_METHODS = tuple(m for m in METHOD_NAMES if m not in MULTI_LABEL_REFUSALS)


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

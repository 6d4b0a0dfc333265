"""Frozen feature extractors: `pixels` (resized grey pixels) and any timm model (`timm/<name>`).

A backbone asked for with pretrained weights that cannot be had raises `BackboneUnavailable`; it never falls
back to random weights silently.
"""
from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from PIL import Image
from safetensors.torch import load_file
from timm.data import create_transform, resolve_data_config
from torch import nn

from learners.errors import LearnerError

PIXELS_DEFAULT_SIZE = 16
ACCEPTED_FORMS = "'pixels' or 'timm/<model name>' (for example 'timm/resnet18')"


class BackboneUnavailable(LearnerError):
    """The requested backbone (or its weights) cannot be loaded; the message says which and why."""


@dataclass
class BackboneSpec:
    """What to embed with. `name` is 'pixels' or 'timm/<model>'.

    `checkpoint` (a .safetensors or torch file holding the model's state dict) takes precedence over
    `pretrained`. `image_size` is the square input side (pixels default 16; timm default: the model's own).
    """

    name: str
    pretrained: bool = True
    checkpoint: str | None = None
    image_size: int | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any] | str) -> BackboneSpec:
        if isinstance(d, str):
            return cls(name=d)
        unknown = set(d) - {"name", "pretrained", "checkpoint", "image_size"}
        if unknown:
            raise ValueError(f"unknown backbone setting(s) {sorted(unknown)}; accepted: name, pretrained, "
                             "checkpoint, image_size")
        if "name" not in d:
            raise ValueError(f"backbone spec {d!r} has no 'name'; use {ACCEPTED_FORMS}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "pretrained": self.pretrained, "checkpoint": self.checkpoint,
                "image_size": self.image_size}


@dataclass
class Backbone:
    """A loaded, frozen backbone. `transform` maps a PIL image to the tensor `module` expects (one item, no
    batch dimension); `module(batch)` returns (B, dim) features."""

    name: str
    module: nn.Module
    transform: Callable[[Image.Image], torch.Tensor]
    dim: int


def load_backbone(spec: BackboneSpec, device: str | torch.device = "cpu") -> Backbone:
    """Build the backbone `spec` names, in eval mode with gradients off, on `device`."""
    if spec.image_size is not None and spec.image_size < 1:
        raise ValueError(f"{spec.name}: image_size must be a positive integer, got {spec.image_size}")
    if spec.name == "pixels":
        backbone = _load_pixels(spec)
    elif spec.name.startswith("timm/") and len(spec.name) > len("timm/"):
        backbone = _load_timm(spec)
    else:
        raise ValueError(f"unknown backbone {spec.name!r}; accepted forms: {ACCEPTED_FORMS}")
    backbone.module.eval().requires_grad_(False).to(device)
    return backbone


class _PixelsTransform:
    """Resize to size x size, grey levels in [0, 1], shape (1, size, size). A class so DataLoader workers can
    pickle it."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: Image.Image) -> torch.Tensor:
        grey = image.convert("L").resize((self.size, self.size), Image.Resampling.BILINEAR)
        pixels = np.asarray(grey, dtype=np.float32) / 255.0
        return torch.from_numpy(pixels).unsqueeze(0)


def _load_pixels(spec: BackboneSpec) -> Backbone:
    size = spec.image_size or PIXELS_DEFAULT_SIZE
    return Backbone(name="pixels", module=nn.Flatten(), transform=_PixelsTransform(size), dim=size * size)


class _RandomInitWarning(logging.Handler):
    """Collects timm log records that announce a fallback to random initialization."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "random init" in message.lower():
            self.messages.append(message)


@contextmanager
def _watch_timm_random_init() -> Iterator[_RandomInitWarning]:
    logger = logging.getLogger("timm.models._builder")
    handler = _RandomInitWarning()
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def _load_timm(spec: BackboneSpec) -> Backbone:
    model_name = spec.name.removeprefix("timm/")
    if not timm.is_model(model_name):
        raise ValueError(f"unknown timm model {model_name!r} in backbone {spec.name!r}; "
                         f"see timm.list_models(); accepted forms: {ACCEPTED_FORMS}")
    use_hub_weights = spec.pretrained and spec.checkpoint is None
    try:
        with _watch_timm_random_init() as watch:
            model = timm.create_model(model_name, pretrained=use_hub_weights, num_classes=0)
    except Exception as error:  # timm/huggingface_hub raise many types (OSError, RuntimeError, ...)
        if not use_hub_weights:
            raise
        raise BackboneUnavailable(
            f"{spec.name}: pretrained weights could not be downloaded or found in the timm hub cache (offline?). "
            f"Set pretrained: false to use random weights, or checkpoint: /path/to/file. "
            f"Cause: {type(error).__name__}: {error}") from error
    if use_hub_weights and watch.messages:
        raise BackboneUnavailable(f"{spec.name}: timm has no loadable pretrained weights for this model "
                                  f"({watch.messages[0]}). Set pretrained: false or checkpoint: /path/to/file.")
    if spec.checkpoint is not None:
        _load_checkpoint(model, spec)

    overrides = {"input_size": (3, spec.image_size, spec.image_size)} if spec.image_size else {}
    data_config = resolve_data_config(overrides, model=model)
    transform = create_transform(**data_config, is_training=False)
    return Backbone(name=spec.name, module=model, transform=transform, dim=int(model.num_features))


def _looks_like_safetensors(path: Path) -> bool:
    """A safetensors file whatever its name: an 8-byte little-endian header length, then a JSON object."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < path.stat().st_size


def _unpickler_reason(error: Exception) -> str:
    """The one useful line of torch's weights-only refusal (its advice to pass weights_only=False is left out)."""
    match = re.search(r"WeightsUnpickler error:\s*(.+?)(?: was not an allowed global|\n|$)", str(error))
    return match.group(1).strip() if match else "not a plain state dict"


def read_state_dict(path: Path, label: str) -> dict[str, torch.Tensor]:
    """The state dict in a .safetensors or torch checkpoint file, read without running code: a `state_dict` or
    `model` wrapper and a `module.` key prefix are dropped. Every refusal is a `BackboneUnavailable` opening
    with `label` and naming the file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise BackboneUnavailable(f"{label}: checkpoint file {path} does not exist")
    try:
        if path.suffix == ".safetensors" or _looks_like_safetensors(path):
            state = load_file(str(path), device="cpu")
        else:
            # Never weights_only=False: a pickle can run any code while it is read. weights_only=True only
            # rebuilds tensors and plain containers and refuses every other global before calling it.
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise BackboneUnavailable(
            f"{label}: checkpoint {path} refused: it is a pickle holding more than tensors "
            f"({_unpickler_reason(error)}). Torch checkpoints are read with weights_only=True only, because "
            "unpickling other objects can run code; save the state dict as .safetensors "
            "(safetensors.torch.save_file) and give that file instead.") from None
    except Exception as error:
        raise BackboneUnavailable(f"{label}: cannot read checkpoint {path}: {error}") from error
    for wrapper_key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper_key), dict):
            state = state[wrapper_key]
    if not isinstance(state, dict):
        raise BackboneUnavailable(f"{label}: checkpoint {path} does not hold a state dict")
    not_tensors = [(key, type(value).__name__) for key, value in state.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        key, kind = not_tensors[0]
        raise BackboneUnavailable(f"{label}: checkpoint {path} is not a state dict of tensors: {len(not_tensors)} "
                                  f"of its {len(state)} entries are not tensors (the first: {key!r}, a {kind})")
    return {str(key).removeprefix("module."): value for key, value in state.items()}


def _load_checkpoint(model: nn.Module, spec: BackboneSpec) -> None:
    """Load a state dict from `spec.checkpoint` into `model` (built with num_classes=0).

    Classifier weights in the file are ignored; any other missing or unexpected key is an error."""
    path = Path(spec.checkpoint).expanduser()
    state = read_state_dict(path, spec.name)

    classifier = model.pretrained_cfg.get("classifier") or ""
    classifiers = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    expected = set(model.state_dict())
    unexpected = [k for k in state if k not in expected and not any(k.startswith(c + ".") for c in classifiers if c)]
    missing = sorted(expected - set(state))
    if missing or unexpected:
        raise BackboneUnavailable(f"{spec.name}: checkpoint {path} does not match the model: "
                                  f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
    model.load_state_dict({k: v for k, v in state.items() if k in expected})

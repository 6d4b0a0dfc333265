"""Head files that leave one project and start another (LFTL's source-free setting, specs/lftl.md).

A head file is a safetensors file: the head's weights plus string metadata naming its kind, sizes, classes,
task and the backbone whose features it reads. Only safetensors is read: a pickled checkpoint could run code on
load, so it is refused by name rather than unpickled.
"""
from __future__ import annotations

import json

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as load_safetensors_bytes
from safetensors.numpy import save as save_safetensors_bytes

from storage.errors import StorageError

REQUIRED_METADATA = ("kind", "num_classes", "in_dim", "backbone", "classes", "task")


class SourceHeadProblem(StorageError, ValueError):
    """A head file that cannot start this project; the message names the file and the mismatch."""


def backbone_key(backbone: dict | str) -> str:
    """One string per feature space: heads and cached features are only reused where it matches."""
    spec = {"name": backbone} if isinstance(backbone, str) else dict(backbone)
    return (f"{spec['name']}|pretrained={spec.get('pretrained', True)}|ckpt={spec.get('checkpoint')}"
            f"|size={spec.get('image_size')}")


def head_file_bytes(arrays: dict[str, np.ndarray], metadata: dict[str, str], *, classes: list[str], task: str,
                    project_name: str) -> bytes:
    """The bytes of a head file for download: weights, feature statistics and self-describing metadata."""
    meta = {**metadata, "classes": json.dumps(list(classes), ensure_ascii=False), "task": task,
            "source_project": project_name}
    return save_safetensors_bytes({k: np.ascontiguousarray(v) for k, v in arrays.items()}, metadata=meta)


def read_head_file(data: bytes, name: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(arrays, metadata) of a head file; SourceHeadProblem for anything that is not a complete one."""
    if data[:1] == b"\x80" or data[:2] == b"PK":
        raise SourceHeadProblem(f"{name}: this is a pickled (torch.save) checkpoint; only .safetensors head files "
                                "are loaded, because unpickling can run code. Export the head from a project.")
    try:
        arrays = load_safetensors_bytes(data)
        metadata = _metadata(data)
    except (SafetensorError, ValueError, OSError) as exc:
        raise SourceHeadProblem(f"{name}: not a readable safetensors head file ({exc})") from exc
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise SourceHeadProblem(f"{name}: the head file lacks {', '.join(missing)} in its metadata; "
                                "export the head from a project of this workbench")
    return arrays, metadata


def _metadata(data: bytes) -> dict[str, str]:
    """The `__metadata__` of a safetensors header (8-byte little-endian length, then JSON)."""
    if len(data) < 8:
        raise ValueError("file too short")
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8:
        raise ValueError("header longer than the file")
    header = json.loads(data[8:8 + size])
    return dict(header.get("__metadata__") or {})


def check_source_head(metadata: dict[str, str], name: str, *, classes: list[str], task: str, backbone: dict) -> None:
    """The head must read the same features and predict the same classes, in the same order."""
    head_classes = json.loads(metadata["classes"])
    if metadata["task"] != task:
        raise SourceHeadProblem(f"{name}: the head was trained for a {metadata['task']} task, this project is {task}")
    if head_classes != list(classes):
        raise SourceHeadProblem(f"{name}: the head predicts classes {head_classes}, this project has {list(classes)} "
                                "(same names in the same order are needed)")
    if metadata["backbone"] != backbone_key(backbone):
        raise SourceHeadProblem(f"{name}: the head reads features of backbone {metadata['backbone']!r}, this "
                                f"project embeds with {backbone_key(backbone)!r}")

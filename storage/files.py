"""Files under a project's folder, written atomically and checked on read.

A file is written to a temporary name, fsynced and renamed into place; only then is its Artifact row added. A
reader verifies the sha256 recorded in the row, so a half-written or damaged file is never used.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from safetensors.numpy import load as load_safetensors_bytes
from safetensors.numpy import save as save_safetensors_bytes
from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import Artifact


class DamagedFile(RuntimeError):
    pass


def project_dir(home: Path, project_id: int) -> Path:
    path = Path(home) / "projects" / str(project_id)
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write_bytes(path: Path, data: bytes) -> str:
    """Write `data` to `path` atomically; returns its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return hashlib.sha256(data).hexdigest()


def _read_checked(path: Path, sha256: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DamagedFile(f"{path}: cannot be read ({exc})") from exc
    if hashlib.sha256(data).hexdigest() != sha256:
        raise DamagedFile(f"{path}: contents do not match the checksum recorded when it was written")
    return data


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def save_matrix(
    session: Session,
    path: Path,
    *,
    project_id: int,
    kind: str,
    matrix: np.ndarray,
    item_ids: np.ndarray,
    round_id: int | None = None,
    meta: dict | None = None,
) -> Artifact:
    """Save a per-item matrix (features, predictions) as `.npy`, with the item ids of its rows."""
    if len(matrix) != len(item_ids):
        raise ValueError(f"{path}: {len(matrix)} rows but {len(item_ids)} item ids")
    ids_path = path.with_suffix(".ids.npy")
    ids_sha = atomic_write_bytes(ids_path, _npy_bytes(np.asarray(item_ids, dtype=np.int64)))
    sha = atomic_write_bytes(path, _npy_bytes(np.ascontiguousarray(matrix)))
    artifact = Artifact(
        project_id=project_id,
        round_id=round_id,
        kind=kind,
        path=str(path),
        sha256=sha,
        meta={**(meta or {}), "ids_path": str(ids_path), "ids_sha256": ids_sha, "shape": list(matrix.shape)},
    )
    session.add(artifact)
    session.flush()
    return artifact


def load_matrix(artifact: Artifact) -> tuple[np.ndarray, np.ndarray]:
    """(matrix, item_ids) of a saved artifact, refusing damaged files."""
    matrix = np.load(io.BytesIO(_read_checked(Path(artifact.path), artifact.sha256)), allow_pickle=False)
    ids = np.load(
        io.BytesIO(_read_checked(Path(artifact.meta["ids_path"]), artifact.meta["ids_sha256"])), allow_pickle=False
    )
    return matrix, ids


def save_tensors(
    session: Session,
    path: Path,
    *,
    project_id: int,
    kind: str,
    arrays: dict[str, np.ndarray],
    metadata: dict[str, str],
    round_id: int | None = None,
) -> Artifact:
    sha = atomic_write_bytes(path, save_safetensors_bytes(arrays, metadata=metadata))
    artifact = Artifact(project_id=project_id, round_id=round_id, kind=kind, path=str(path), sha256=sha, meta=metadata)
    session.add(artifact)
    session.flush()
    return artifact


def load_tensors(artifact: Artifact) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Arrays and metadata of a safetensors artifact (never a pickle)."""
    data = _read_checked(Path(artifact.path), artifact.sha256)
    return load_safetensors_bytes(data), dict(artifact.meta)


def save_json(session: Session, path: Path, *, project_id: int, kind: str, data: dict, meta: dict | None = None) -> Artifact:
    sha = atomic_write_bytes(path, json.dumps(data, ensure_ascii=False, default=str).encode())
    artifact = Artifact(project_id=project_id, kind=kind, path=str(path), sha256=sha, meta=meta or {})
    session.add(artifact)
    session.flush()
    return artifact


def load_json(artifact: Artifact) -> dict:
    return json.loads(_read_checked(Path(artifact.path), artifact.sha256))


def latest_artifact(session: Session, project_id: int, kind: str, **meta_filters: str) -> Artifact | None:
    rows = session.scalars(
        select(Artifact).where(Artifact.project_id == project_id, Artifact.kind == kind).order_by(Artifact.id.desc())
    )
    for row in rows:
        if all(row.meta.get(k) == v for k, v in meta_filters.items()):
            return row
    return None

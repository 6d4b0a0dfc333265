"""Files under a project's folder, written atomically and checked on read.

A file is written to a temporary name, fsynced and renamed into place; only then is its Artifact row added. A
reader verifies the sha256 recorded in the row, so a half-written or damaged file is never used.

A write that fails (disk full, no permission) raises OSError naming the file; files written inside a transaction
that then rolls back are removed again, so a failed job leaves neither a registered nor an orphaned file. A damaged
file that is only a cache of the images (features, augmented views) can be `set_aside` and recomputed.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from safetensors.numpy import load as load_safetensors_bytes
from safetensors.numpy import save as save_safetensors_bytes
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from storage.errors import StorageError
from storage.models import Artifact

# Artifacts that are only a cache of the images under a frozen backbone: a damaged one is recomputed, not fatal.
RECOMPUTABLE_KINDS = frozenset({"features", "views"})
_UNCOMMITTED = "storage.files.uncommitted"  # session.info key: files written in the open transaction


class DamagedFile(StorageError, RuntimeError):
    """A file whose contents do not match the checksum recorded when it was written (truncated, corrupted) or that
    cannot be read. `path` is the file; `artifact_id` and `kind` its Artifact row, when it was read through one."""

    def __init__(self, message: str, path: Path | None = None, artifact_id: int | None = None,
                 kind: str | None = None) -> None:
        super().__init__(message)
        self.path, self.artifact_id, self.kind = path, artifact_id, kind


def project_dir(home: Path, project_id: int) -> Path:
    path = Path(home) / "projects" / str(project_id)
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write_bytes(path: Path, data: bytes) -> str:
    """Write `data` to `path` atomically; returns its sha256. A failure raises OSError naming `path` (the file at
    `path`, if any, is left as it was, and no temporary file is left behind)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _write_error(exc, path) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _write_error(exc, path) from exc
        raise
    return hashlib.sha256(data).hexdigest()


def _write_error(exc: OSError, path: Path) -> OSError:
    """The same error (errno kept) with a message that names the file and says what to do."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = f"the disk holding {path.parent} is full: free some space, then retry the job"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = f"{path.parent} cannot be written: fix its permissions, then retry the job"
    else:
        hint = "retry the job once the cause is fixed"
    return OSError(exc.errno, f"{reason}: cannot write {path} ({hint})")


def _write_registered(session: Session, path: Path, data: bytes) -> str:
    """atomic_write_bytes for a file whose Artifact row is added in `session`'s transaction: a new file is removed
    again if that transaction rolls back, so it never outlives a failed job unregistered."""
    new = not path.exists()
    sha = atomic_write_bytes(path, data)
    if new:
        session.info.setdefault(_UNCOMMITTED, []).append(path)
    return sha


@event.listens_for(Session, "after_commit")
def _keep_written_files(session: Session) -> None:
    session.info.pop(_UNCOMMITTED, None)


@event.listens_for(Session, "after_rollback")
def _remove_unregistered_files(session: Session) -> None:
    for path in session.info.pop(_UNCOMMITTED, []):
        try:
            Path(path).unlink(missing_ok=True)
        except OSError:
            pass


def _read_checked(path: Path, sha256: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DamagedFile(f"{path}: cannot be read ({exc})", Path(path)) from exc
    if hashlib.sha256(data).hexdigest() != sha256:
        raise DamagedFile(
            f"{path}: contents do not match the checksum recorded when it was written (truncated or corrupted)",
            Path(path),
        )
    return data


def _read_artifact_file(artifact: Artifact, path: str | Path, sha256: str) -> bytes:
    try:
        return _read_checked(Path(path), sha256)
    except DamagedFile as exc:
        exc.artifact_id, exc.kind = artifact.id, artifact.kind
        raise


def set_aside(session: Session, artifact_id: int, reason: str) -> Artifact | None:
    """Retire a damaged artifact that is only a cache (RECOMPUTABLE_KINDS), so that the next reader recomputes it:
    the row is kept, as kind 'damaged' with its former kind and the reason in `meta`, and no lookup by kind finds
    it again. Returns None (and changes nothing) for any other kind: a damaged head or predictions file cannot be
    rebuilt from the images alone, and the job that met it must fail naming it."""
    artifact = session.get(Artifact, artifact_id)
    if artifact is None or artifact.kind not in RECOMPUTABLE_KINDS:
        return None
    artifact.meta = {**(artifact.meta or {}), "damaged": reason, "former_kind": artifact.kind}
    artifact.kind = "damaged"
    session.flush()
    return artifact


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
    ids_sha = _write_registered(session, ids_path, _npy_bytes(np.asarray(item_ids, dtype=np.int64)))
    sha = _write_registered(session, path, _npy_bytes(np.ascontiguousarray(matrix)))
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
    matrix = np.load(io.BytesIO(_read_artifact_file(artifact, artifact.path, artifact.sha256)), allow_pickle=False)
    ids = np.load(
        io.BytesIO(_read_artifact_file(artifact, artifact.meta["ids_path"], artifact.meta["ids_sha256"])),
        allow_pickle=False,
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
    sha = _write_registered(session, path, save_safetensors_bytes(arrays, metadata=metadata))
    artifact = Artifact(project_id=project_id, round_id=round_id, kind=kind, path=str(path), sha256=sha, meta=metadata)
    session.add(artifact)
    session.flush()
    return artifact


def load_tensors(artifact: Artifact) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Arrays and metadata of a safetensors artifact (never a pickle)."""
    data = _read_artifact_file(artifact, artifact.path, artifact.sha256)
    return load_safetensors_bytes(data), dict(artifact.meta)


def save_json(session: Session, path: Path, *, project_id: int, kind: str, data: dict, meta: dict | None = None) -> Artifact:
    sha = _write_registered(session, path, json.dumps(data, ensure_ascii=False, default=str).encode())
    artifact = Artifact(project_id=project_id, kind=kind, path=str(path), sha256=sha, meta=meta or {})
    session.add(artifact)
    session.flush()
    return artifact


def load_json(artifact: Artifact) -> dict:
    return json.loads(_read_artifact_file(artifact, artifact.path, artifact.sha256))


def artifacts(session: Session, project_id: int, kind: str) -> list[Artifact]:
    """The project's artifacts of one kind, newest first."""
    return list(session.scalars(
        select(Artifact).where(Artifact.project_id == project_id, Artifact.kind == kind).order_by(Artifact.id.desc())
    ))


def latest_artifact(session: Session, project_id: int, kind: str, **meta_filters: str) -> Artifact | None:
    rows = session.scalars(
        select(Artifact).where(Artifact.project_id == project_id, Artifact.kind == kind).order_by(Artifact.id.desc())
    )
    for row in rows:
        if all(row.meta.get(k) == v for k, v in meta_filters.items()):
            return row
    return None


def latest_artifacts(session: Session, project_id: int, kind: str, limit: int) -> list[Artifact]:
    """The project's `limit` newest artifacts of `kind`, newest first."""
    return list(session.scalars(
        select(Artifact).where(Artifact.project_id == project_id, Artifact.kind == kind)
        .order_by(Artifact.id.desc()).limit(limit)
    ))

"""The embed job's shards: the pool, in item-id order, cut into ranges that workers embed one at a time and keep as
checked files, so a killed worker costs only the shard it was on, and several workers (one per GPU) share a pool.

State lives in files under the project's folder, `embed-shards/<digest of backbone and item ids>/` (no table):

- `plan.json`: the shard size, written once by the job's worker; every worker reads it, so all cut the same ranges.
- `shard-00003.claim`: created exclusively by the worker that embeds shard 3, touched after every batch. A claim
  not touched for the stale timeout (WORKBENCH_STALE_SECONDS) is a dead worker's and is taken over.
- `shard-00003.bin`: the shard's features, written atomically: a sha256 line, then an `.npz` of the features, the
  item ids and the files that could not be read. On read the checksum, the ids (those of the plan's range) and
  the shape are checked; a file that fails is removed and the shard embedded again.

The job's worker merges the shards in item-id order into the ordinary features artifact and removes the folder.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.settings import Settings
from storage.files import atomic_write_bytes, project_dir

Progress = Callable[[float, str], None]
# (first position, stop position, progress within the shard) -> (features (stop - start, d), {position: problem})
EmbedRange = Callable[[int, int, Progress], tuple[np.ndarray, dict[int, str]]]

FOLDER = "embed-shards"
SHARD_MIN, SHARD_MAX, TARGET_SHARDS = 128, 4096, 32  # about 32 shards a pool, each of 128 .. 4096 items
WAIT_SECONDS = 0.5  # the job's worker polls this often while other workers finish their shards


def shard_size(count: int) -> int:
    """Items per shard: WORKBENCH_EMBED_SHARD_SIZE when set, else about a 32nd of the pool (128 .. 4096)."""
    if os.environ.get("WORKBENCH_EMBED_SHARD_SIZE"):
        size = int(os.environ["WORKBENCH_EMBED_SHARD_SIZE"])
        if size < 1:
            raise ValueError(f"WORKBENCH_EMBED_SHARD_SIZE must be 1 or more, got {size}")
        return size
    return max(SHARD_MIN, min(SHARD_MAX, -(-count // TARGET_SHARDS)))


def stale_seconds() -> float:
    return float(os.environ.get("WORKBENCH_STALE_SECONDS") or Settings.stale_seconds)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


@dataclass(frozen=True)
class ShardPlan:
    folder: Path
    ids: np.ndarray  # every item id, ascending: shard k holds positions [k * size, (k + 1) * size)
    size: int
    nonce: str  # this plan's identity, in every shard file: a shard left by a deleted project's plan never fits

    @property
    def count(self) -> int:
        return -(-len(self.ids) // self.size)

    def bounds(self, k: int) -> tuple[int, int]:
        return k * self.size, min(len(self.ids), (k + 1) * self.size)

    def path(self, k: int) -> Path:
        return self.folder / f"shard-{k:05d}.bin"

    def claim_path(self, k: int) -> Path:
        return self.folder / f"shard-{k:05d}.claim"


def plan_folder(home: Path, project_id: int, key: str, ids: np.ndarray) -> Path:
    digest = hashlib.sha256(key.encode() + b"\0" + np.asarray(ids, dtype=np.int64).tobytes()).hexdigest()[:20]
    return project_dir(home, project_id) / FOLDER / digest


def open_plan(home: Path, project_id: int, key: str, ids: np.ndarray, create: bool) -> ShardPlan | None:
    """The plan of these items under backbone `key`: the one on disk (a resumed or shared job), else a new one
    when `create`, else None (no worker is embedding them)."""
    folder = plan_folder(home, project_id, key, ids)
    plan_file = folder / "plan.json"
    try:
        stored = json.loads(plan_file.read_text())
        size, nonce = int(stored["size"]), str(stored["nonce"])
    except (OSError, ValueError, KeyError, TypeError):
        if not create:
            return None
        size, nonce = shard_size(len(ids)), uuid.uuid4().hex
        atomic_write_bytes(plan_file, json.dumps({"size": size, "items": len(ids), "key": key,
                                                  "nonce": nonce}).encode())
    return ShardPlan(folder, np.asarray(ids, dtype=np.int64), size, nonce)


def plan_is_current(plan: ShardPlan) -> bool:
    """Whether the plan is still on disk, the same one (not removed by a merge, nor replaced)."""
    try:
        return json.loads((plan.folder / "plan.json").read_text()).get("nonce") == plan.nonce
    except (OSError, ValueError, AttributeError):
        return False


def remove_plan(plan: ShardPlan) -> None:
    shutil.rmtree(plan.folder, ignore_errors=True)


# ----- shard files ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shard:
    features: np.ndarray  # (items of the shard, d), NaN rows for the files that could not be read
    problems: dict[int, str]  # item id -> why its file could not be read


def write_shard(path: Path, features: np.ndarray, ids: np.ndarray, problems: dict[int, str], nonce: str = "") -> None:
    buffer = io.BytesIO()
    np.savez(buffer, nonce=np.array(nonce), features=np.ascontiguousarray(features, dtype=np.float32), ids=np.asarray(ids, dtype=np.int64),
             problem_ids=np.array(list(problems), dtype=np.int64), problems=np.array(list(problems.values()), dtype=str))
    payload = buffer.getvalue()
    atomic_write_bytes(path, hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)


def read_shard(path: Path, ids: np.ndarray, nonce: str = "") -> Shard | None:
    """The shard at `path` if it is there and whole (checksum, the expected `ids`, one 2-D float32 row per id);
    None otherwise, and a damaged file is removed so that the shard is embedded again."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    digest, _, payload = data.partition(b"\n")
    try:
        if hashlib.sha256(payload).hexdigest().encode() != digest:
            raise ValueError("checksum mismatch")
        with np.load(io.BytesIO(payload), allow_pickle=False) as arrays:
            features, stored_ids = arrays["features"], arrays["ids"]
            if str(arrays["nonce"]) != nonce:
                raise ValueError("written for another plan")
            problems = {int(i): str(m) for i, m in zip(arrays["problem_ids"], arrays["problems"])}
        if not np.array_equal(stored_ids, ids) or features.ndim != 2 or len(features) != len(ids) \
                or features.dtype != np.float32:
            raise ValueError("ids or shape differ from the plan")
    except (ValueError, KeyError, OSError, EOFError):
        path.unlink(missing_ok=True)
        return None
    return Shard(features, problems)


# ----- claims ---------------------------------------------------------------------------------------------------
def try_claim(path: Path, worker: str, stale_after: float) -> bool:
    """Whether `worker` now holds the claim at `path`: a new one, or a dead worker's (untouched for `stale_after`
    seconds) taken over. Two workers taking over the same stale claim at once may both win: both then embed the
    shard and write the same file atomically, which costs time, never correctness."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileNotFoundError:  # the plan's folder was removed: merged by another run
        return False
    except FileExistsError:
        try:
            if time.time() - path.stat().st_mtime < stale_after:
                return False
        except FileNotFoundError:  # released a moment ago: the shard file is there now
            return False
        atomic_write_bytes(path, worker.encode())  # the dead worker's claim replaced by ours
        try:
            return path.read_text() == worker
        except FileNotFoundError:
            return False
    with os.fdopen(fd, "w") as fh:
        fh.write(worker)
    return True


def touch(path: Path) -> None:
    try:
        os.utime(path)
    except FileNotFoundError:
        pass


# ----- the work loop --------------------------------------------------------------------------------------------
class PlanRemoved(Exception):
    """The plan's folder is gone: another run merged its shards into the features artifact."""


def work(plan: ShardPlan, embed_range: EmbedRange, progress: Progress, *, owner: bool) -> dict[int, Shard] | None:
    """Embed the plan's shards that no live worker holds, one at a time, until none is left to take.

    The job's worker (`owner`) then waits for the shards other workers hold (taking over any whose worker died)
    and returns every shard, by index; a helping worker returns None once there is nothing left to take."""
    worker, stale = worker_name(), stale_seconds()
    done: dict[int, Shard] = {}
    while True:
        if not (plan.folder / "plan.json").exists():
            if owner:  # another run embedding the same pool (a select job's, say) merged it and removed the plan
                raise PlanRemoved(str(plan.folder))
            return None
        for k in range(plan.count):
            if k not in done:
                start, stop = plan.bounds(k)
                if (shard := read_shard(plan.path(k), plan.ids[start:stop], plan.nonce)) is not None:
                    done[k] = shard
        if len(done) == plan.count:
            return done if owner else None
        progress(len(done) / plan.count, f"shards {len(done)}/{plan.count} done")
        k = next((k for k in range(plan.count) if k not in done and try_claim(plan.claim_path(k), worker, stale)),
                 None)
        if k is None:
            if not owner:
                return None
            time.sleep(WAIT_SECONDS)
            continue
        done[k] = _embed_shard(plan, k, embed_range, progress, len(done))


def _embed_shard(plan: ShardPlan, k: int, embed_range: EmbedRange, progress: Progress, finished: int) -> Shard:
    start, stop = plan.bounds(k)
    claim = plan.claim_path(k)

    def report(fraction: float, message: str) -> None:
        touch(claim)  # the claim's liveness
        progress((finished + fraction) / plan.count,
                 f"shards {finished}/{plan.count} done; shard {k + 1}: {message}")

    try:
        features, problems = embed_range(start, stop, report)
        ids = plan.ids[start:stop]
        by_id = {int(ids[position - start]): message for position, message in sorted(problems.items())}
        if plan_is_current(plan):  # else merged meanwhile: writing would recreate a removed folder
            write_shard(plan.path(k), features, ids, by_id, plan.nonce)
    finally:  # written or failed, the shard is free again: a failure (or JobLost) leaves it to the next run
        claim.unlink(missing_ok=True)
    return Shard(features, by_id)


def merge(plan: ShardPlan, shards: dict[int, Shard]) -> tuple[np.ndarray, dict[int, str]]:
    """All shards' rows in item-id order (the plan's), and the problems of the files that could not be read."""
    features = np.concatenate([shards[k].features for k in range(plan.count)]) if plan.count else \
        np.zeros((0, 0), np.float32)
    problems = {i: m for k in range(plan.count) for i, m in shards[k].problems.items()}
    return features, problems

"""The embed job in shards (app.jobs.embed_shards), on 600 demo digits in shards of 100:

| case | what is shown |
|---|---|
| two worker processes, the job's and an idle one (WORKBENCH_EMBED_HELP=1) | the idle one embeds the 5 shards the job's worker does not hold (500 images read), the job's worker its 1 and the merge; the features equal a one-shot embedding |
| a worker process killed (SIGKILL) mid-shard, after its first shard file was written | a second worker claims the job once stale and reads only the images of the unfinished shards (500 of 600); the features equal a one-shot embedding |
| shards finished out of order (a helping worker takes 1, 3, 5 while others hold 0, 2, 4) | the merge is in item-id order, equal to a one-shot embedding; the Jobs page's progress says shards done / total |
| a damaged shard file (truncated, flipped byte, another shard's ids) | it is removed and that shard alone is embedded again |
| shard files | the features folder holds only registered files; the shard folder is gone after the merge |
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select, update

import learners.embedding
from app import launcher
from app.jobs import embed_shards
from app.jobs.context import JobContext
from app.jobs.features import ensure_features, help_embed
from app.settings import Settings
from app.workbench import ProjectConfig, Workbench
from app.worker import Worker
from learners.backbones import BackboneSpec, load_backbone
from learners.embedding import embed_images
from storage.files import latest_artifact, load_matrix, project_dir
from storage.items import item_rows
from storage.models import Artifact, Job, Project, utcnow
from storage.source_heads import backbone_key
from tests.test_faults import digits  # noqa: F401  (the fixture: 600 of the demo digits, with subset.csv)

ROOT = Path(__file__).resolve().parent.parent
STALE_SECONDS = 3
SHARD = 100
N_ITEMS = 600

# A real worker process whose reader stalls (as on a hung network share) at its 150th image: mid-shard 2, with
# shard 1's file written. The test then kills it with SIGKILL.
_STALLING_WORKER = """
import signal, sys
from pathlib import Path
import learners.embedding as embedding
from app.worker import Worker
real, reads = embedding.read_image, 0
def read_image(path):
    global reads
    reads += 1
    if reads == 150:
        Path(sys.argv[1]).write_text("stalled")
        signal.pause()
    return real(path)
embedding.read_image = read_image
Worker(device="cpu").run_forever()
"""


# A real worker process that counts the images it reads (written to argv[1] when it stops); with argv[2], its first
# read waits until the file argv[3] exists, having said so in argv[2].
_COUNTING_WORKER = """
import atexit, sys, time
from pathlib import Path
import learners.embedding as embedding
from app.worker import Worker
real, reads = embedding.read_image, []
def read_image(path):
    if len(sys.argv) > 2 and not reads:
        Path(sys.argv[2]).write_text("waiting")
        while not Path(sys.argv[3]).exists():
            time.sleep(0.05)
    reads.append(path)
    return real(path)
embedding.read_image = read_image
atexit.register(lambda: Path(sys.argv[1]).write_text(str(len(reads))))
Worker(device="cpu").run_forever()
"""


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WORKBENCH_DB_URL", f"sqlite:///{tmp_path / 'home' / 'wb.sqlite'}")
    monkeypatch.setenv("WORKBENCH_STALE_SECONDS", str(STALE_SECONDS))
    monkeypatch.setenv("WORKBENCH_EMBED_SHARD_SIZE", str(SHARD))
    return Settings.from_env()


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every image this process decodes for embedding (the real reader, counted)."""
    seen: list[str] = []
    real = learners.embedding.read_image

    def counted(path):
        seen.append(str(path))
        return real(path)

    monkeypatch.setattr(learners.embedding, "read_image", counted)
    return seen


def _project(settings: Settings, digits: Path) -> tuple[Workbench, int]:
    wb = Workbench(settings)
    return wb, wb.create_project(ProjectConfig(name="shards", round_size=10, eval_size=10), digits / "subset.csv")


def _one_shot(wb: Workbench, pid: int) -> np.ndarray:
    """The pool embedded in one go, in item-id order, straight through embed_images."""
    with wb.db.read() as s:
        project = s.get(Project, pid)
        paths = [Path(project.data_root) / row.key for row in item_rows(s, pid)]
        spec = BackboneSpec.from_dict(project.backbone)
    return embed_images(paths, load_backbone(spec))


def _plan(wb: Workbench, settings: Settings, pid: int) -> embed_shards.ShardPlan:
    with wb.db.read() as s:
        project = s.get(Project, pid)
        ids = np.array([row.id for row in item_rows(s, pid)], dtype=np.int64)
    return embed_shards.open_plan(settings.home, pid, backbone_key(project.backbone), ids, create=True)


def _ctx(wb: Workbench, settings: Settings, seen: list | None = None) -> JobContext:
    return JobContext(db=wb.db, home=settings.home, device="cpu",
                      progress=(lambda f, m: seen.append((f, m))) if seen is not None else (lambda f, m: None))


def _features(wb: Workbench, pid: int) -> list[Artifact]:
    with wb.db.read() as s:
        return list(s.scalars(select(Artifact).where(Artifact.project_id == pid, Artifact.kind == "features")))


def _embed_job(wb: Workbench, pid: int) -> Job:
    with wb.db.read() as s:
        return s.scalars(select(Job).where(Job.project_id == pid, Job.kind == "embed")).one()


def test_a_killed_worker_costs_only_its_unfinished_shards(settings: Settings, digits: Path, tmp_path: Path,
                                                          reads: list[str]) -> None:
    wb, pid = _project(settings, digits)
    plan = _plan(wb, settings, pid)
    assert plan.count == 6
    marker = tmp_path / "stalled"
    env = {**os.environ, "WORKBENCH_HOME": str(settings.home), "WORKBENCH_DB_URL": settings.db_url,
           "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen([sys.executable, "-c", _STALLING_WORKER, str(marker)], cwd=ROOT, env=env,
                             start_new_session=True, stdout=open(tmp_path / "worker.log", "w"),
                             stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while not marker.exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert marker.exists(), (tmp_path / "worker.log").read_text()
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=20)
    assert sorted(p.name for p in plan.folder.glob("shard-*")) == ["shard-00000.bin", "shard-00001.claim"]
    assert _features(wb, pid) == [] and _embed_job(wb, pid).state == "running"

    second = Worker(settings, device="cpu", quiet=True)
    deadline = time.time() + 60
    while (job := _embed_job(wb, pid)).state == "running":  # claimed again once its heartbeat is STALE_SECONDS old
        assert time.time() < deadline
        if not second.run_once():
            time.sleep(0.2)
    assert job.state == "done" and job.attempts == 2, job.error
    assert len(reads) == N_ITEMS - SHARD  # shard 1 was kept; the killed worker's shard 2 and the rest were embedded
    (artifact,) = _features(wb, pid)
    features, ids = load_matrix(artifact)
    np.testing.assert_array_equal(features, _one_shot(wb, pid))
    assert not plan.folder.exists()
    folder = project_dir(settings.home, pid) / "features"
    assert {p.name for p in folder.iterdir()} == {Path(artifact.path).name, Path(artifact.meta["ids_path"]).name}


def _wait_for(predicate, what: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_two_worker_processes_share_the_shards_of_one_embed_job(settings: Settings, digits: Path,
                                                                 tmp_path: Path) -> None:
    wb, pid = _project(settings, digits)
    env = {**os.environ, "WORKBENCH_HOME": str(settings.home), "WORKBENCH_DB_URL": settings.db_url,
           "PYTHONPATH": str(ROOT), "WORKBENCH_EMBED_HELP": "1", "WORKBENCH_STALE_SECONDS": "60"}
    waiting, release = tmp_path / "waiting", tmp_path / "release"

    def start(name: str, *hold: Path) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", _COUNTING_WORKER, str(tmp_path / f"{name}.reads"),
                                 *map(str, hold)], cwd=ROOT, env=env, stdout=open(tmp_path / f"{name}.log", "w"),
                                stderr=subprocess.STDOUT)

    owner = start("owner", waiting, release)  # takes the job, and holds its first shard until released
    helper = None
    try:
        _wait_for(waiting.exists, "the owner to start its first shard")
        plan = _plan(wb, settings, pid)
        helper = start("helper")  # idle: the other jobs wait for the embedding, so it takes free shards
        _wait_for(lambda: len(list(plan.folder.glob("shard-*.bin"))) == plan.count - 1, "the helper's shards")
        release.touch()
        _wait_for(lambda: _embed_job(wb, pid).state != "running", "the job to finish")
    finally:
        for proc in (owner, helper):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=60)
    job = _embed_job(wb, pid)
    assert job.state == "done" and job.attempts == 1, job.error
    reads = {name: int((tmp_path / f"{name}.reads").read_text()) for name in ("owner", "helper")}
    assert reads == {"owner": SHARD, "helper": N_ITEMS - SHARD}
    assert "helped job" in (tmp_path / "helper.log").read_text()
    (artifact,) = _features(wb, pid)
    np.testing.assert_array_equal(load_matrix(artifact)[0], _one_shot(wb, pid))


def test_shards_finished_out_of_order_merge_in_item_id_order(settings: Settings, digits: Path, reads: list[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_STALE_SECONDS", "60")  # nothing here goes stale while the test runs
    settings = replace(settings, stale_seconds=60)
    wb, pid = _project(settings, digits)
    plan = _plan(wb, settings, pid)
    for k in (0, 2, 4):  # held by a live worker elsewhere
        assert embed_shards.try_claim(plan.claim_path(k), "elsewhere", 60)
    with wb.db.write() as s:  # the job runs on another worker
        s.execute(update(Job).where(Job.id == _embed_job(wb, pid).id).values(
            state="running", worker="owner", heartbeat=utcnow()))
    helper = Worker(settings, device="cpu", quiet=True, helps=True)
    assert helper.run_once()  # no job to claim: it takes the free shards of the running embed job
    assert sorted(p.name for p in plan.folder.glob("shard-*.bin")) == [
        "shard-00001.bin", "shard-00003.bin", "shard-00005.bin"]
    assert len(reads) == 3 * SHARD
    assert not helper.run_once()  # nothing left to take

    for k in (0, 2, 4):  # the other worker's claims released; the job's own worker embeds them and merges
        plan.claim_path(k).unlink()
    seen: list[tuple[float, str]] = []
    features, ids = ensure_features(_ctx(wb, settings, seen), pid)
    assert len(reads) == N_ITEMS
    np.testing.assert_array_equal(ids, plan.ids)
    np.testing.assert_array_equal(features, _one_shot(wb, pid))
    messages = [m for _, m in seen]
    assert "shards 3/6 done" in messages and any(m.startswith("shards 5/6 done; shard 5: embedded") for m in messages)
    fractions = [f for f, _ in seen if f > 0]
    assert fractions == sorted(fractions) and seen[-1] == (1.0, "features saved")
    assert not plan.folder.exists()


def test_a_damaged_shard_file_is_embedded_again(settings: Settings, digits: Path, reads: list[str]) -> None:
    wb, pid = _project(settings, digits)
    plan = _plan(wb, settings, pid)
    ctx = _ctx(wb, settings)
    assert help_embed(_embed_job(wb, pid), ctx)  # every shard written, none merged
    assert len(reads) == N_ITEMS and len(list(plan.folder.glob("shard-*.bin"))) == 6
    good = plan.path(1).read_bytes()
    plan.path(1).write_bytes(good[: len(good) // 2])  # truncated
    data = bytearray(plan.path(3).read_bytes())
    data[-100] ^= 0xFF  # one flipped byte
    plan.path(3).write_bytes(bytes(data))
    shutil.copy(plan.path(4), plan.path(5))  # whole, but another range's items
    start, stop = plan.bounds(0)
    assert embed_shards.read_shard(plan.path(0), plan.ids[start:stop], plan.nonce) is not None
    shard = plan.path(2).read_bytes()
    assert embed_shards.read_shard(plan.path(2), plan.ids[plan.bounds(2)[0]:plan.bounds(2)[1]], "another plan") is None
    plan.path(2).write_bytes(shard)  # a shard of another plan (a deleted project's, its ids reused) is not taken
    for k in (1, 3, 5):
        start, stop = plan.bounds(k)
        assert embed_shards.read_shard(plan.path(k), plan.ids[start:stop], plan.nonce) is None
        assert not plan.path(k).exists()
    reads.clear()
    features, _ = ensure_features(ctx, pid)
    assert len(reads) == 3 * SHARD
    np.testing.assert_array_equal(features, _one_shot(wb, pid))
    with wb.db.read() as s:
        assert latest_artifact(s, pid, "features").meta["missing_count"] == 0


def test_a_file_gone_before_its_shard_is_a_nan_row_named_in_the_artifact(settings: Settings, digits: Path,
                                                                        tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(digits, root)
    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(name="gone", round_size=10, eval_size=10), root / "subset.csv")
    with wb.db.read() as s:
        rows = item_rows(s, pid)
    (root / rows[250].key).unlink()
    features, ids = ensure_features(_ctx(wb, settings), pid)
    assert len(ids) == N_ITEMS - 1 and rows[250].id not in set(ids.tolist())
    with wb.db.read() as s:
        meta = latest_artifact(s, pid, "features").meta
    assert meta["missing_count"] == 1 and meta["missing"][0]["id"] == rows[250].id


def test_the_launcher_starts_one_worker_per_visible_gpu() -> None:
    env = {"PATH": "/bin", "WORKBENCH_TOKEN": "secret", "CUDA_VISIBLE_DEVICES": "2,5"}
    gpus = launcher.visible_cuda_devices(env)
    assert gpus == ["2", "5"] and launcher.visible_cuda_devices({"CUDA_VISIBLE_DEVICES": ""}) == []
    one_each = launcher.worker_environments(env, 1, gpus)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in one_each] == ["2", "5"]
    assert all("WORKBENCH_TOKEN" not in e and int(e["WORKBENCH_LOADER_WORKERS"]) >= 1 for e in one_each)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in launcher.worker_environments(env, 3, gpus)] == ["2", "5", "2"]
    on_cpu = launcher.worker_environments({"PATH": "/bin"}, 2, [])
    assert on_cpu == [{"PATH": "/bin"}] * 2  # as asked, nothing set

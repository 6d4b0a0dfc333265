"""The evaluation set stays honest: queued in a seeded random order (never grouped by class folder), carried over
by an early close until it is labeled, and kept at its size when one of its items is skipped."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import select

from app.settings import Settings
from app.workbench import ProjectConfig, Workbench
from app.worker import Worker
from storage.models import Item

CLASSES = ("ant", "bee", "cat")
PER_CLASS = 12


def _folder_project(tmp_path: Path) -> Path:
    """One sub-folder per class, files named so that sorting by path groups them by class."""
    rng = np.random.default_rng(0)
    for k, name in enumerate(CLASSES):
        folder = tmp_path / "images" / name
        folder.mkdir(parents=True)
        for i in range(PER_CLASS):
            pixels = (rng.random((8, 8)) * 60 + 60 * k).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return tmp_path / "images"


def _drain(worker: Worker) -> None:
    while worker.run_once():
        pass


def _gold(wb: Workbench, pid: int) -> dict[int, int]:
    with wb.db.read() as s:
        return {i.id: i.gold[0] for i in s.scalars(select(Item).where(Item.project_id == pid))}


def _eval_ids(wb: Workbench, pid: int) -> set[int]:
    with wb.db.read() as s:
        return set(s.scalars(select(Item.id).where(Item.project_id == pid, Item.split == "eval")))


def _setup(settings: Settings, tmp_path: Path, eval_size: int) -> tuple[Workbench, int, Worker]:
    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(name="folders", round_size=4, eval_size=eval_size, strategy="random"),
                            _folder_project(tmp_path))
    worker = Worker(settings, device="cpu", quiet=True)
    _drain(worker)
    return wb, pid, worker


def test_the_eval_set_is_queued_in_a_random_order_not_by_class_folder(settings: Settings, tmp_path: Path) -> None:
    wb, pid, _ = _setup(settings, tmp_path, eval_size=18)
    gold = _gold(wb, pid)
    shown = []
    while (assignment := wb.next_assignment(pid, "a")) is not None and assignment.split == "eval":
        shown.append(gold[assignment.item_id])
        wb.submit(pid, assignment.entry_id, "a", [gold[assignment.item_id]])
    assert len(shown) == 18
    assert shown != sorted(shown)  # sorted by path, the 18 would come as 0, 0, ..., 1, ..., 2
    changes = sum(a != b for a, b in zip(shown, shown[1:]))
    assert changes >= 6  # grouped by class there would be at most 2 changes of class


def test_an_early_close_carries_the_eval_set_over_until_it_is_labeled(settings: Settings, tmp_path: Path) -> None:
    wb, pid, worker = _setup(settings, tmp_path, eval_size=9)
    gold = _gold(wb, pid)
    first = wb.next_assignment(pid, "a")
    wb.submit(pid, first.entry_id, "a", [gold[first.item_id]])
    wb.close_round(pid)  # right after import, with 8 of the 9 eval items unlabeled
    _drain(worker)  # trains round 0 on nothing, opens round 1
    assert wb.rounds(pid)[0].metrics["labels"] == 0
    eval_ids = _eval_ids(wb, pid)
    assert len(eval_ids) == 9
    seen_eval = set()
    while (assignment := wb.next_assignment(pid, "a")) is not None and assignment.split == "eval":
        assert assignment.round_index == 1  # the carried-over items come first in the next round
        seen_eval.add(assignment.item_id)
        wb.submit(pid, assignment.entry_id, "a", [gold[assignment.item_id]])
    assert seen_eval == eval_ids - {first.item_id}
    assert eval_ids <= set(wb.labels(pid))


def test_a_skipped_eval_item_is_replaced_by_a_random_pool_item(settings: Settings, tmp_path: Path) -> None:
    wb, pid, _ = _setup(settings, tmp_path, eval_size=6)
    before = _eval_ids(wb, pid)
    assignment = wb.next_assignment(pid, "a")
    assert assignment.split == "eval"
    wb.skip(pid, assignment.entry_id, "a")
    after = _eval_ids(wb, pid)
    assert len(after) == 6 and assignment.item_id not in after
    (replacement,) = after - before
    gold = _gold(wb, pid)
    labeled_eval = set()
    while (assignment := wb.next_assignment(pid, "a")) is not None:  # the replacement is queued at the round's end
        if assignment.split == "eval":
            labeled_eval.add(assignment.item_id)
        wb.submit(pid, assignment.entry_id, "a", [gold[assignment.item_id]])
    assert replacement in labeled_eval and labeled_eval == after

"""Large projects stay quick (issue 15): the counts the pages read come from aggregate queries, and must equal what
the per-item rule (storage.labels) says; a large import checks headers and a sample, reports its progress to 100%
and stores exactly the manifest's rows. Small sizes: nothing here is timed (benchmarks/bench_large_project.py is)."""
from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from app import read_models
from app.workbench import ProjectConfig, Workbench
from storage import jobs, queue
from storage.importers import ImportProblem, read_manifest, scan_folder
from storage.labels import ADJUDICATE, current_labels, items_per_split, labeled_per_split
from storage.models import Annotation, Item, Job, QueueEntry, Round
from storage.rounds import latest_round
from tests.test_importers import bomb_png, text_png, truncated_png, write_png


def write_pets(folder: Path, per_class: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for name in ("cat", "dog", "owl"):
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, size=(8, 8, 3), dtype=np.uint8)).save(folder / name / f"{i}.png")
    return folder


def answer_rows(wb: Workbench, project_id: int, task: str) -> None:
    """A done round and a labeling round whose answers cover every case of the labels rule: a label, a skip only,
    a retracted label, two annotators agreeing, disputed, disputed then adjudicated, a queue label relabeled outside
    the queue, a retracted retraction's item, multi-label values ([] is "none of these") and evaluation items."""
    with wb.db.write() as s:
        s.query(Job).filter(Job.project_id == project_id).update({"state": "done"})
        round0 = latest_round(s, project_id)
        round0.state = "done"
        round1 = Round(project_id=project_id, index=1, strategy="margin", strategy_params={}, state="labeling")
        s.add(round1)
        s.flush()
        s.add(Job(kind="train", project_id=project_id, round_id=round1.id, state="queued"))
        items = list(s.execute(select(Item.id, Item.split).where(Item.project_id == project_id).order_by(Item.id)))
        evals = [i for i, split in items if split == "eval"]
        pool = [i for i, split in items if split == "pool"]
        value = (lambda k: [k % 3, (k + 1) % 3] if k % 2 else []) if task == "multi_label" else (lambda k: [k % 3])

        def entry(round_, item_id, position, state="labeled", copy=0):
            row = QueueEntry(round_id=round_.id, item_id=item_id, position=position, arm="margin", state=state,
                             claimed_by="ann", copy_index=copy)
            s.add(row)
            s.flush()
            return row.id

        def note(item_id, who, kind="label", v=None, entry_id=None, replaces=None, round_=round0):
            row = Annotation(project_id=project_id, item_id=item_id, annotator=who, kind=kind, value=v,
                             queue_entry_id=entry_id, replaces_id=replaces, round_id=round_.id)
            s.add(row)
            s.flush()
            return row.id

        for k, item_id in enumerate(evals[:3]):  # labeled evaluation items
            note(item_id, "ann", v=value(k), entry_id=entry(round0, item_id, k))
        a, b, c, d, e, f, g, h = pool[:8]
        note(a, "ann", v=value(1), entry_id=entry(round0, a, 10))  # labeled
        note(b, "ann", kind="skip", entry_id=entry(round0, b, 11, "skipped"))  # skipped only
        wrong = note(c, "ann", v=value(2), entry_id=entry(round0, c, 12))  # retracted: no label
        note(c, "ann", kind="retract", replaces=wrong)
        for who, copy in (("ann", 0), ("bob", 1)):  # two annotators agree
            note(d, who, v=value(3), entry_id=entry(round0, d, 13, copy=copy))
        for who, copy, k in (("ann", 0, 0), ("bob", 1, 1)):  # disputed
            note(e, who, v=value(k) if task == "single_label" else [k], entry_id=entry(round0, e, 14, copy=copy))
        for who, copy, k in (("ann", 0, 0), ("bob", 1, 2)):  # disputed, then adjudicated
            note(f, who, v=[k], entry_id=entry(round0, f, 15, copy=copy))
        note(f, "lead", kind=ADJUDICATE, v=[1])
        note(g, "ann", v=value(4), entry_id=entry(round0, g, 16))  # relabeled outside the queue by a reviewer
        note(g, "rev", v=value(5), replaces=None)
        note(h, "ann", v=value(6), entry_id=entry(round1, h, 0), round_=round1)  # in the labeling round
        for position, item_id in enumerate(pool[8:12], start=1):
            entry(round1, item_id, position, state="pending")


def rule_status(wb: Workbench, project_id: int) -> read_models.ProjectStatus:
    """The status as the per-item rule and per-round queries say it (the way status() was built before)."""
    with wb.db.read() as s:
        project = wb.project(project_id)
        labeled = labeled_per_split(s, project_id)
        round_ = latest_round(s, project_id)
        index_of = {r.id: r.index for r in s.scalars(select(Round).where(Round.project_id == project_id))}
        return read_models.ProjectStatus(
            project=project.name, classes=list(project.classes), items=items_per_split(s, project_id),
            labeled_pool=labeled.get("pool", 0), labeled_eval=labeled.get("eval", 0),
            round=None if round_ is None else read_models.RoundRow(
                index=round_.index, strategy=round_.strategy, state=round_.state,
                labels_at_start=round_.labels_at_start, queue=read_models.QueueCounts(**queue.round_counts(s, round_.id)),
                note=round_.note, metrics=round_.metrics or {}, picked_ahead=round_.picked_ahead or 0,
                picked_ahead_by=round_.picked_ahead_by, awaiting_selection=bool(round_.awaiting_selection)),
            jobs=[read_models.JobView(id=j.id, kind=j.kind, state=j.state, progress=j.progress or 0.0,
                                      message=j.message or "", error=j.error, attempts=j.attempts, worker=j.worker,
                                      round_index=index_of.get(j.round_id), created_at=j.created_at)
                  for j in jobs.active_jobs(s, project_id)],
        )


def test_the_summary_of_every_project_equals_each_projects_status_by_the_rule(settings, tmp_path: Path) -> None:
    wb = Workbench(settings)
    pets = write_pets(tmp_path / "pets")
    single = wb.create_project(ProjectConfig(name="single", eval_size=4, pick_ahead=0), pets)
    multi = wb.create_project(ProjectConfig(name="tags", task="multi_label", eval_size=5, pick_ahead=0,
                                            classes=["cat", "dog", "owl"]), pets)
    fresh = wb.create_project(ProjectConfig(name="fresh", eval_size=2), pets)  # round 0 selecting, embed queued
    answer_rows(wb, single, "single_label")
    answer_rows(wb, multi, "multi_label")

    summary = wb.statuses()
    assert set(summary) == {single, multi, fresh}
    for project_id in (single, multi, fresh):
        assert summary[project_id] == rule_status(wb, project_id) == wb.status(project_id)
        assert wb.active_jobs(project_id) == summary[project_id].jobs
    assert wb.statuses([multi]) == {multi: summary[multi]}
    got = summary[single]
    assert got.items == {"pool": 14, "eval": 4} and (got.labeled_eval, got.labeled_pool) == (3, 5)
    assert got.round.index == 1 and got.round.queue == read_models.QueueCounts(pending=4, labeled=1)
    assert [j.kind for j in got.jobs] == ["train"] and got.jobs[0].round_index == 1
    assert [j.kind for j in summary[fresh].jobs] == ["embed", "select"] and summary[fresh].labeled_pool == 0


def test_labels_per_class_equals_the_current_labels(settings, tmp_path: Path) -> None:
    wb = Workbench(settings)
    pets = write_pets(tmp_path / "pets")
    for name, task in (("single", "single_label"), ("tags", "multi_label")):
        pid = wb.create_project(ProjectConfig(name=name, task=task, eval_size=4, pick_ahead=0,
                                              classes=["cat", "dog", "owl"]), pets)
        answer_rows(wb, pid, task)
        expected: Counter = Counter()
        with wb.db.read() as s:
            for split in ("pool", "eval"):
                for label in current_labels(s, pid, split=split).values():
                    expected.update((k, split) for k in label.value)
        assert wb.labels_per_class(pid) == dict(expected) and expected


def test_round_table_counts_each_rounds_queue(settings, tmp_path: Path) -> None:
    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(name="single", eval_size=4, pick_ahead=0), write_pets(tmp_path / "pets"))
    answer_rows(wb, pid, "single_label")
    with wb.db.read() as s:
        expected = [queue.round_counts(s, r.id) for r in s.scalars(select(Round).where(Round.project_id == pid)
                                                                   .order_by(Round.index))]
    assert [vars(row.queue) for row in wb.round_table(pid)] == expected
    assert expected[0]["labeled"] == 12 and expected[0]["skipped"] == 1


def test_the_import_progress_reaches_100_percent_and_stores_the_manifest_rows(settings, tmp_path: Path) -> None:
    wb = Workbench(settings)
    root = tmp_path / "data"
    lines = ["path,label,split"]
    for i in range(30):
        write_png(root / f"{i % 4}" / f"{i}.png", seed=i)
        lines.append(f"{i % 4}/{i}.png,{'cat' if i % 3 else 'dog'},{'eval' if i < 5 else ''}")
    manifest = root / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    seen: list[float] = []

    pid = wb.create_project(ProjectConfig(name="imported"), manifest, progress=lambda f, message: seen.append(f))

    assert seen[-1] == 1.0 and seen == sorted(seen) and len(seen) > 3
    with wb.db.read() as s:
        stored = {key: (gold, split) for key, gold, split in s.execute(
            select(Item.key, Item.gold, Item.split).where(Item.project_id == pid))}
    classes = wb.project(pid).classes
    assert classes == ["cat", "dog"]
    expected = {}
    for line in lines[1:]:
        key, label, split = line.split(",")
        expected[key] = [classes.index(label)], split or None
    assert set(stored) == set(expected)
    assert all(stored[k][0] == expected[k][0] for k in expected)
    assert {k for k, (_, split) in stored.items() if split == "eval"} >= {k for k, (_, sp) in expected.items() if sp}


def write_bad_and_good(root: Path) -> None:
    for i in range(8):
        write_png(root / "ok" / f"{i}.png", seed=i)
    truncated_png(root / "ok" / "z_cut.png")  # its header is sound: only a full decode finds it cut


def test_a_large_import_checks_every_header_and_decodes_a_sample(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_bad_and_good(root)
    seen: list[float] = []
    # Over the limit with a sample of 1: only the first file is decoded; the cut file gets in, and the import says how
    # the files were checked.
    result = scan_folder(root, full_check_limit=3, full_check_sample=1, progress=lambda f, m: seen.append(f))
    assert len(result.items) == 9 and seen[-1] == 1.0
    assert any("decoded in full" in w and "embeds it" in w for w in result.warnings)
    cut = next(item for item in result.items if item.key == "ok/z_cut.png")
    assert cut.content_hash == hashlib.sha256((root / "ok" / "z_cut.png").read_bytes()).hexdigest()
    # At or under the limit every file is decoded, as always.
    refused = _problem(lambda: scan_folder(root, full_check_limit=9))
    assert "ok/z_cut.png: corrupt or truncated image" in refused


def test_a_large_import_still_refuses_what_a_header_shows(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_bad_and_good(root)
    text_png(root / "ok" / "note.png")
    bomb_png(root / "ok" / "bomb.png")
    manifest = root / "m.csv"
    manifest.write_text("path\n" + "\n".join(f"ok/{p.name}" for p in sorted((root / "ok").iterdir())) + "\n"
                        "ok/missing.png\n")
    message = _problem(lambda: read_manifest(manifest, full_check_limit=3, full_check_sample=1))
    assert "('ok/note.png'): not an image" in message
    assert "('ok/bomb.png'): image too large, refused as a possible decompression bomb" in message
    assert "('ok/missing.png'): file not found" in message
    assert "z_cut" not in message and message.startswith("3 problems in")


def _problem(call) -> str:  # noqa: ANN001
    with pytest.raises(ImportProblem) as info:
        call()
    return str(info.value)


def test_current_labels_kept_between_calls_equal_the_rule_on_every_row(settings) -> None:
    """current_labels keeps the labels between calls and adds a round's first answers at the end of its order
    instead of reading every row again; whatever the new rows are (first answers, an undo, a second annotator on
    an item, a label given outside the queue) it must equal the rule applied to every row read afresh."""
    from storage import labels

    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(name="pets", round_size=6, eval_size=3, pick_ahead=0),
                            write_pets(settings.home / "pets"))
    with wb.db.write() as s:
        round_ = latest_round(s, pid)
        items = [i for i, in s.execute(select(Item.id).where(Item.project_id == pid).order_by(Item.id))]
        for position, item_id in enumerate(items):
            s.add(QueueEntry(round_id=round_.id, item_id=item_id, position=position, arm="margin"))
        round_.state = "labeling"

    def check() -> None:
        with wb.db.read() as s:
            kept = current_labels(s, pid)
            rows = s.execute(select(*labels._ROW_COLUMNS).where(Annotation.project_id == pid)
                             .order_by(Annotation.id)).all()
        fresh = labels._labels_of(rows)
        assert list(kept) == list(fresh) and kept == fresh

    check()
    for k in range(4):  # first answers, one at a time and kept
        task = wb.next_assignment(pid, "ann")
        wb.submit(pid, task.entry_id, "ann", [k % 3])
        check()
    wb.undo(pid, "ann")  # a retraction: the item's label goes
    check()
    task = wb.next_assignment(pid, "ann")
    wb.submit(pid, task.entry_id, "ann", [2])  # the undone item labeled again
    check()
    with wb.db.write() as s:  # a second annotator on an item that has a label, disagreeing: disputed
        first = s.scalars(select(Annotation).where(Annotation.project_id == pid, Annotation.kind == "label")
                          .order_by(Annotation.id)).first()
        s.add(Annotation(project_id=pid, item_id=first.item_id, annotator="other", kind="label",
                         value=[(first.value[0] + 1) % 3], queue_entry_id=first.queue_entry_id, round_id=first.round_id))
    check()
    with wb.db.write() as s:  # a label given outside the queue decides the item
        s.add(Annotation(project_id=pid, item_id=first.item_id, annotator="lead", kind="label", value=[0]))
    check()
    for _ in range(2):
        task = wb.next_assignment(pid, "ann")
        wb.submit(pid, task.entry_id, "ann", [1])
        check()

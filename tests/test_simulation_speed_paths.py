"""The paths made cheaper for the simulation (issue 15) keep their rule: current labels read from the rows this
process keeps between calls give what the annotation log gives, also after new rows, a rolled-back insert and a
deleted project whose ids come back; a claim taken without re-reading its entry is the entry as stored."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import delete

from app.settings import Settings
from app.workbench import ProjectConfig, Workbench
from storage.labels import current_labels, item_labels
from storage.models import Annotation, Item, QueueEntry, Round


def _rule(s, project_id: int, split: str | None = None) -> list:
    """current_labels' answer as item_labels gives it (every row read again, ORM objects), in its order."""
    return [(item_id, state.label) for item_id, state in item_labels(s, project_id, split).items()
            if state.label is not None]


def _fast(s, project_id: int, split: str | None = None) -> list:
    return list(current_labels(s, project_id, split).items())


@pytest.fixture()
def project(tmp_path: Path) -> tuple[Workbench, int, list[int], list[int]]:
    """A project of 10 items, its items' ids and one queue entry per item in round 0."""
    images = tmp_path / "flat"
    images.mkdir()
    for i in range(10):
        Image.new("L", (8, 8), i * 20).save(images / f"{i}.png")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\n" + "\n".join(f"flat/{i}.png,{'ab'[i % 2]}" for i in range(10)))
    wb = Workbench(Settings(home=tmp_path / "home", db_url=f"sqlite:///{tmp_path / 'wb.sqlite'}"))
    pid = wb.create_project(ProjectConfig(name="labels", eval_size=3, round_size=2), manifest)
    with wb.db.write() as s:
        round_id = s.query(Round.id).filter(Round.project_id == pid).scalar()
        items = [i for (i,) in s.query(Item.id).filter(Item.project_id == pid).order_by(Item.id)]
        entries = [QueueEntry(round_id=round_id, item_id=item_id, position=k, arm="test")
                   for k, item_id in enumerate(items)]
        s.add_all(entries)
        s.flush()
        return wb, pid, items, [e.id for e in entries]


def _add(wb: Workbench, pid: int, rows: list[dict]) -> list[int]:
    with wb.db.write() as s:
        added = [Annotation(project_id=pid, **row) for row in rows]
        s.add_all(added)
        s.flush()
        return [a.id for a in added]


def test_current_labels_follow_the_annotation_log_through_every_change(project) -> None:
    wb, pid, items, entries = project
    a, b, c, d, e, f, g = items[:7]
    (first_of_g,) = _add(wb, pid, [dict(item_id=g, annotator="x", kind="label", value=[0], queue_entry_id=entries[6])])
    given = _add(wb, pid, [
        dict(item_id=a, annotator="x", kind="label", value=[1], queue_entry_id=entries[0]),
        dict(item_id=a, annotator="y", kind="label", value=[1], queue_entry_id=entries[0]),  # they agree
        dict(item_id=b, annotator="x", kind="label", value=[0], queue_entry_id=entries[1]),
        dict(item_id=b, annotator="y", kind="label", value=[1], queue_entry_id=entries[1]),  # disputed
        dict(item_id=c, annotator="x", kind="label", value=[0], queue_entry_id=entries[2]),
        dict(item_id=c, annotator="y", kind="label", value=[1], queue_entry_id=entries[2]),
        dict(item_id=c, annotator="lead", kind="adjudicate", value=[1]),  # adjudicated
        dict(item_id=d, annotator="x", kind="label", value=[0], queue_entry_id=entries[3]),
        dict(item_id=e, annotator="x", kind="skip", queue_entry_id=entries[4]),  # skips only: no label
        dict(item_id=f, annotator="x", kind="label", value=[0], queue_entry_id=entries[5]),
        dict(item_id=g, annotator="x", kind="label", value=[1], queue_entry_id=entries[6]),  # their latest counts
    ])
    _add(wb, pid, [dict(item_id=d, annotator="x", kind="retract", replaces_id=given[7]),
                   dict(item_id=f, annotator="lead", kind="label", value=[1], replaces_id=given[9])])  # a relabel
    with wb.db.read() as s:
        expected = _rule(s, pid)
        assert [item_id for item_id, _ in expected] == [g, a, c, f]  # by each item's first live row
        assert _fast(s, pid) == expected
        for split in ("pool", "eval"):
            assert _fast(s, pid, split) == _rule(s, pid, split)

    # new rows after the kept ones: an undo of an old row, a label for the retracted item
    _add(wb, pid, [dict(item_id=g, annotator="x", kind="retract", replaces_id=first_of_g),
                   dict(item_id=d, annotator="x", kind="label", value=[1], queue_entry_id=entries[3])])
    with wb.db.read() as s:
        assert _fast(s, pid) == _rule(s, pid) and d in dict(_fast(s, pid))

    # a row read inside a transaction that then rolls back is gone for the next reader, also when its id comes back
    with pytest.raises(RuntimeError), wb.db.write() as s:
        s.add(Annotation(project_id=pid, item_id=e, annotator="x", kind="label", value=[0], queue_entry_id=entries[4]))
        s.flush()
        assert e in current_labels(s, pid)
        raise RuntimeError("roll back")
    with wb.db.read() as s:
        assert e not in current_labels(s, pid) and _fast(s, pid) == _rule(s, pid)
    _add(wb, pid, [dict(item_id=e, annotator="x", kind="label", value=[1], queue_entry_id=entries[4])])
    with wb.db.read() as s:
        assert current_labels(s, pid)[e].value == [1] and _fast(s, pid) == _rule(s, pid)

    # every row deleted (as with a deleted project) and new ones written under the same ids
    with wb.db.write() as s:
        count = s.query(Annotation).filter(Annotation.project_id == pid).count()
        s.execute(delete(Annotation).where(Annotation.project_id == pid))
    _add(wb, pid, [dict(item_id=items[k % 7], annotator="z", kind="label", value=[k % 2], queue_entry_id=None)
                   for k in range(count)])
    with wb.db.read() as s:
        assert _fast(s, pid) == _rule(s, pid)
        assert all(label.annotator == "z" for _, label in _fast(s, pid))


def test_a_claim_is_the_entry_as_stored(project) -> None:
    wb, pid, items, entries = project
    with wb.db.write() as s:
        s.query(Round).filter(Round.project_id == pid).update({"state": "labeling"})
    first = wb.next_assignment(pid, "x")
    again = wb.next_assignment(pid, "x")  # the one they hold already
    other = wb.next_assignment(pid, "y")
    assert (first.entry_id, again.entry_id, other.entry_id) == (entries[0], entries[0], entries[1])
    with wb.db.read() as s:
        stored = s.get(QueueEntry, first.entry_id)
        assert (stored.state, stored.claimed_by, stored.item_id) == ("claimed", "x", first.item_id)
        assert s.get(QueueEntry, other.entry_id).claimed_by == "y"
    wb.submit(pid, first.entry_id, "x", [1])
    assert wb.labels(pid)[first.item_id] == [1]
    assert wb.next_assignment(pid, "x").entry_id == entries[2]

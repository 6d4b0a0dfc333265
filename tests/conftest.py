"""Shared fixtures: a real SQLite database file in a temp folder, and a small labeling round in it."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from storage.db import Database, sqlite_url  # noqa: E402
from storage.models import Item, Project, QueueEntry, Round  # noqa: E402


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A workbench home and SQLite file of the test's own, through the environment as a user would set them."""
    from app.settings import Settings

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WORKBENCH_DB_URL", f"sqlite:///{tmp_path / 'home' / 'wb.sqlite'}")
    return Settings.from_env()


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(sqlite_url(tmp_path / "db.sqlite"))
    yield database
    database.dispose()


def make_round(db: Database, n_items: int, name: str = "p") -> tuple[int, int]:
    """A project with `n_items` pool items all queued in one labeling round; returns (project id, round id)."""
    from sqlalchemy import insert

    with db.write() as s:
        project = Project(
            name=name, classes=["a", "b", "c"], data_root="/nonexistent", backbone={"name": "pixels"},
            head={"kind": "linear"}, training={}, strategy="random", strategy_params={},
        )
        s.add(project)
        s.flush()
        s.execute(insert(Item), [{"project_id": project.id, "key": f"{i}.png", "content_hash": "x", "split": "pool"} for i in range(n_items)])
        round_ = Round(project_id=project.id, index=0, strategy="random", strategy_params={}, state="labeling")
        s.add(round_)
        s.flush()
        ids = s.query(Item.id).filter(Item.project_id == project.id).order_by(Item.id).all()
        s.execute(insert(QueueEntry), [{"round_id": round_.id, "item_id": iid, "position": pos, "arm": "random", "state": "pending"} for pos, (iid,) in enumerate(ids)])
        return project.id, round_.id


def surface(at) -> dict:
    """The data the Label page mounted its label surface with (AppTest cannot press keys in the component; what
    the browser sends back is applied with `answer`). tests/test_label_page.py drives the same page in Chromium."""
    import json

    (element,) = [e for e in at.main if getattr(e, "type", None) == "bidi_component"]
    assert element.proto.component_name.endswith("workbench_label_surface")
    return json.loads(element.proto.json)


def answer(wb, data: dict, client: str, seq: int, kind: str, entry_id: int, value=None) -> dict:
    """Apply one answer as the surface's batch would carry it (app.labeling.receive, what its callback calls)."""
    from app import labeling

    batch = {"client_id": client, "held": [i["entry_id"] for i in data["items"]],
             "answers": [{"seq": seq, "entry_id": entry_id, "kind": kind, "value": value, "seconds": 1.0}]}
    result = labeling.receive(wb.db, data["project_id"], data["annotator"], batch)
    assert result["acked_seq"] == seq and result["outcomes"][-1]["status"] == "applied", result
    return result

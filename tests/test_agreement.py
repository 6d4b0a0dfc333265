"""Agreement between annotators (learners.agreement, storage.agreement_data, app.agreement): Cohen's kappa and
Krippendorff's alpha against scikit-learn, the krippendorff library and hand computations, the class confusion
and each annotator's pace on hand-made answers; retracted answers left out of a real SQLite project; the CLI verb
as a subprocess and the Agreement page with AppTest."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import krippendorff
import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score
from sqlalchemy import event, update
from streamlit.testing.v1 import AppTest

from app import people_admin
from app.agreement import agreement as agreement_view
from app.page_table import page
from learners.agreement import Answer, agreement, cohen_kappa, nominal_alpha, pace
from storage.agreement_data import current_answers
from storage.db import Database, sqlite_url
from storage.models import Annotation, Item, Project
from tests.conftest import make_round

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "streamlit_app.py")
T0 = datetime(2024, 1, 1, 10, 0, 0)
NAN = np.nan


def answers_from_matrix(matrix: list[list[float]]) -> list[tuple[int, str, int]]:
    """A reliability matrix (coders x units, NaN where a coder gave nothing) as (item, annotator, value) answers."""
    return [(unit, f"coder{coder}", int(value)) for coder, row in enumerate(matrix)
            for unit, value in enumerate(row) if not np.isnan(value)]


# ----- Cohen's kappa ------------------------------------------------------------------------------------------------
def test_kappa_by_hand_and_against_sklearn() -> None:
    # both 0: 4 items, A0/B1: 1, A1/B0: 2, both 1: 3. p_o = 7/10; A gives 0 five times, B six times:
    # p_e = (5*6 + 5*4) / 100 = 0.5, so kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4
    a = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    b = [0, 0, 0, 0, 1, 0, 0, 1, 1, 1]
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa_score(a, b) == pytest.approx(0.4)
    report = agreement([(i, "A", v) for i, v in enumerate(a)] + [(i, "B", v) for i, v in enumerate(b)], 2, False)
    (pair,) = report.pairs
    assert (pair.first, pair.second, pair.n) == ("A", "B", 10) and pair.kappa == pytest.approx(0.4)

    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(2, 40))
        first = rng.integers(0, 4, n)
        second = np.where(rng.random(n) < 0.6, first, rng.integers(0, 4, n))
        if len(set(first) | set(second)) > 1:
            assert cohen_kappa(first.tolist(), second.tolist()) == pytest.approx(cohen_kappa_score(first, second))


def test_kappa_counts_only_the_items_both_answered_and_is_undefined_without_chance_disagreement() -> None:
    rows = [(1, "A", 0), (2, "A", 1), (3, "A", 1), (1, "B", 0), (2, "B", 1), (4, "B", 0), (9, "C", 2)]
    report = agreement(rows, 3, False)
    assert [(p.first, p.second, p.n) for p in report.pairs] == [("A", "B", 2)]  # C shares no item: no pair
    assert report.pairs[0].kappa == pytest.approx(1.0)
    assert cohen_kappa([1, 1, 1], [1, 1, 1]) is None and cohen_kappa([], []) is None


# ----- Krippendorff's alpha ------------------------------------------------------------------------------------------
# Three coders, six units, values 0..2, NaN: nothing given.
RELIABILITY = [
    [0, 0, 2, 1, NAN, 0],
    [0, 1, NAN, 1, 2, 2],
    [NAN, 1, 2, 1, NAN, NAN],
]


def test_nominal_alpha_by_hand_with_missing_values() -> None:
    # The coincidence matrix: each unit u with m_u >= 2 values adds 1/(m_u - 1) for every ordered pair of its values.
    #   unit 0 (0, 0):    o00 += 2
    #   unit 1 (0, 1, 1): o01 += 1, o10 += 1, o11 += 1   (six ordered pairs, each 1/2)
    #   unit 2 (2, 2):    o22 += 2
    #   unit 3 (1, 1, 1): o11 += 3
    #   unit 4 (2):       one value, not pairable
    #   unit 5 (0, 2):    o02 += 1, o20 += 1
    coincidence = np.array([[2, 1, 1], [1, 4, 0], [1, 0, 2]])
    n_c = coincidence.sum(axis=1)  # 4, 5, 3
    n = n_c.sum()  # 12 pairable values
    off = ~np.eye(3, dtype=bool)
    by_hand = 1 - (n - 1) * coincidence[off].sum() / np.outer(n_c, n_c)[off].sum()  # 1 - 11 * 4 / 94
    assert by_hand == pytest.approx(50 / 94)
    library = krippendorff.alpha(reliability_data=RELIABILITY, level_of_measurement="nominal")
    assert library == pytest.approx(50 / 94)

    report = agreement(answers_from_matrix(RELIABILITY), 3, False)
    assert report.alpha.alpha == pytest.approx(50 / 94)
    assert (report.alpha.n_items, report.alpha.n_values) == (5, 12)
    assert report.overlap_items == 5


def test_alpha_on_krippendorffs_own_example() -> None:
    data = [[NAN, NAN, NAN, NAN, NAN, 3, 4, 1, 2, 1, 1, 3, 3, NAN, 3],
            [1, NAN, 2, 1, 3, 3, 4, 3, NAN, NAN, NAN, NAN, NAN, NAN, NAN],
            [NAN, NAN, 2, 1, 3, 4, 4, NAN, 2, 1, 1, 3, 3, NAN, 4]]
    report = agreement(answers_from_matrix(data), 5, False)
    assert report.alpha.alpha == pytest.approx(0.691358, abs=1e-6)
    library = krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")
    assert report.alpha.alpha == pytest.approx(library)
    assert nominal_alpha([[1, 1], [1, 1, 1], [2]]) is None  # one value among the pairable answers: undefined


def test_multi_label_alpha_per_tag_as_present_or_absent() -> None:
    tags = {1: ({0}, {0, 1}), 2: ({1}, {1}), 3: (set(), {0}), 4: ({0}, {0}), 5: ({0, 1}, {0})}
    rows = [(item, "A", a) for item, (a, _) in tags.items()] + [(item, "B", b) for item, (_, b) in tags.items()]
    report = agreement(rows, 2, True)
    # tag 0 per item (A, B): TT, FF, FT, TT, TT -> o_TT = 6, o_FF = 2, o_TF = o_FT = 1; n_T = 7, n_F = 3, n = 10:
    # alpha = 1 - 9 * 2 / (2 * 7 * 3) = 4/7
    # tag 1: FT, TT, FF, FF, TF -> o_TT = 2, o_FF = 4, o_TF = o_FT = 2; n_T = 4, n_F = 6: 1 - 9 * 4 / 48 = 1/4
    assert [t.tag for t in report.tag_alphas] == [0, 1]
    assert [t.alpha for t in report.tag_alphas] == [pytest.approx(4 / 7), pytest.approx(1 / 4)]
    assert [(t.n_items, t.n_present) for t in report.tag_alphas] == [(5, 7), (5, 4)]
    for tag in (0, 1):
        present = [[float(tag in tags[item][coder]) for item in tags] for coder in (0, 1)]
        library = krippendorff.alpha(reliability_data=present, level_of_measurement="nominal")
        assert report.tag_alphas[tag].alpha == pytest.approx(library)
    # overall: the ten (item, tag) units pooled: o_TT = 8, o_FF = 6, off-diagonal 6; n_T = 11, n_F = 9, n = 20
    assert report.alpha.alpha == pytest.approx(1 - 19 * 6 / (2 * 11 * 9))
    assert (report.alpha.n_items, report.alpha.n_values) == (5, 10)
    # kappa per pair: the mean over tags of the present/absent kappa
    per_tag = [cohen_kappa_score([tag in tags[i][0] for i in tags], [tag in tags[i][1] for i in tags])
               for tag in (0, 1)]
    assert report.pairs[0].kappa == pytest.approx(np.mean(per_tag)) and report.pairs[0].n == 5


# ----- confusion and per-annotator agreement --------------------------------------------------------------------------
def test_confusion_counts_ordered_pairs_of_different_annotators() -> None:
    rows = [(1, "A", 0), (1, "B", 0), (1, "C", 1), (2, "A", 2), (2, "B", 1), (3, "A", 2)]
    report = agreement(rows, 3, False, final={1: [0], 3: [2]})
    # item 1 (0, 0, 1): (0,0) twice, (0,1) twice, (1,0) twice; item 2 (2, 1): (2,1), (1,2); item 3: one answer
    assert report.confusion.matrix == [[2, 2, 0], [2, 0, 1], [0, 1, 0]]
    assert report.confusion.n_per_class == [4, 3, 1]
    assert (report.confusion.n_items, report.confusion.n_pairs) == (2, 8)
    stats = {s.annotator: s for s in report.per_annotator}
    # A: item 1 equals B, not C; item 2 differs from B -> 1 of 3 pairs; the final label: items 1 and 3 both right
    assert (stats["A"].agreement, stats["A"].agreement_n) == (pytest.approx(1 / 3), 3)
    assert (stats["C"].agreement, stats["C"].agreement_n) == (0.0, 2)
    assert [(stats[n].adjudicated, stats[n].adjudicated_n) for n in "ABC"] == [(1.0, 2), (1.0, 1), (0.0, 1)]
    assert [stats[n].labels for n in "ABC"] == [3, 2, 1]


def test_multi_label_confusion_pairs_every_tag_of_one_answer_with_every_tag_of_the_other() -> None:
    report = agreement([(1, "A", [0, 1]), (1, "B", [1]), (2, "A", [2])], 3, True)
    # item 1, ordered pairs (A, B): 0->1, 1->1; (B, A): 1->0, 1->1
    assert report.confusion.matrix == [[0, 1, 0], [1, 2, 0], [0, 0, 0]]
    assert report.confusion.n_per_class == [1, 2, 0] and report.confusion.n_pairs == 2


# ----- pace ---------------------------------------------------------------------------------------------------------
def test_labels_per_hour_and_time_per_label_on_hand_made_timestamps() -> None:
    at = [T0, T0 + timedelta(seconds=10), T0 + timedelta(seconds=30), T0 + timedelta(hours=2),
          T0 + timedelta(hours=2, seconds=20)]
    shown = [4.0, 8.0, None, 6.0, 15.0]
    answers = [Answer(i, "A", 0, t, s) for i, (t, s) in enumerate(zip(at, shown))]
    per_hour, active, times = pace(answers)
    # the first counts its shown 4 s, then the gaps 10, 20, 7200 capped at 300, and 20: 354 s for 5 labels
    assert active == pytest.approx(354.0)
    assert per_hour == pytest.approx(5 / (354 / 3600))
    assert times == [4.0, 8.0, 20.0, 6.0, 15.0]  # shown time when recorded, else the capped gap (the third)
    (stats,) = agreement(answers, 2, False).per_annotator
    assert (stats.median_seconds, stats.mean_seconds, stats.timed) == (8.0, pytest.approx(10.6), 5)
    assert stats.labels_per_hour == pytest.approx(18000 / 354)
    # without a shown time the first answer has no time of its own: 4 gaps, 350 s
    bare = [Answer(i, "B", 0, t) for i, t in enumerate(at)]
    assert pace(bare)[:2] == (pytest.approx(4 / (350 / 3600)), pytest.approx(350.0))
    assert pace([Answer(1, "C", 0, T0)]) == (None, 0.0, [])  # one answer, no time: no pace


# ----- storage: current answers from a real SQLite project ------------------------------------------------------------
def _label(s, project_id: int, item_id: int, annotator: str, value: list[int], minute: int,
           seconds: float | None = 2.0) -> Annotation:
    row = Annotation(project_id=project_id, item_id=item_id, annotator=annotator, kind="label", value=value,
                     seconds=seconds, created_at=T0 + timedelta(minutes=minute))
    s.add(row)
    s.flush()
    return row


def _retract(s, row: Annotation, minute: int) -> None:
    s.add(Annotation(project_id=row.project_id, item_id=row.item_id, annotator=row.annotator, kind="retract",
                     replaces_id=row.id, created_at=T0 + timedelta(minutes=minute)))


def _populate(db: Database, name: str = "p") -> tuple[int, list[int]]:
    """alice and bob agree on items 0 and 1 once bob's undone answer is replaced; carol's only label is undone."""
    project_id, _ = make_round(db, 5, name)
    with db.write() as s:
        items = [i for (i,) in s.query(Item.id).filter(Item.project_id == project_id).order_by(Item.id)]
        _label(s, project_id, items[0], "alice", [0], 0)
        _label(s, project_id, items[1], "alice", [1], 1)
        _label(s, project_id, items[0], "bob", [0], 2)
        _retract(s, _label(s, project_id, items[1], "bob", [0], 3), 4)
        _label(s, project_id, items[1], "bob", [1], 5)
        _retract(s, _label(s, project_id, items[2], "carol", [2], 6), 7)
        s.add(Annotation(project_id=project_id, item_id=items[3], annotator="carol", kind="skip"))
        _label(s, project_id, items[4], "alice", [2], 8)
        _label(s, project_id, items[4], "alice", [1], 9)  # answered again later: the latest answer counts
    return project_id, items


def test_current_answers_leave_out_retracted_answers_and_skips(db: Database) -> None:
    project_id, items = _populate(db)
    other, _ = make_round(db, 2, "other")
    with db.write() as s:
        _label(s, other, s.query(Item.id).filter(Item.project_id == other).first()[0], "alice", [2], 0)

    statements = []
    event.listen(db.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    with db.read() as s:
        rows = current_answers(s, project_id)
    assert len([sql for sql in statements if sql.lstrip().upper().startswith("SELECT")]) == 1
    assert [(item, who, value) for item, who, value, _, _ in rows] == [
        (items[0], "alice", [0]), (items[1], "alice", [1]), (items[0], "bob", [0]), (items[1], "bob", [1]),
        (items[4], "alice", [1]),
    ]
    assert rows[0][3] == T0 and rows[0][4] == 2.0

    report = agreement(rows, 3, False)
    assert report.annotators == ["alice", "bob"]  # carol's one label was undone, her skip gives no value
    assert [(p.first, p.second, p.kappa, p.n) for p in report.pairs] == [("alice", "bob", 1.0, 2)]
    assert report.confusion.matrix == [[2, 0, 0], [0, 2, 0], [0, 0, 0]]

    with db.write() as s:
        s.execute(update(Item).where(Item.id == items[1]).values(split="eval"))
    with db.read() as s:
        assert [r[0] for r in current_answers(s, project_id, split="pool")] == [items[0], items[0], items[4]]
        assert [r[0] for r in current_answers(s, project_id, split="eval")] == [items[1], items[1]]


def test_the_verb_names_the_classes_and_says_when_there_is_no_overlap(db: Database) -> None:
    project_id, _ = _populate(db)
    view = agreement_view(db, project_id)
    assert (view.project, view.classes, view.overlap_items, view.has_overlap) == ("p", ["a", "b", "c"], 2, True)
    lonely, _ = make_round(db, 2, "lonely")
    with db.write() as s:
        _label(s, lonely, s.query(Item.id).filter(Item.project_id == lonely).first()[0], "alice", [0], 0)
    view = agreement_view(db, lonely)
    assert not view.has_overlap and view.alpha.alpha is None and view.pairs == []
    assert [s.labels for s in view.per_annotator] == [1]


# ----- the CLI verb -------------------------------------------------------------------------------------------------
def test_cli_agreement_as_text_and_json(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    url = sqlite_url(home / "wb.sqlite")
    db = Database(url)
    project_id, items = _populate(db, "shapes")
    db.dispose()
    env = {**os.environ, "WORKBENCH_HOME": str(home), "WORKBENCH_DB_URL": url}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "app", "agreement", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)

    out = run("shapes", "--json")
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert found["project"] == "shapes" and found["overlap_items"] == 2
    assert found["pairs"] == [{"first": "alice", "second": "bob", "kappa": 1.0, "n": 2}]
    assert found["confusion"]["matrix"] == [[2, 0, 0], [0, 2, 0], [0, 0, 0]]
    assert [a["annotator"] for a in found["per_annotator"]] == ["alice", "bob"]

    text = run(f"#{project_id}").stdout
    assert "shapes (project 1): 2 annotator(s), 2 item(s) answered by two or more" in text
    assert "Cohen's kappa alice / bob: 1.000 (n=2)" in text
    assert "alice: 3 labels" in text and "agrees with others 100% (n=2)" in text

    refused = run("nope")
    assert refused.returncode == 2 and "no project named 'nope'" in refused.stderr


# ----- the page -----------------------------------------------------------------------------------------------------
@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Database:
    for name in ("WORKBENCH_TOKEN", "WORKBENCH_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WORKBENCH_DB_URL", sqlite_url(tmp_path / "home" / "wb.sqlite"))
    (tmp_path / "home").mkdir()
    database = Database(sqlite_url(tmp_path / "home" / "wb.sqlite"))
    yield database
    database.dispose()


def open_agreement(project_id: int) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["project_id"] = project_id
    at.run()
    at.switch_page(page("agreement").file).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_the_page_shows_alpha_kappa_confusion_and_each_annotator(home: Database) -> None:
    project_id, _ = _populate(home)
    at = open_agreement(project_id)
    assert [t.value for t in at.title] == ["Agreement"]
    assert not at.info  # there is overlap
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Krippendorff's alpha (nominal)"] == "1.000" and metrics["items with two or more answers"] == "2"
    kappa, confusion, people = (frame.value for frame in at.dataframe)
    assert kappa.to_dict("records") == [{"annotator": "alice", "other annotator": "bob", "kappa": 1.0,
                                         "items both answered": 2}]
    assert confusion.loc["a", "a"] == 2 and confusion.loc["b", "b"] == 2 and confusion["n"].tolist() == [2, 2, 0]
    assert people["annotator"].tolist() == ["alice", "bob"] and people["labels"].tolist() == [3, 2]
    assert people["agrees with others"].tolist() == [1.0, 1.0]


def test_the_page_says_no_overlap_yet_and_still_shows_the_pace(home: Database) -> None:
    project_id, _ = make_round(home, 2, "*solo*")
    with home.write() as s:
        item = s.query(Item.id).filter(Item.project_id == project_id).first()[0]
        _label(s, project_id, item, "alice", [0], 0)
    at = open_agreement(project_id)
    assert "No overlap yet" in at.info[0].value
    assert not at.metric and len(at.dataframe) == 1
    assert at.dataframe[0].value["annotator"].tolist() == ["alice"]
    assert "\\*solo\\*" in at.caption[0].value  # the project's name is shown as typed, never as Markdown


def test_the_page_shows_alpha_per_tag_for_a_multi_label_project(home: Database) -> None:
    project_id, items = make_round(home, 3, "tags")
    with home.write() as s:
        s.execute(update(Project).where(Project.id == project_id).values(task="multi_label"))
        items = [i for (i,) in s.query(Item.id).filter(Item.project_id == project_id).order_by(Item.id)]
        for minute, (item, who, value) in enumerate([(0, "A", [0]), (0, "B", [0, 1]), (1, "A", [2]), (1, "B", [2]),
                                                     (2, "A", []), (2, "B", [1])]):
            _label(s, project_id, items[item], who, value, minute)
    at = open_agreement(project_id)
    tags = at.dataframe[0].value
    assert tags["tag"].tolist() == ["a", "b", "c"] and tags["answers marking it"].tolist() == [2, 2, 2]
    assert tags["alpha"].tolist()[2] == pytest.approx(1.0)


def test_the_page_needs_the_reviewer_role_once_people_exist(home: Database) -> None:
    project_id, _ = _populate(home)
    _, annotator_token = people_admin.add(home, "ann", "annotator")
    _, reviewer_token = people_admin.add(home, "rev", "reviewer")
    at = open_agreement(project_id)
    for token, opens in ((annotator_token, False), (reviewer_token, True)):
        at.text_input(key="_token_field").input(token)
        at.button(key="_sign_in_button").click().run()
        assert not at.exception
        assert bool(at.title) is opens and bool(at.dataframe) is opens
    assert not any(t.key == "_token_field" for t in at.text_input)

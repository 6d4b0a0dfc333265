"""Likely label mistakes: the out-of-fold math (learners.label_issues), the review job run by the in-process worker
on a real small project (app.jobs.review), the decisions stored as annotation rows (storage.reviews) and the Review
page driven with AppTest."""
from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from app import job_kinds, people_admin
from app.jobs.context import JobContext
from app.page_table import page
from app.settings import Settings
from app.workbench import ProjectConfig, Workbench
from app.worker import Worker
from learners.errors import LearnerError
from learners.heads import HeadConfig, train_head
from learners.label_issues import fold_count, fold_of, out_of_fold_probs, ranked_issues
from storage import reviews
from storage.db import sqlite_url
from storage.demo import write_demo
from storage.files import artifacts
from storage.labels import current_labels
from storage.models import Annotation, Item, Job
from tests.test_browser import CHROMIUM, _open_page, _settle, _wait, workbench_server  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "streamlit_app.py")
PER_CLASS = 30  # 300 digits in all
LABELED = 240  # pool items the noisy annotator labels
FLIPS = 12  # of which given another class


def blobs(n_per_class: int, num_classes: int, dim: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Well separated Gaussian clusters, one per class."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 4.0, size=(num_classes, dim))
    y = np.repeat(np.arange(num_classes), n_per_class)
    return (centers[y] + rng.normal(0, spread, size=(len(y), dim))).astype(np.float32), y


# ----- out of fold --------------------------------------------------------------------------------------------------
def test_each_row_comes_from_a_head_not_trained_on_it() -> None:
    x, gold = blobs(40, 3, 2, 0.5, seed=1)
    planted = np.flatnonzero(gold == 0)[:10]
    y = gold.copy()
    y[planted] = 1  # wrong labels, each on a point that also has a feature of its own (no other row has it)
    own = np.zeros((len(y), len(planted)), dtype=np.float32)
    own[planted, np.arange(len(planted))] = 10.0
    x = np.hstack([x, own])
    config = HeadConfig(seed=0)

    folds = fold_of(y, seed=0)
    assert fold_count(y) == 5 and set(folds[planted]) == set(range(5))  # planted points in every fold
    oof = out_of_fold_probs(x, y, 3, config, seed=0)
    # A head that saw a planted label fits it through the point's own feature ...
    seen = train_head(x, y, 3, config).predict_proba(x[planted])
    assert (seen[:, 1] > 0.5).all()
    # ... the head that predicts the point never saw it: the feature is 0 on all of its training rows.
    assert (oof[planted].argmax(axis=1) == 0).all() and (oof[planted, 1] < 0.5).all()
    for fold in range(5):  # and each fold's rows are exactly what a head trained on the other folds gives
        held_out = folds == fold
        head = train_head(x[~held_out], y[~held_out], 3, config)
        np.testing.assert_allclose(oof[held_out], head.predict_proba(x[held_out]), atol=1e-6)


def test_fewer_folds_when_a_class_has_few_labels_and_a_refusal_with_too_few() -> None:
    assert fold_count(np.array([0] * 10 + [1] * 3)) == 3
    assert fold_count(np.array([0] * 10 + [1] * 3 + [2])) == 3  # a single stray label does not lower it
    assert fold_count(np.array([0] * 10 + [1] * 2)) == 2
    folds = fold_of(np.array([0] * 10 + [1] * 3), seed=4)
    assert sorted(np.bincount(folds[10:])) == [1, 1, 1]  # stratified: each fold holds one of the 3
    with pytest.raises(LearnerError, match="two classes with two labels each"):
        fold_count(np.array([0] * 10 + [1]))


def test_ranked_issues_finds_planted_flips_on_an_easy_dataset() -> None:
    x, gold = blobs(100, 4, 5, 0.5, seed=2)
    rng = np.random.default_rng(0)
    flipped = rng.choice(len(gold), 20, replace=False)
    y = gold.copy()
    y[flipped] = (gold[flipped] + rng.integers(1, 4, len(flipped))) % 4
    probs = out_of_fold_probs(x, y, 4, HeadConfig(seed=0), seed=0)
    issues = ranked_issues(y, probs)
    # cleanlab's filter (prune by noise rate) flags as many items per pair of classes as its estimate of the
    # noise there, which can stay a little under the truth: here 17 of the 20 flips, and nothing else.
    assert {issue.index for issue in issues} <= set(flipped.tolist()) and len(issues) >= 16
    assert all(issue.given == y[issue.index] and issue.suggested == gold[issue.index] for issue in issues)
    assert [issue.rank for issue in issues] == list(range(len(issues)))
    confidences = [issue.given_probability for issue in issues]
    assert confidences == sorted(confidences)  # ranked by self-confidence, lowest first
    assert all(issue.probability == pytest.approx(probs[issue.index].max()) for issue in issues)


def test_multi_label_and_bad_shapes_are_refused_in_words() -> None:
    with pytest.raises(LearnerError, match="single-label projects only"):
        ranked_issues(np.zeros((4, 3)), np.full((4, 3), 1 / 3))
    with pytest.raises(LearnerError, match="4 labels but 3 rows"):
        ranked_issues(np.zeros(4, dtype=int), np.full((3, 3), 1 / 3))
    assert ranked_issues(np.zeros(0, dtype=int), np.zeros((0, 3))) == []


# ----- a real small project -----------------------------------------------------------------------------------------
def _drain(worker: Worker) -> None:
    while worker.run_once():
        pass


def _use_home(monkeypatch: pytest.MonkeyPatch, home: Path) -> Settings:
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    monkeypatch.setenv("WORKBENCH_DB_URL", sqlite_url(home / "workbench.sqlite"))
    for name in ("WORKBENCH_TOKEN", "WORKBENCH_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return Settings.from_env()


def digits_project(base: Path, settings: Settings) -> tuple[int, dict[int, int]]:
    """A 300-digit project (30 of each digit from the demo's PNGs) of which 240 random pool items a noisy annotator
    labeled, 12 of them with another class; returns (project id, {item id: gold class} of the flipped items)."""
    demo = write_demo(base / "demo")
    folder = base / "digits"
    for digit in range(10):
        (folder / str(digit)).mkdir(parents=True)
        for path in sorted((demo / str(digit)).glob("*.png"))[:PER_CLASS]:
            shutil.copy(path, folder / str(digit) / path.name)
    wb = Workbench(settings)
    project_id = wb.create_project(ProjectConfig(name="Digits", eval_size=10, pick_ahead=0), folder)
    rng = np.random.default_rng(0)
    with wb.db.write() as s:
        pool = list(s.scalars(select(Item).where(Item.project_id == project_id, Item.split == "pool")
                              .order_by(Item.id)))
        pool = [pool[k] for k in rng.choice(len(pool), LABELED, replace=False)]
        flipped = set(rng.choice(len(pool), FLIPS, replace=False).tolist())
        for k, item in enumerate(pool):
            gold = item.gold[0]
            value = (gold + int(rng.integers(1, 10))) % 10 if k in flipped else gold
            s.add(Annotation(project_id=project_id, item_id=item.id, annotator="noisy", kind="label", value=[value]))
    wb.db.dispose()
    return project_id, {pool[k].id: pool[k].gold[0] for k in flipped}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, int]]:
    """A home holding `digits_project`, embedded and its round 0 selected; returns (home, the flips)."""
    base = tmp_path_factory.mktemp("review")
    home = base / "home"
    with pytest.MonkeyPatch.context() as mp:
        settings = _use_home(mp, home)
        _, flips = digits_project(base, settings)
        _drain(Worker(settings, device="cpu", quiet=True))
    return home, flips


@pytest.fixture
def wb(template: tuple[Path, dict[int, int]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workbench:
    """This test's own copy of the template's database (the images and features stay in the template's home)."""
    home = tmp_path / "home"
    home.mkdir()
    src, dst = sqlite3.connect(template[0] / "workbench.sqlite"), sqlite3.connect(home / "workbench.sqlite")
    with dst:
        src.backup(dst)
    src.close()
    dst.close()
    workbench = Workbench(_use_home(monkeypatch, home))
    yield workbench
    workbench.db.dispose()


@pytest.fixture
def flips(template: tuple[Path, dict[int, int]]) -> dict[int, int]:
    return template[1]


def _scan(wb: Workbench, project_id: int) -> Job:
    with wb.db.write() as s:
        job_id = job_kinds.enqueue(s, "review", project_id).id
    _drain(Worker(wb.settings, device="cpu", quiet=True))
    with wb.db.read() as s:
        return s.get(Job, job_id)


def _rows(wb: Workbench, item_id: int) -> list[tuple[str, str, list | None, int | None]]:
    with wb.db.read() as s:
        return [(a.kind, a.annotator, a.value, a.replaces_id)
                for a in s.scalars(select(Annotation).where(Annotation.item_id == item_id).order_by(Annotation.id))]


def test_the_review_job_flags_the_flips_and_is_idempotent(wb: Workbench, flips: dict[int, int]) -> None:
    project_id = wb.project_id("Digits")
    job = _scan(wb, project_id)
    assert job.state == "done" and job.progress == 1.0, job.error
    assert job.message.endswith(f"of {LABELED} pool labels flagged as likely wrong (5-fold out-of-fold linear head)")
    with wb.db.read() as s:
        scan = reviews.latest_scan(s, project_id)
        labels = current_labels(s, project_id)
    assert scan.job_id == job.id and scan.labels == LABELED and scan.folds == 5
    assert scan.flagged == len(scan.open) and scan.confirmed == scan.changed == scan.labels_changed_since == 0
    top = scan.open[:FLIPS]
    found = [f for f in top if f.item_id in flips]
    assert len(found) >= 0.7 * FLIPS  # the measured precision at k (benchmarks/bench_label_issues.py)
    assert sum(f.suggested == flips[f.item_id] for f in found) >= 0.8 * len(found)
    for f in scan.open:  # each row names the label it checked
        assert f.annotation_id == labels[f.item_id].annotation_id and f.given == labels[f.item_id].value[0]
        assert f.labeled_by == "noisy" and f.probability >= f.given_probability
    assert [f.rank for f in scan.open] == list(range(scan.flagged))

    again = _scan(wb, project_id)  # the same labels: found, nothing computed or stored
    assert again.state == "done" and f"since the scan of job {job.id}: nothing to do" in again.message
    with wb.db.read() as s:
        assert len(artifacts(s, project_id, reviews.ISSUES_KIND)) == 1

    first, second = scan.open[0], scan.open[1]
    with wb.db.write() as s:
        reviews.record_review(s, project_id, first.item_id, "rita", "confirm", seen_annotation_id=first.annotation_id)
        reviews.record_review(s, project_id, second.item_id, "rita", "relabel", [second.suggested],
                              seen_annotation_id=second.annotation_id)
    assert _rows(wb, first.item_id)[-1] == ("confirm", "rita", [first.given], first.annotation_id)
    assert _rows(wb, second.item_id)[-1] == ("label", "rita", [second.suggested], second.annotation_id)
    assert wb.labels(project_id)[first.item_id] == [first.given]  # a confirm changes no label
    assert wb.labels(project_id)[second.item_id] == [second.suggested]  # the next training reads this one
    with wb.db.read() as s:
        scan = reviews.latest_scan(s, project_id)
    assert {first.item_id, second.item_id}.isdisjoint(f.item_id for f in scan.open)
    assert (scan.confirmed, scan.changed, scan.labels_changed_since) == (1, 1, 1)

    rescan = _scan(wb, project_id)  # a label changed: a new scan, the kept label still off the list
    assert rescan.state == "done" and "flagged" in rescan.message
    with wb.db.read() as s:
        assert len(artifacts(s, project_id, reviews.ISSUES_KIND)) == 2
        scan = reviews.latest_scan(s, project_id)
    assert scan.job_id == rescan.id and first.item_id not in {f.item_id for f in scan.open}


def test_a_decision_on_a_label_that_changed_meanwhile_is_refused(wb: Workbench) -> None:
    project_id = wb.project_id("Digits")
    _scan(wb, project_id)
    with wb.db.read() as s:
        item = reviews.latest_scan(s, project_id).open[0]
    with wb.db.write() as s:
        reviews.record_review(s, project_id, item.item_id, "ana", "relabel", [(item.given + 1) % 10],
                              seen_annotation_id=item.annotation_id)
    before = _rows(wb, item.item_id)
    for decision, value in (("confirm", None), ("relabel", [item.suggested])):
        with pytest.raises(reviews.ReviewError, match="was changed by ana since this list was drawn"):
            with wb.db.write() as s:
                reviews.record_review(s, project_id, item.item_id, "rita", decision, value,
                                      seen_annotation_id=item.annotation_id)
    with pytest.raises(reviews.ReviewError, match="not valid for classes"):
        with wb.db.write() as s:
            reviews.record_review(s, project_id, item.item_id, "rita", "relabel", [10])
    assert _rows(wb, item.item_id) == before


def test_a_damaged_scan_file_is_worded_on_the_page_and_computed_again(wb: Workbench) -> None:
    project_id = wb.project_id("Digits")
    first = _scan(wb, project_id)
    with wb.db.read() as s:
        (artifact,) = artifacts(s, project_id, reviews.ISSUES_KIND)
    Path(artifact.path).write_bytes(b"truncated")
    at = _open()
    assert "contents do not match the checksum" in at.error[0].value and not _listed(at)
    again = _scan(wb, project_id)  # the same labels, but the stored result is unreadable: scanned anew
    assert again.state == "done" and "flagged" in again.message
    with wb.db.read() as s:
        assert reviews.latest_scan(s, project_id).job_id == again.id != first.id


def test_a_multi_label_project_is_refused_in_words(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _use_home(monkeypatch, tmp_path / "home")
    wb = Workbench(settings)
    project_id = wb.create_project(ProjectConfig(name="Tags", task="multi_label", eval_size=10, pick_ahead=0),
                                   "demo-tags")
    with wb.db.write() as s:
        job = job_kinds.enqueue(s, "review", project_id)
    context = JobContext(db=wb.db, home=settings.home, device="cpu", progress=lambda fraction, message: None)
    with pytest.raises(LearnerError, match="single-label projects only"):  # before any features are computed
        job_kinds.handler("review")(job, context)
    at = _open(at_page="review")
    assert "single-label projects only" in at.info[0].value and not any(b.key == "scan" for b in at.button)


# ----- the Review page ----------------------------------------------------------------------------------------------
def _open(at_page: str = "review", **query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update(query)
    at.run()
    at.switch_page(page(at_page).file).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _listed(at: AppTest) -> list[int]:
    """Item ids of the flagged items on the page, in order (from their Keep buttons)."""
    return [int(b.key.removeprefix("keep_")) for b in at.button if b.key and b.key.startswith("keep_")]


def test_the_review_page_scans_keeps_and_relabels(wb: Workbench) -> None:
    project_id = wb.project_id("Digits")
    at = _open(annotator="rita")
    assert at.title[0].value == "Review" and "No scan yet" in at.info[0].value
    at.button(key="scan").click().run()
    assert "Scan queued as job" in at.success[0].value
    assert at.button(key="scan").disabled  # one scan at a time
    _drain(Worker(wb.settings, device="cpu", quiet=True))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    with wb.db.read() as s:
        scan = reviews.latest_scan(s, project_id)
    shown = scan.open[:10]
    assert _listed(at) == [f.item_id for f in shown] and len(at.image) == len(shown)
    first, second, third = shown[0], shown[1], shown[2]
    # The first item's actions have keys; the others have none.
    assert at.button(key=f"keep_{first.item_id}").proto.shortcut == "k"
    assert at.button(key=f"accept_{first.item_id}").proto.shortcut == "enter"
    assert [at.button(key=f"class_{first.item_id}_{k}").proto.shortcut for k in range(10)] == [str(k) for k in range(10)]
    assert at.button(key=f"keep_{second.item_id}").proto.shortcut == ""

    at.button(key=f"keep_{first.item_id}").click().run()  # K
    assert f"Kept {Path(first.key).name} as {first.given}." in at.success[0].value
    assert _rows(wb, first.item_id)[-1] == ("confirm", "rita", [first.given], first.annotation_id)
    assert _listed(at)[0] == second.item_id

    at.button(key=f"accept_{second.item_id}").click().run()  # Enter: the suggestion
    assert f"Relabeled {Path(second.key).name}: {second.given} → {second.suggested}." in at.success[0].value
    assert _rows(wb, second.item_id)[-1] == ("label", "rita", [second.suggested], second.annotation_id)
    assert _listed(at)[0] == third.item_id

    other = next(k for k in range(10) if k not in (third.given, third.suggested))
    at.button(key=f"class_{third.item_id}_{other}").click().run()  # a digit: that class
    assert _rows(wb, third.item_id)[-1] == ("label", "rita", [other], third.annotation_id)
    assert wb.labels(project_id)[third.item_id] == [other]

    fourth = shown[4]  # second on the list now: its "Relabel as" box
    at.selectbox(key=f"pick_{fourth.item_id}").select(fourth.given).run()
    at.button(key=f"relabel_{fourth.item_id}").click().run()  # its own label: recorded as kept
    assert _rows(wb, fourth.item_id)[-1] == ("confirm", "rita", [fourth.given], fourth.annotation_id)
    assert {first.item_id, second.item_id, third.item_id, fourth.item_id}.isdisjoint(_listed(at))
    assert "2 pool label(s) were given, changed or withdrawn after this scan" in at.info[0].value


def test_the_review_page_needs_the_reviewer_role_and_stores_the_reviewers_name(wb: Workbench) -> None:
    project_id = wb.project_id("Digits")
    _scan(wb, project_id)
    tokens = {name: people_admin.add(wb.db, name, role)[1]
              for name, role in (("alice", "annotator"), ("rev", "reviewer"))}
    at = _open(annotator="mallory")
    at.text_input(key="_token_field").input(tokens["alice"])
    at.button(key="_sign_in_button").click().run()
    assert not at.title and "needs the reviewer role; you are signed in as alice (annotator)" in at.warning[0].value
    at.text_input(key="_token_field").input(tokens["rev"])
    at.button(key="_sign_in_button").click().run()
    assert at.title[0].value == "Review"
    item = _listed(at)[0]
    at.button(key=f"keep_{item}").click().run()
    assert _rows(wb, item)[-1][:2] == ("confirm", "rev")  # the signed-in reviewer, whatever the link claimed


# ----- the keys, in a real browser ----------------------------------------------------------------------------------
def press(page, key: str, button_key: str) -> None:
    """Press `key` once the button `button_key` shows it as its shortcut (the button is the first item's, drawn by
    the page's latest run): earlier, the key could reach the page before its new shortcuts are bound."""
    from playwright.sync_api import expect

    expect(page.locator(f".st-key-{button_key}[data-stale='false'] kbd")).to_be_visible(timeout=60_000)
    _settle(page)
    page.keyboard.press(key)


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
@pytest.mark.parametrize("workbench_server", [["--no-demo"]], indirect=True)
def test_k_enter_and_a_digit_decide_on_the_first_item_in_a_browser(workbench_server, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, settings, _log = workbench_server
    project_id, _ = digits_project(tmp_path, settings)
    wb = Workbench(settings)
    with wb.db.write() as s:
        job_id = job_kinds.enqueue(s, "review", project_id).id

    def scanned() -> bool:
        with wb.db.read() as s:
            state = s.get(Job, job_id).state
        assert state != "failed"
        return state == "done"

    _wait(scanned, 180, "the scan by the server's worker")
    with wb.db.read() as s:
        first, second, third = reviews.latest_scan(s, project_id).open[:3]
    other = next(k for k in range(10) if k not in (third.given, third.suggested))
    with sync_playwright() as pw:
        browser, page = _open_page(pw)
        page.goto(f"{url}/review?annotator=rita")
        expect(page.get_by_text("#1 · labeled")).to_be_visible(timeout=60_000)
        press(page, "k", f"keep_{first.item_id}")
        _wait(lambda: _rows(wb, first.item_id)[-1] == ("confirm", "rita", [first.given], first.annotation_id),
              60, "K: the label kept")
        expect(page.get_by_text(f"Kept {Path(first.key).name} as {first.given}.")).to_be_visible()
        press(page, "Enter", f"accept_{second.item_id}")
        _wait(lambda: _rows(wb, second.item_id)[-1] == ("label", "rita", [second.suggested], second.annotation_id),
              60, "Enter: the suggestion taken")
        relabeled = f"Relabeled {Path(second.key).name}: {second.given} → {second.suggested}."
        expect(page.get_by_text(relabeled)).to_be_visible()
        press(page, str(other), f"class_{third.item_id}_{other}")
        _wait(lambda: _rows(wb, third.item_id)[-1] == ("label", "rita", [other], third.annotation_id),
              60, "a digit: that class")
        page.screenshot(path=str(tmp_path / "review.png"), full_page=True)
        browser.close()
    assert wb.labels(project_id)[third.item_id] == [other]

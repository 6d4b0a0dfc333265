"""The formulas the reference code writes, pinned on hand-built inputs: GALAXY's line score (LabelBench `galaxy.py`
and `direct.py`, TAILOR `strategy/meta/utils.py`), shared by DIRECT and TAILOR's galaxy arms; BAIT's weighting of
the batch (JordanAsh/badge `bait_sampling.py`); and, on a real project, that no strategy's picks move when only
the evaluation items change."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import delete, insert, select

from app.jobs import select as select_job
from app.jobs.context import JobContext
from app.settings import Settings
from app.workbench import ProjectConfig, Workbench
from app.worker import Worker
from learners.strategies import StrategyInputs, available_strategies, get_strategy
from learners.strategies.bait import batch_weight
from learners.strategies.galaxy import CANDIDATE, LABELED, ClassLines, galaxy_pick, line_score
from learners.strategies.tailor import Arm, arm_rankings
from storage.files import latest_artifact, load_matrix
from storage.models import Artifact, Item, Round

C, L = CANDIDATE, LABELED


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def reference_line_score(probs: np.ndarray, k: int) -> np.ndarray:
    """The references' margins[:, k], written out: P_k - max_j P_j + 1e-8 max_j P_j, in float64."""
    p = np.asarray(probs, dtype=np.float64)
    top = p.max(axis=1)
    return p[:, k] - top + 1e-8 * top


# ---------------------------------------------------------------------------------------------- the line score

# Three classes. Items 0-3 are predicted class 0, so the reference's class-0 line orders them by P_0 alone
# (0, 1, 2, 3); the runner-up gap P_0 - max_{j != 0} P_j would put item 2 (gap 0.25) before item 1 (gap 0.11).
# Item 0 is labeled class 0, item 4 class 1: the candidates 1, 2, 3 form one run on class 0's line, whose middle
# (position (1 + 3) // 2 = 2) is item 2 with the reference formula and would be item 1 with the runner-up gap.
BLOCK = np.array([
    [0.90, 0.05, 0.05],
    [0.55, 0.44, 0.01],
    [0.50, 0.25, 0.25],
    [0.40, 0.35, 0.25],
    [0.20, 0.70, 0.10],
])


def test_line_score_is_the_reference_formula_in_float64() -> None:
    probs = BLOCK.astype(np.float32)
    for k in range(3):
        score = line_score(probs[:, k], probs.max(axis=1))
        assert score.dtype == np.float64
        np.testing.assert_array_equal(score, reference_line_score(probs, k))
    # inside the block predicted 0 the first two terms cancel: 1e-8 P_0, exactly
    np.testing.assert_array_equal(line_score(probs[:4, 0], probs[:4].max(axis=1)),
                                  1e-8 * probs[:4, 0].astype(np.float64))
    # multi-label: the line is P_k itself
    np.testing.assert_array_equal(line_score(probs[:, 1], None, multi_label=True), probs[:, 1].astype(np.float64))


def test_the_predicted_block_is_ordered_by_p_k() -> None:
    on_line = np.arange(5)
    for seed in range(5):
        lines = ClassLines(BLOCK.astype(np.float32), on_line, rng(seed))
        assert lines.line(0).tolist() == [0, 1, 2, 3, 4]
        assert lines.line(1).tolist() == [4, 3, 1, 2, 0]  # 4 predicted 1; then -0.05, -0.11, -0.25, -0.85


def test_the_tie_breaker_survives_float32_inputs() -> None:
    """Items a = (1/4, 1/2, 1/4) and b = (3/8, 5/8, 0) have the same P_0 - max_j P_j = -1/4 exactly (so the
    runner-up gap ties them too); float32 arithmetic rounds the 1e-8 max_j P_j term away (half an ulp of 1/4 is
    1.5e-8), float64 keeps it: b (1e-8 * 5/8) lies before a (1e-8 * 1/2) on class 0's line, whatever the seed."""
    probs = np.array([[0.25, 0.5, 0.25], [0.375, 0.625, 0.0], [0.9, 0.05, 0.05]], dtype=np.float32)
    top = probs.max(axis=1)
    in_float32 = probs[:, 0] - top + np.float32(1e-8) * top
    assert in_float32[0] == in_float32[1]
    score = line_score(probs[:, 0], top)
    assert score[1] > score[0]
    for seed in range(10):
        assert ClassLines(probs, np.arange(3), rng(seed)).line(0).tolist() == [2, 1, 0]


def block_inputs() -> StrategyInputs:
    return StrategyInputs(np.array([1, 2, 3]), probs=BLOCK, labeled=np.array([0, 4]), labels=np.array([0, 1]))


def test_galaxy_bisects_the_reference_line() -> None:
    picks = get_strategy("galaxy", classes=[0]).select(block_inputs(), 1, rng())
    assert picks.positions.tolist() == [2]
    assert picks.note == "galaxy: 1 bisection"
    np.testing.assert_array_equal(picks.scores, reference_line_score(BLOCK, 0)[[2]])  # 1e-8 * 0.5


def test_tailor_galaxy_arm_uses_the_same_line() -> None:
    ranking, = arm_rankings([Arm("galaxy", 0)], block_inputs(), 1, rng())
    assert ranking.tolist() == [2]


def test_direct_uses_the_same_line() -> None:
    """Labels: class 0 once (item 0), class 1 twice (items 4, 7), class 2 twice (5, 6): class 0 is the least
    labeled and comes first. Its line is 0, 1, 2, 3 (the block, by P_0), then 4 (-0.5), 5 (-0.7), 7 (-0.71),
    6 (-0.75). w = +1 at position 0 and -1 at positions 4..7: the agreement is best (4) at thresholds 1..4, the
    middle one is t* = 3, and its nearest candidates are positions 2 (left, distance 1) and 3 (right, distance 1):
    the left one, item 2. With the runner-up gap the line would start 0, 2, 1, 3 and the pick be item 1."""
    probs = np.vstack([BLOCK, [[0.10, 0.10, 0.80], [0.05, 0.15, 0.80], [0.12, 0.83, 0.05]]])
    inputs = StrategyInputs(np.array([1, 2, 3]), probs=probs, labeled=np.array([0, 4, 5, 6, 7]),
                            labels=np.array([0, 1, 2, 2, 1]), step=1)  # odd step: a threshold pick
    picks = get_strategy("direct").select(inputs, 1, rng())
    assert picks.positions.tolist() == [2] and picks.note == "direct: 1 threshold"
    np.testing.assert_array_equal(picks.scores, reference_line_score(probs, 0)[[2]])


def test_the_boundary_rule_takes_both_orientations() -> None:
    """LabelBench reacts only to a 0-then-1 pair, TAILOR only to a 1-then-0 pair (largest margin first);
    this rule takes the nearest candidate beside either."""
    # the pair at line positions 2|3: candidate 1 at distance 1 on its left, candidate 5 at distance 2 on its right
    status = np.array([C, C, L, L, L, C])
    assert galaxy_pick(status, np.array([0, 1, 1]) == 1, rng()) == (1, "boundary")  # inverted pair
    assert galaxy_pick(status, np.array([1, 0, 0]) == 1, rng()) == (1, "boundary")  # natural pair
    # the pair at 2|3: candidate 0 at distance 2 on its left, candidate 4 at distance 1 on its right
    status = np.array([C, L, L, L, C])
    assert galaxy_pick(status, np.array([0, 0, 1]) == 1, rng()) == (4, "boundary")
    assert galaxy_pick(status, np.array([1, 1, 0]) == 1, rng()) == (4, "boundary")



# ---------------------------------------------------------------------------------------------- BAIT's weighting


def test_bait_weighs_each_batch_item_budget_times_a_labeled_one() -> None:
    """Two classes, one feature: every quantity is a scalar. P = (1/2, 1/2) for all, so M_i = Q^T (diag p - p p^T) Q
    = 2 * 1/4 = 1/2 and I_i = x_i^2 / 2 with x = (-2, -1, 1/2, 5/2) (already centered): I = (2, 1/2, 1/8, 25/8),
    F = mean I = 23/16. Item 1 is labeled, B = 2, lambda = 1. The original scales the labeled Fisher by 1 / (|L| + B)
    = 1/3 and each batch item by B / (|L| + B) = 2/3. Forward to 2B takes all three candidates; backward drops
    item 2 (the least information), leaving S = {0, 3}. Removal costs F / A(S - i) - F / A(S):
    A(S) = 1 + (1/2 + 2 (2 + 25/8)) / 3 = 55/12; A(S - 0) = 1 + (1/2 + 25/4) / 3 = 13/4; A(S - 3) = 1 + (1/2 + 4) / 3
    = 5/2. So item 3 (cost 23/40 - 69/220) comes first, then item 0 (23/52 - 69/220)."""
    assert batch_weight(1, 2) == 2 / 3 and batch_weight(0, 5) == 1.0
    probs = np.full((4, 2), 0.5)
    feats = np.array([[-2.0], [-1.0], [0.5], [2.5]])
    inputs = StrategyInputs(np.array([0, 2, 3]), probs=probs, penultimate=feats, labeled=np.array([1]),
                            labels=np.array([0]))
    picks = get_strategy("bait", dim=1, lam=1.0).select(inputs, 2, rng())
    f = 23 / 16
    objective = f / (55 / 12)
    assert picks.positions.tolist() == [3, 0]
    np.testing.assert_allclose(picks.scores, [f / (5 / 2) - objective, f / (13 / 4) - objective], rtol=1e-12)
    # (the old weighting, every item 1 / (|L| + B), gives A(S) = 23/8 and item 3 a cost of 0.284, not 0.261)


# ---------------------------------------------------------------------------------------------- eval rows

CLASSES = ("ant", "bee", "cat")
PER_CLASS = 12


def _image(path: Path, g: np.random.Generator, level: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((g.random((8, 8)) * 60 + level).astype(np.uint8)).save(path)


def _labeled_project(settings: Settings, tmp_path: Path) -> tuple[Workbench, Worker, int, Path]:
    """A 36-image project, 6 of them the evaluation set: round 0 (evaluation set + 4 pool items) labeled, a head
    trained, round 1's picks queued."""
    g = rng(0)
    root = tmp_path / "images"
    for k, name in enumerate(CLASSES):
        for i in range(PER_CLASS):
            _image(root / name / f"{i:03d}.png", g, 60 * k)
    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(name="eval rows", round_size=4, eval_size=6, strategy="random",
                                          pick_ahead=0), root)
    worker = Worker(settings, device="cpu", quiet=True)
    while worker.run_once():
        pass
    with wb.db.read() as s:
        gold = {i.id: i.gold for i in s.scalars(select(Item).where(Item.project_id == pid))}
    while (assignment := wb.next_assignment(pid, "a")) is not None:
        wb.submit(pid, assignment.entry_id, "a", gold[assignment.item_id])
    while worker.run_once():
        pass
    assert [r.state for r in wb.rounds(pid)] == ["done", "labeling"]
    return wb, worker, pid, root


def _all_picks(wb: Workbench, settings: Settings, pid: int) -> dict[str, tuple[list[int], np.ndarray]]:
    """Every registered strategy's picks (item ids) and scores for the open round, from what select hands it."""
    ctx = JobContext(db=wb.db, home=settings.home, device="cpu", progress=lambda fraction, message: None)
    with wb.db.read() as s:
        round_id = s.scalars(select(Round.id).where(Round.project_id == pid).order_by(Round.index.desc())).first()
        eval_ids = set(s.scalars(select(Item.id).where(Item.project_id == pid, Item.split == "eval")))
    picks = {}
    for name in available_strategies():
        view = select_job._read(ctx, SimpleNamespace(project_id=pid, round_id=round_id))
        view.strategy = get_strategy(name)
        inputs = select_job._strategy_inputs(ctx, view)
        assert inputs.item_ids.dtype == np.int64 and not set(inputs.item_ids.tolist()) & eval_ids
        for array in (inputs.probs, inputs.features, inputs.penultimate):
            assert array is None or len(array) == len(inputs.item_ids)
        selection = view.strategy.select(inputs, 3, rng(7))
        picks[name] = (inputs.item_ids[selection.positions].tolist(), selection.scores)
    return picks


def _eval_features(wb: Workbench, pid: int) -> dict[int, np.ndarray]:
    """The evaluation items' rows of the project's latest features file, by item id."""
    with wb.db.read() as s:
        artifact = latest_artifact(s, pid, "features")
        eval_ids = set(s.scalars(select(Item.id).where(Item.project_id == pid, Item.split == "eval")))
    features, ids = load_matrix(artifact)
    return {int(i): row for i, row in zip(ids, features) if int(i) in eval_ids}


@pytest.mark.parametrize("change", ["files", "number"])
def test_changing_only_the_evaluation_items_changes_no_strategys_picks(settings: Settings, tmp_path: Path,
                                                                       change: str) -> None:
    """"files": new pixels in every evaluation image, and the feature cache dropped so that every file is embedded
    again; "number": two more evaluation items (the features are then recomputed for every item). Either way the
    pool's features, labels and head are unchanged, so every strategy must pick as before."""
    wb, worker, pid, root = _labeled_project(settings, tmp_path)
    before = _all_picks(wb, settings, pid)
    eval_before = _eval_features(wb, pid)
    g = rng(1)
    with wb.db.write() as s:
        if change == "files":
            for item in s.scalars(select(Item).where(Item.project_id == pid, Item.split == "eval")):
                _image(root / item.key, g, int(g.integers(0, 190)))
            s.execute(delete(Artifact).where(Artifact.project_id == pid, Artifact.kind == "features"))
        else:
            for i in range(2):
                _image(root / "extra" / f"{i}.png", g, 100)
            s.execute(insert(Item), [{"project_id": pid, "key": f"extra/{i}.png", "content_hash": f"extra{i}",
                                      "split": "eval", "gold": [0]} for i in range(2)])
    select_job._POOL_FEATURES.clear()  # as in a fresh worker: the select job reads (and recomputes) the features
    after = _all_picks(wb, settings, pid)
    eval_after = _eval_features(wb, pid)  # the change reached the features
    if change == "files":
        assert eval_after.keys() == eval_before.keys()
        assert all(not np.array_equal(eval_after[i], row) for i, row in eval_before.items())
    else:
        assert len(eval_after) == len(eval_before) + 2
    assert before.keys() == after.keys() == set(available_strategies())
    for name, (ids, scores) in before.items():
        assert after[name][0] == ids, name
        np.testing.assert_allclose(after[name][1], scores, rtol=1e-9, err_msg=name)

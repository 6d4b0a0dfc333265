"""When to stop (learners.forecast): the learning-curve fit and its intervals on synthetic curves with known
parameters, the refusal with too few rounds, the changed share of pool predictions between two trained rounds of
the demo project, and both on the Dashboard (AppTest)."""
from __future__ import annotations

import numpy as np
import pytest

from app import read_models
from learners.errors import LearnerError
from learners.forecast import (
    MIN_POINTS,
    PowerLaw,
    changed_share,
    fit_power_law,
    forecast,
    predictions_stable,
)
from storage.models import Item
from storage.simulation_runs import pool_item_ids
from tests.test_pages import (  # noqa: F401  (fixtures)
    _run_worker,
    demo_id,
    demo_template,
    gold_of,
    label_whole_round,
    open_page,
    trained,
    wb,
)

TRUE = PowerLaw(a=0.95, b=0.8, c=0.5)


def noisy_curve(rng: np.random.Generator, n: np.ndarray, m: int, law: PowerLaw = TRUE) -> np.ndarray:
    """Accuracies measured on m evaluation items: binomial draws around the law."""
    return rng.binomial(m, law(n)) / m


def test_fit_recovers_known_parameters_from_noisy_points() -> None:
    rng = np.random.default_rng(0)
    n = np.arange(20, 2001, 40, dtype=float)
    fit = fit_power_law(n, noisy_curve(rng, n, 20_000), 20_000)
    assert fit.a == pytest.approx(TRUE.a, abs=0.01)
    assert fit.b == pytest.approx(TRUE.b, rel=0.2)
    assert fit.c == pytest.approx(TRUE.c, abs=0.08)
    grid = np.linspace(20, 3000, 50)
    assert np.max(np.abs(fit(grid) - TRUE(grid))) < 0.005


def test_fit_without_noise_is_exact_to_the_grid_of_exponents() -> None:
    n = np.array([10, 30, 60, 100, 200, 400], dtype=float)
    law = PowerLaw(a=0.9, b=0.6, c=0.7)
    fit = fit_power_law(n, law(n), 1000)
    assert fit.c == pytest.approx(0.7, rel=0.02)
    assert np.max(np.abs(fit(n) - law(n))) < 0.002


def test_fit_respects_its_constraints() -> None:
    n = np.array([50, 100, 150, 200, 250], dtype=float)
    falling = fit_power_law(n, [0.9, 0.88, 0.86, 0.84, 0.82], 500)
    assert falling.b == 0 and falling.a == pytest.approx(0.86, abs=0.01)  # never a falling curve: a constant
    steep = fit_power_law(n, [0.5, 0.7, 0.85, 0.95, 1.0], 500)
    assert steep.a <= 1.0  # the asymptote is accuracy


def test_interval_covers_the_realised_accuracy_at_about_its_level() -> None:
    rng = np.random.default_rng(1)
    n = np.arange(20, 201, 20, dtype=float)
    hits, errors = [], []
    for _ in range(150):
        result = forecast(n, noisy_curve(rng, n, 500), 500, ahead=(100, 500), level=0.9, resamples=400,
                          seed=int(rng.integers(1 << 31)))
        realised = noisy_curve(rng, np.array([f.labels for f in result.forecasts], dtype=float), 500)
        hits.append([f.low <= r <= f.high for f, r in zip(result.forecasts, realised)])
        errors.append([abs(f.value - r) for f, r in zip(result.forecasts, realised)])
    coverage = np.mean(hits, axis=0)
    # 150 curves: a 90% interval covers between 82% and 97% (about three binomial SDs either side)
    assert np.all((coverage >= 0.82) & (coverage <= 0.97)), coverage
    assert np.all(np.mean(errors, axis=0) < 0.03)
    assert all(f.low <= f.value <= f.high for f in result.forecasts)


def test_interval_narrows_with_more_evaluation_items() -> None:
    n = np.arange(20, 201, 20, dtype=float)
    widths = [forecast(n, TRUE(n), m, ahead=(500,)).forecasts[0].width for m in (100, 10_000)]
    assert widths[1] < widths[0] / 3


def test_too_few_points_are_refused_in_words() -> None:
    n = np.array([10, 20, 30], dtype=float)
    with pytest.raises(LearnerError, match=f"at least {MIN_POINTS}"):
        forecast(n, [0.5, 0.6, 0.65], 100)
    with pytest.raises(LearnerError, match="increasing"):
        forecast([10, 20, 20, 30], [0.5, 0.6, 0.6, 0.65], 100)


def test_changed_share_and_the_stopping_rule() -> None:
    before = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    after = np.array([[0.8, 0.2], [0.7, 0.3], [0.6, 0.55], [0.1, 0.9]])
    assert changed_share(before, after) == 0.25  # item 1's top class
    assert changed_share(before, after, multi_label=True) == 0.5  # item 1's tags, and item 2's second tag
    assert predictions_stable([0.05, 0.008, 0.004])
    assert not predictions_stable([0.004, 0.02, 0.004])
    assert not predictions_stable([0.004])  # one pair of rounds is not yet two
    with pytest.raises(LearnerError):
        changed_share(before, after[:3])


def test_dashboard_says_too_few_rounds_after_one(wb, trained: int) -> None:
    at = open_page("dashboard")
    assert any("Too few rounds to forecast: 1 trained round(s)" in i.value for i in at.info)
    assert any("once two rounds are trained" in i.value for i in at.info)


def test_changed_share_of_two_trained_rounds_and_its_dashboard_line(wb, trained: int) -> None:
    probs0, ids0 = wb.predictions(trained)
    label_whole_round(wb, trained)
    _run_worker()  # round 1 trained: a second predictions file beside the first
    probs1, ids1 = wb.predictions(trained)
    assert np.array_equal(ids0, ids1)
    with wb.db.read() as s:
        pool = pool_item_ids(s, trained)
    in_pool = np.array([int(i) in pool for i in ids0])
    expected = float(np.mean(probs0[in_pool].argmax(1) != probs1[in_pool].argmax(1)))
    changes = read_models.prediction_changes(wb.db, trained)
    assert [(c.previous_round, c.round, c.pool_n) for c in changes] == [(0, 1, int(in_pool.sum()))]
    assert changes[0].changed == pytest.approx(expected)
    assert 0 < expected < 1  # ten more labels move some of the pool's predictions, not all
    at = open_page("dashboard")
    said = [i.value for i in at.info if i.value.startswith("Predictions changed")]
    assert said == [f"Predictions changed for {expected:.1%} of the pool ({in_pool.sum()} items) since round 0: "
                    f"the model is still changing."]


def test_dashboard_forecasts_after_four_rounds(wb, trained: int) -> None:
    for _ in range(MIN_POINTS - 1):
        label_whole_round(wb, trained)
        _run_worker()
    points = wb.chart_data(trained)
    assert len(points) == MIN_POINTS
    expected = forecast([p.labels for p in points], [p.accuracy for p in points], [p.eval_n for p in points])
    at = open_page("dashboard")
    shown = {m.label: m.value for m in at.metric}
    for f in expected.forecasts:
        assert shown[f"+{f.ahead} labels (at {f.labels})"] == f"{f.value:.1%}"
    assert any(f"90% interval {f.low:.1%} – {f.high:.1%}" == c.value for c in at.caption for f in expected.forecasts)
    # ten evaluation items: the intervals are wide, and the page says so
    assert all(f.too_wide for f in expected.forecasts)
    assert any("too wide to mean anything" in w.value for w in at.warning)
    assert len(read_models.prediction_changes(wb.db, trained)) == MIN_POINTS - 1


def test_dashboard_counts_the_hand_picked_labels(wb, trained: int) -> None:
    hand_picks = pytest.importorskip("storage.hand_picks")
    with wb.db.write() as s:
        chosen = sorted(hand_picks.open_pool_items(s, trained))[:2]
        claims = hand_picks.claim_hand_picks(s, trained, "ann", chosen, "grid").claims
        keys = {c.entry_id: s.get(Item, c.item_id).key for c in claims}
    for entry_id, key in keys.items():
        wb.submit(trained, entry_id, "ann", [gold_of(key)])
    with wb.db.read() as s:
        assert hand_picks.hand_picked_count(s, trained) == 2
    at = open_page("dashboard")
    assert ("2 of the 12 pool labels were hand-picked (grid, nearest neighbours or map), not an active-learning "
            "sample: the curve mixes both.") in [c.value for c in at.caption]

"""Semi-supervised heads (learners.ssl) and augmented views (learners.views): FlexMatch thresholds on a worked
example, pseudo-label selection, evaluation rows never used, seeding, refusals; views on PNGs in a temp folder."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from learners.backbones import BackboneSpec, load_backbone
from learners.embedding import embed_images, standardize
from learners.heads import HeadConfig, train_head
from learners.ssl import SSLConfig, flexmatch_thresholds, pseudo_label_targets, train_head_ssl
from learners.views import embed_views, standardize_views

N_POOL = 600


@pytest.fixture(scope="module")
def digits() -> dict[str, np.ndarray]:
    """The first N_POOL digits as a pool (standardized pixels, std floored at 1 grey level), 40 labeled rows,
    80 evaluation rows, noisy weak/strong views (K = 2), and the rest of the digits as a test set."""
    data = load_digits()
    raw = data.data[:N_POOL]
    mean, std = raw.mean(axis=0), np.maximum(raw.std(axis=0), 1.0)
    x, _, _ = standardize(raw, mean, std)
    x_test, _, _ = standardize(data.data[N_POOL:], mean, std)
    rng = np.random.default_rng(0)
    views = {name: np.stack([standardize(raw + rng.normal(0, sd, raw.shape), mean, std)[0] for _ in range(2)])
             for name, sd in (("weak", 0.5), ("strong", 1.5))}
    order = rng.permutation(N_POOL)
    return {"x": x, "y": data.target[:N_POOL], "views": views, "labeled": order[:40], "eval": order[40:120],
            "x_test": x_test, "y_test": data.target[N_POOL:]}


def test_flexmatch_thresholds_worked_example() -> None:
    # 6 unlabeled items, 3 classes: latest confident labels 0, 0, 0, 1 and two items with none yet.
    # sigma = (3, 1, 0), sigma_unused = 2, denominator max(3, 2) = 3 -> beta = (1, 1/3, 0)
    # T_c = 0.95 * beta / (2 - beta) = (0.95 * 1/1, 0.95 * (1/3) / (5/3), 0) = (0.95, 0.19, 0)
    latest = np.array([0, 0, 0, 1, -1, -1])
    np.testing.assert_allclose(flexmatch_thresholds(latest, 3, 0.95), [0.95, 0.19, 0.0])
    # warm-up: 1 item confident for class 0, 4 unused: beta = (1/4, 0, 0); T_0 = 0.95 * 0.25 / 1.75 = 0.135714
    np.testing.assert_allclose(flexmatch_thresholds(np.array([0, -1, -1, -1, -1]), 3, 0.95),
                               [0.95 * 0.25 / 1.75, 0.0, 0.0])
    # every item confident: sigma = (2, 2), unused 0 -> beta = (1, 1) -> T = tau for both
    np.testing.assert_allclose(flexmatch_thresholds(np.array([0, 1, 1, 0]), 2, 0.9), [0.9, 0.9])
    np.testing.assert_array_equal(flexmatch_thresholds(np.array([], dtype=np.int64), 2, 0.95), [0.0, 0.0])
    with pytest.raises(ValueError, match=r"\[-1, 3\)"):
        flexmatch_thresholds(np.array([0, 3]), 3, 0.95)


def test_pseudo_label_targets_pick_confident_rows() -> None:
    probs = np.array([
        [0.96, 0.02, 0.02],  # row 0: confident, class 0
        [0.50, 0.50, 0.00],  # row 1: not confident
        [0.01, 0.04, 0.95],  # row 2: exactly at the cut-off, class 2
        [0.94, 0.06, 0.00],  # row 3: just below
        [0.00, 1.00, 0.00],  # row 4: class 1
    ])
    rows, targets = pseudo_label_targets(probs, 0.95)
    assert rows.tolist() == [0, 2, 4] and targets.tolist() == [0, 2, 1]
    rows, targets = pseudo_label_targets(probs, 0.99)
    assert rows.tolist() == [4] and targets.tolist() == [1]


def test_none_is_train_head_on_the_labeled_rows(digits) -> None:
    x, y, labeled = digits["x"], digits["y"], digits["labeled"]
    config = HeadConfig(kind="mlp", epochs=3, seed=4)
    expected = train_head(x[labeled], y[labeled], 10, config).predict_proba(x)
    got = train_head_ssl(x, labeled, y[labeled], 10, config, "none", digits["views"], eval_excluded=digits["eval"])
    np.testing.assert_array_equal(got.predict_proba(x), expected)


@pytest.mark.parametrize("method", ["pseudo_label", "flexmatch"])
def test_evaluation_rows_are_never_read(digits, method: str) -> None:
    x, y, labeled, eval_rows, views = digits["x"], digits["y"], digits["labeled"], digits["eval"], digits["views"]
    config = HeadConfig(kind="mlp", epochs=4, seed=1)
    ssl = SSLConfig(method, tau=0.5, min_steps_per_epoch=5)  # low tau: pseudo-labels exist from epoch 2 on
    first = train_head_ssl(x, labeled, y[labeled], 10, config, ssl, views, eval_excluded=eval_rows)

    garbage = np.random.default_rng(9).normal(0, 50, (len(eval_rows), x.shape[1])).astype(np.float32)
    x_changed, views_changed = x.copy(), {name: v.copy() for name, v in views.items()}
    x_changed[eval_rows] = garbage
    for array in views_changed.values():
        array[:, eval_rows] = garbage
    again = train_head_ssl(x_changed, labeled, y[labeled], 10, config, ssl, views_changed, eval_excluded=eval_rows)
    for name, weights in first.state_arrays().items():
        np.testing.assert_array_equal(again.state_arrays()[name], weights, err_msg=name)

    # the check has teeth: the same change to rows that are *not* excluded does change the head
    leaked = train_head_ssl(x_changed, labeled, y[labeled], 10, config, ssl, views_changed)
    assert not np.array_equal(leaked.state_arrays()["fc.weight"], first.state_arrays()["fc.weight"])


@pytest.mark.parametrize("method", ["pseudo_label", "flexmatch"])
def test_same_seed_same_head_and_global_state_untouched(digits, method: str) -> None:
    x, y, labeled, views = digits["x"], digits["y"], digits["labeled"], digits["views"]
    rng_state, threads = torch.random.get_rng_state(), torch.get_num_threads()
    ssl = SSLConfig(method, min_steps_per_epoch=3)
    runs = [train_head_ssl(x, labeled, y[labeled], 10, HeadConfig(kind="mlp", epochs=3, seed=seed), ssl, views,
                           eval_excluded=digits["eval"]).predict_proba(x) for seed in (7, 7, 8)]
    assert torch.equal(torch.random.get_rng_state(), rng_state) and torch.get_num_threads() == threads
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_flexmatch_learns_and_reports_progress(digits) -> None:
    x, y, labeled, views = digits["x"], digits["y"], digits["labeled"], digits["views"]
    messages: list[tuple[float, str]] = []
    head = train_head_ssl(x, labeled, y[labeled], 10, HeadConfig(kind="linear", epochs=5, seed=0), "flexmatch",
                          views, eval_excluded=digits["eval"], progress=lambda f, m: messages.append((f, m)))
    accuracy = (head.predict_proba(digits["x_test"]).argmax(1) == digits["y_test"]).mean()
    assert accuracy > 0.7, f"flexmatch on 40 labels: test accuracy {accuracy:.3f}"
    assert len(messages) == 5 and messages[-1][0] == 1.0
    assert "labeled rows only" in messages[0][1] and "unlabeled rows used" in messages[-1][1]  # warm-up epoch


def test_refusals(digits) -> None:
    x, y, labeled, views = digits["x"], digits["y"], digits["labeled"], digits["views"]
    config = HeadConfig(epochs=1)
    with pytest.raises(ValueError, match="needs augmented feature views weak, strong"):
        train_head_ssl(x, labeled, y[labeled], 10, config, "flexmatch")
    with pytest.raises(ValueError, match="needs augmented feature views strong"):
        train_head_ssl(x, labeled, y[labeled], 10, config, "flexmatch", {"weak": views["weak"]})
    with pytest.raises(ValueError, match=r"view 'weak' must have shape \(K >= 1, 600, 64\)"):
        train_head_ssl(x, labeled, y[labeled], 10, config, "flexmatch", {**views, "weak": views["weak"][:, :10]})
    with pytest.raises(ValueError, match="unknown ssl method 'mixmatch'"):
        train_head_ssl(x, labeled, y[labeled], 10, config, "mixmatch")
    with pytest.raises(ValueError, match="both labeled for training and excluded"):
        train_head_ssl(x, labeled, y[labeled], 10, config, "pseudo_label", eval_excluded=labeled[:3])
    with pytest.raises(ValueError, match="labeled_idx repeats a row"):
        train_head_ssl(x, np.array([1, 1]), np.array([0, 0]), 10, config)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        train_head_ssl(x, labeled[:2], np.array([0, 12]), 10, config)


def test_labeled_view_plain_reads_plain_features_for_labeled_rows(digits) -> None:
    x, y, labeled, views = digits["x"], digits["y"], digits["labeled"], digits["views"]
    broken = {name: v.copy() for name, v in views.items()}
    broken["weak"][:, labeled] = 1e3  # the labeled rows' weak view is useless
    config = HeadConfig(kind="linear", epochs=4, seed=0)
    results = {}
    for labeled_view in ("weak", "plain"):
        ssl = SSLConfig("flexmatch", labeled_view=labeled_view)
        head = train_head_ssl(x, labeled, y[labeled], 10, config, ssl, broken, eval_excluded=digits["eval"])
        results[labeled_view] = (head.predict_proba(digits["x_test"]).argmax(1) == digits["y_test"]).mean()
    assert results["plain"] > 0.5 and results["plain"] > results["weak"] + 0.2, results  # 0.71 vs 0.13


def test_standardize_views_uses_plain_statistics_and_zeroes_constant_columns() -> None:
    plain = np.array([[0.0, 1.0], [0.0, 3.0]], dtype=np.float32)  # column 0 constant; column 1 mean 2, std 1
    _, mean, std = standardize(plain)
    raw = {"weak": np.array([[[5.0, 1.0], [0.0, 4.0]]], dtype=np.float32)}  # ink moved into column 0
    # column 0 -> 0 (else (5 - 0) / 1e-6 = 5e6); column 1 -> (1 - 2) / 1 = -1 and (4 - 2) / 1 = 2
    np.testing.assert_array_equal(standardize_views(raw, mean, std)["weak"], [[[0.0, -1.0], [0.0, 2.0]]])
    with pytest.raises(ValueError, match=r"shape \(K, N, 2\)"):
        standardize_views({"weak": np.zeros((3, 2))}, mean, std)


def test_ssl_config_from_dict() -> None:
    assert SSLConfig.from_dict("flexmatch") == SSLConfig(method="flexmatch")
    assert SSLConfig.from_dict(None) == SSLConfig()
    assert SSLConfig.from_dict({"method": "pseudo_label", "tau": 0.9}).tau == 0.9
    with pytest.raises(ValueError, match="unknown ssl setting"):
        SSLConfig.from_dict({"method": "flexmatch", "threshold": 0.9})
    with pytest.raises(ValueError, match="tau must lie in"):
        SSLConfig(method="flexmatch", tau=1.5)
    with pytest.raises(ValueError, match="labeled_view must be"):
        SSLConfig(method="flexmatch", labeled_view="strong")


@pytest.fixture(scope="module")
def digit_pngs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Five bundled digits written as 32x32 grey PNGs (8x8 scaled up)."""
    folder = tmp_path_factory.mktemp("views")
    paths = []
    for i, image in enumerate(load_digits().images[:5]):
        grey = Image.fromarray(np.round(image * 255 / 16).astype(np.uint8), mode="L").resize((32, 32))
        path = folder / f"digit_{i}.png"
        grey.save(path)
        paths.append(path)
    return paths


def test_views_shape_and_determinism(digit_pngs: list[Path]) -> None:
    backbone = load_backbone(BackboneSpec("pixels", image_size=16))
    fractions: list[float] = []
    torch.manual_seed(100)
    views = embed_views(digit_pngs, backbone, seed=3, progress=lambda f, m: fractions.append(f))
    assert set(views) == {"weak", "strong"}
    for array in views.values():
        assert array.shape == (2, 5, 256) and array.dtype == np.float32
    assert fractions[-1] == 1.0 and fractions == sorted(fractions)

    # same seed, same features, whatever the global torch seed, the batching or worker processes
    torch.manual_seed(200)
    again = embed_views(digit_pngs, backbone, seed=3, batch_size=2, num_workers=2)
    for name in views:
        np.testing.assert_array_equal(again[name], views[name])
    other = embed_views(digit_pngs, backbone, ("weak",), copies=1, seed=4)
    assert not np.array_equal(other["weak"][0], views["weak"][0])

    plain = embed_images(digit_pngs, backbone)
    assert not np.array_equal(views["weak"][0], plain)  # augmented
    assert not np.array_equal(views["weak"][0], views["weak"][1])  # copies differ
    assert not np.array_equal(views["weak"][0], views["strong"][0])
    no_flip = embed_views(digit_pngs, backbone, ("weak",), copies=1, seed=3, flip=False)
    assert no_flip["weak"].shape == (1, 5, 256)
    with pytest.raises(ValueError, match="unknown view 'medium'"):
        embed_views(digit_pngs, backbone, ("medium",))

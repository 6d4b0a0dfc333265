"""The map's math: a 2-D projection of the cached features, and the sample of points a page draws.

`project_2d` fits on at most `fit_sample` rows (a seeded sample) and places every other row with the fitted
projection, so a 100k pool costs one fit on the sample plus a cheap transform. The method is UMAP (umap-learn,
`random_state` = the seed) when the package is importable and there are at least `umap_min_items` rows, on the
features first reduced to `UMAP_INPUT_DIMS` principal components; otherwise PCA (numpy SVD, signs fixed so that a
rerun gives the same picture). Both are deterministic for one seed.

`drawn_sample` picks the points to draw: the `always` items (picked, labeled) first, then a stratified sample of
the rest (each stratum keeps its share of the pool), at most `limit` in all.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from importlib.util import find_spec
from typing import Callable

import numpy as np

from learners.errors import LearnerError

UMAP_MIN_ITEMS = 2000  # below this PCA shows the structure well enough, and UMAP's compile time dominates
FIT_SAMPLE = 20_000  # rows a projection is fitted on; the others are transformed
UMAP_INPUT_DIMS = 50  # UMAP reads the top principal components (the usual denoising, and much faster)
UMAP_NEIGHBORS = 15
METHODS = ("auto", "pca", "umap")


@dataclass(frozen=True)
class Projection:
    coords: np.ndarray  # (n, 2) float32, one row per input row
    method: str  # "pca" or "umap"
    fitted_on: int  # rows the projection was fitted on (the rest were transformed)
    note: str  # why this method, in words for the page


def umap_installed() -> bool:
    return find_spec("umap") is not None


def project_2d(features: np.ndarray, *, seed: int = 0, method: str = "auto", fit_sample: int = FIT_SAMPLE,
               umap_min_items: int = UMAP_MIN_ITEMS, have_umap: bool | None = None,
               progress: Callable[[float, str], None] | None = None) -> Projection:
    """2-D coordinates of every row of `features` (n x d). `method` "auto" takes UMAP when it is installed
    (`have_umap`, None: look) and n >= `umap_min_items`, else PCA; "umap" refuses when umap-learn is missing."""
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise LearnerError(f"a map needs a non-empty items x features matrix, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise LearnerError("the features hold NaN or infinite values: leave out the items without features first")
    if method not in METHODS:
        raise LearnerError(f"unknown projection method {method!r}; known: {', '.join(METHODS)}")
    have_umap = umap_installed() if have_umap is None else have_umap
    if method == "umap" and not have_umap:
        raise LearnerError("UMAP needs the umap-learn package: pip install umap-learn (or choose PCA)")
    report = progress or (lambda fraction, message: None)
    fit_rows = _fit_rows(len(x), fit_sample, seed)
    use_umap = method == "umap" or (method == "auto" and have_umap and len(x) >= umap_min_items)
    if not use_umap:
        if method == "pca":
            note = "PCA, as asked"
        elif not have_umap:
            note = "PCA: umap-learn is not installed"
        else:
            note = f"PCA: fewer than {umap_min_items} items"
        report(0.5, "PCA")
        return Projection(_pca(x, fit_rows, 2)[0], "pca", len(fit_rows), note)
    report(0.1, f"UMAP on {len(fit_rows)} items")
    reduced = _pca(x, fit_rows, min(UMAP_INPUT_DIMS, x.shape[1]))[0] if x.shape[1] > UMAP_INPUT_DIMS else x
    return Projection(_umap(reduced, fit_rows, seed, report), "umap", len(fit_rows),
                      "UMAP" + (f", fitted on a sample of {len(fit_rows)}" if len(fit_rows) < len(x) else ""))


def _fit_rows(n: int, fit_sample: int, seed: int) -> np.ndarray:
    if n <= fit_sample:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=fit_sample, replace=False))


def _pca(x: np.ndarray, fit_rows: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """(every row projected on the top `dims` principal axes of the `fit_rows`, those axes (dims x d)). Each axis
    is signed so that its largest loading is positive: SVD's sign is arbitrary, and a map should not flip."""
    fit = x[fit_rows].astype(np.float64)
    mean = fit.mean(axis=0)
    _, _, vt = np.linalg.svd(fit - mean, full_matrices=False)
    axes = vt[:dims]
    if len(axes) < dims:  # fewer rows or features than dims: pad with zero axes (a point, a line)
        axes = np.vstack([axes, np.zeros((dims - len(axes), x.shape[1]))])
    signs = np.sign(axes[np.arange(dims), np.abs(axes).argmax(axis=1)])
    axes = axes * np.where(signs == 0, 1.0, signs)[:, None]
    return ((x.astype(np.float64) - mean) @ axes.T).astype(np.float32), axes


def _umap(x: np.ndarray, fit_rows: np.ndarray, seed: int, report: Callable[[float, str], None]) -> np.ndarray:
    # Imported here: umap-learn (numba) takes seconds to import, and only the worker computes a map.
    umap = import_module("umap")
    neighbors = max(2, min(UMAP_NEIGHBORS, len(fit_rows) - 1))
    reducer = umap.UMAP(n_components=2, n_neighbors=neighbors, random_state=seed, n_jobs=1)
    coords = np.empty((len(x), 2), dtype=np.float32)
    coords[fit_rows] = reducer.fit_transform(x[fit_rows])
    rest = np.setdiff1d(np.arange(len(x)), fit_rows)
    if len(rest):
        report(0.6, f"placing the other {len(rest)} items")
        coords[rest] = reducer.transform(x[rest])
    return coords


def drawn_sample(strata: np.ndarray, always: np.ndarray, limit: int, seed: int = 0) -> np.ndarray:
    """Sorted row indices to draw, at most `limit`: every row where `always` is true (a seeded sample of them when
    they alone exceed `limit`), then from the other rows a sample in which each stratum (`strata`: a label per row)
    keeps its share of those rows (largest remainders get the rounding)."""
    strata = np.asarray(strata)
    always = np.asarray(always, dtype=bool)
    rng = np.random.default_rng(seed)
    kept = np.flatnonzero(always)
    if len(kept) >= limit:
        return np.sort(rng.choice(kept, size=limit, replace=False))
    rest = np.flatnonzero(~always)
    budget = limit - len(kept)
    if len(rest) <= budget:
        return np.sort(np.concatenate([kept, rest]))
    names, counts = np.unique(strata[rest], return_counts=True)
    exact = counts * budget / len(rest)
    quota = np.floor(exact).astype(int)
    quota[np.argsort(-(exact - quota), kind="stable")[: budget - quota.sum()]] += 1
    chosen = [rng.choice(rest[strata[rest] == name], size=q, replace=False) for name, q in zip(names, quota) if q]
    return np.sort(np.concatenate([kept, *chosen]))

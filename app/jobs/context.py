"""What every job handler gets and shares: the context and rows aligned by item id (torch-free: the worker
module, which every CLI verb imports, reads it)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from storage.db import Database

Progress = Callable[[float, str], None]


@dataclass
class JobContext:
    db: Database
    home: Path
    device: str
    progress: Progress  # raises app.job_kinds.JobLost once another worker has taken the job over


def align(matrix: np.ndarray, matrix_ids: np.ndarray, ids: np.ndarray, missing_ok: bool = False) -> np.ndarray:
    """Rows of `matrix` reordered to follow `ids` (rows follow items by id, never by position). With
    `missing_ok`, items without a row get NaN; otherwise they are an error."""
    row_of = {int(i): r for r, i in enumerate(matrix_ids)}
    rows = np.array([row_of.get(int(i), -1) for i in ids], dtype=np.int64)
    if not missing_ok and (rows < 0).any():
        missing = ids[rows < 0]
        raise ValueError(f"{len(missing)} items have no row (e.g. item {missing[0]}); the file is out of date")
    out = matrix[np.maximum(rows, 0)].astype(np.float32)
    out[rows < 0] = np.nan
    return out

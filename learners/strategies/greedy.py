"""The kernels of the greedy strategies (`coreset`, `badge`, `ranked_batch`): products and distances between the
candidate rows of a feature matrix and one of its rows (every pick) or a set of rows (once per selection).

`CandidateRows` holds the rows the loops stream. Each pick reads the matrix once.

CPU (numpy, no torch import). The matrix is read where it lies: the rows from the first to the last candidate are
a view of the caller's array (no copy), and rows among them that are not candidates are computed and masked by
the caller. Only when the candidates fill less than `DENSE_SHARE` of those rows, or the array is not C-ordered in
the computing dtype, are the candidate rows copied once. The rows are cut into blocks of about `BLOCK_BYTES`
(a multiple of `ROW_ALIGN` rows, as many blocks as a multiple of the workers); worker threads (one per usable CPU) each take the next free block
and compute it with single-threaded OpenBLAS. So a core that another process keeps busy slows one worker, not
every pick (a fixed split over threads that spin while they wait, as torch's OpenMP does, stalled on a shared
2-core machine), and a row's result does not depend on how many workers ran. Measured on that machine
(d = 512, float32, one thread): OpenBLAS matrix-vector 33 GB/s, torch.mv 16 GB/s.

CUDA (torch). The candidate rows are copied onto the device once, in candidate order, as one block.

Memory: the matrix (or its one copy), O(rows) vectors, and per worker one temporary of at most `CHUNK_ELEMENTS`
entries (distances to a set) or one block's length.

Arithmetic. Squared distances are |a|^2 + |b|^2 - 2 a.b evaluated as before the kernels existed, clamped at 0:
to one row j, (-2 a.b + |a|^2) + |b_j|^2; to a set, (-2 a.b + |b|^2) + |a|^2. Ties between candidates go to the
smallest rank (the caller's seeded permutation), which is "the first maximum in the permuted order".
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any, Callable, Literal

import numpy as np

from learners.cpu import one_blas_thread, usable_cpus

# Bytes of matrix rows per block on CPU: a block's vectors (a few hundred KB) stay in the core's cache.
BLOCK_BYTES = 32 * 2**20
# Blocks start at multiples of this many rows, so a row's arithmetic (BLAS handles rows in small groups) does not
# depend on the block size.
ROW_ALIGN = 1024
# Below this share of candidate rows in their span, the candidate rows are copied instead of masked.
DENSE_SHARE = 0.2
# Entries of one temporary block of distances to a set: 8 MB of float32 on CPU, 256 MB on CUDA.
CHUNK_ELEMENTS = {"cpu": 2**21, "cuda": 2**26}
# Reference rows per chunk of a distance-to-set computation.
REFERENCE_CHUNK = 4096
# Rows copied from a numpy array to the device per step (bounds the host-side temporary).
GATHER_ROWS = 65_536


def compute_dtype(*arrays: np.ndarray) -> np.dtype:
    """float64 when any input is float64, else float32."""
    return np.dtype(np.float64) if any(a.dtype == np.float64 for a in arrays) else np.dtype(np.float32)


def on_cpu(device: Any) -> bool:
    return str(device).split(":")[0] == "cpu"


def rows_on_device(array: np.ndarray, rows: np.ndarray, dtype: np.dtype, device: Any) -> Any:
    """array[rows] as a (len(rows), width) torch tensor on `device`, copied in bounded chunks."""
    import torch

    torch_dtype = torch.float64 if dtype == np.float64 else torch.float32
    out = torch.empty((len(rows),) + array.shape[1:], dtype=torch_dtype, device=device)
    for start in range(0, len(rows), GATHER_ROWS):
        block = np.ascontiguousarray(array[rows[start:start + GATHER_ROWS]], dtype=dtype)
        out[start:start + len(block)] = torch.from_numpy(block).to(device)
    return out


def copy_rows(array: np.ndarray, rows: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """array[rows] in `dtype`, C-ordered, copied in bounded chunks (no second temporary of the full size)."""
    out = np.empty((len(rows),) + array.shape[1:], dtype=dtype)
    for start in range(0, len(rows), GATHER_ROWS):
        out[start:start + GATHER_ROWS] = array[rows[start:start + GATHER_ROWS]]
    return out


class CandidateRows:
    """The candidate rows of `features` (N x d, by pool position) as the kernels stream them; a context manager
    (it holds the CPU worker threads).

    `matrix` (m x d): the rows computed, in the computing dtype; `index[i]`: the row of candidate i (candidate
    order); `is_candidate` (m,): whether a row is a candidate; `sq` (m,): the rows' squared norms. Vectors over
    rows are numpy arrays on CPU, torch tensors on CUDA; `index` is numpy in both."""

    def __init__(self, features: np.ndarray, candidates: np.ndarray, device: Any = "cpu",
                 dtype: np.dtype | None = None, chunk_rows: int | None = None) -> None:
        self.dtype = np.dtype(dtype or compute_dtype(features))
        self.cpu = on_cpu(device)
        self.chunk_rows = chunk_rows
        self._stack = ExitStack()
        self._workers: ThreadPoolExecutor | None = None
        candidates = np.asarray(candidates, dtype=np.int64)
        n = len(candidates)
        lo, hi = int(candidates.min()), int(candidates.max()) + 1
        in_place = (self.cpu and features.dtype == self.dtype and features.flags.c_contiguous
                    and n >= DENSE_SHARE * (hi - lo))
        if in_place:
            self.matrix, self.index, self.offset = features[lo:hi], candidates - lo, lo
        else:
            self.matrix = (copy_rows(features, candidates, self.dtype) if self.cpu
                           else rows_on_device(features, candidates, self.dtype, device))
            self.index, self.offset = np.arange(n), None
        self.candidates = candidates
        self.in_order = bool(np.all(np.diff(self.index) > 0))  # candidate order is row order
        m = len(self.matrix)
        if self.cpu:
            self.xp: Any = np
            self.is_candidate = np.zeros(m, dtype=bool)
            self.is_candidate[self.index] = True
            self.workers = usable_cpus()
            self.block_rows = chunk_rows or self._block_rows(m, self.matrix[0].nbytes, self.workers)
        else:
            import torch

            self.xp = torch
            self.device = self.matrix.device
            self.workers = 1
            self.is_candidate = torch.ones(m, dtype=torch.bool, device=self.device)
            self.block_rows = chunk_rows or m
        self.blocks = [(start, min(m, start + self.block_rows)) for start in range(0, m, self.block_rows)]
        self.sq = self.empty(m)
        self.run(lambda s, e: self.squared_norms(self.matrix, s, e, self.sq))

    # -------------------------------------------------------------------------------------------- the context

    def __enter__(self) -> CandidateRows:
        if self.cpu:
            self._stack.enter_context(one_blas_thread())
            workers = min(self.workers, len(self.blocks))
            if workers > 1:
                self._workers = self._stack.enter_context(ThreadPoolExecutor(workers))
        return self

    def __exit__(self, *exc: object) -> None:
        self._workers = None
        self._stack.close()

    @staticmethod
    def _block_rows(m: int, row_bytes: int, workers: int) -> int:
        """Rows per block: about BLOCK_BYTES, as many blocks as a multiple of the workers (none waits on the last
        one alone), whole multiples of ROW_ALIGN."""
        blocks = -(-m * row_bytes // BLOCK_BYTES)  # ceiling divisions
        blocks = -(-blocks // workers) * workers
        rows = -(-m // blocks)
        return max(ROW_ALIGN, -(-rows // ROW_ALIGN) * ROW_ALIGN)

    def run(self, fn: Callable[[int, int], Any]) -> list[Any]:
        """fn(start, stop) for every block of rows (in worker threads on CPU), results in block order."""
        if self._workers is None:
            return [fn(s, e) for s, e in self.blocks]
        return list(self._workers.map(lambda block: fn(*block), self.blocks))

    # ---------------------------------------------------------------------------------------------- vectors

    def empty(self, m: int | None = None, dtype: Any = None) -> Any:
        m = len(self.matrix) if m is None else m
        if self.cpu:
            return np.empty(m, dtype=dtype or self.dtype)
        return self.xp.empty(m, dtype=self._torch_dtype(dtype or self.dtype), device=self.device)

    def full(self, value: float, dtype: Any = None) -> Any:
        out = self.empty(dtype=dtype)
        out[:] = value
        return out

    def on_rows(self, values: np.ndarray, fill: Any, dtype: Any = None) -> Any:
        """A vector over rows holding `values[i]` (candidate order) at candidate i's row, `fill` elsewhere."""
        out = self.full(fill, dtype=dtype or values.dtype)
        out[self.to_device(self.index)] = self.to_device(values)
        return out

    def rank(self, permutation: np.ndarray) -> Any:
        """Each row's rank in the seeded order `permutation` (of candidate indices); non-candidates last."""
        rank = np.empty(len(permutation), dtype=np.int64)
        rank[permutation] = np.arange(len(permutation))
        return self.on_rows(rank, len(permutation))

    def positions(self, rows: np.ndarray) -> np.ndarray:
        """Pool positions of matrix rows."""
        rows = np.asarray(rows, dtype=np.int64)
        return self.offset + rows if self.offset is not None else self.candidates[rows]

    def to_device(self, array: np.ndarray) -> Any:
        return array if self.cpu else self.xp.from_numpy(np.ascontiguousarray(array)).to(self.device)

    def to_numpy(self, vector: Any) -> np.ndarray:
        return vector if self.cpu else vector.cpu().numpy()

    def _torch_dtype(self, dtype: Any) -> Any:
        import torch

        if isinstance(dtype, torch.dtype):
            return dtype
        return {np.dtype(np.float64): torch.float64, np.dtype(np.float32): torch.float32,
                np.dtype(np.int64): torch.int64, np.dtype(bool): torch.bool}[np.dtype(dtype)]

    # ------------------------------------------------------------------------------------------ block kernels

    def squared_norms(self, matrix: Any, s: int, e: int, out: Any) -> None:
        block = matrix[s:e]
        if self.cpu:
            np.einsum("ij,ij->i", block, block, out=out[s:e])
        else:
            out[s:e] = (block * block).sum(dim=1)

    def dots(self, matrix: Any, vector: Any, s: int, e: int, out: Any) -> Any:
        """out[s:e] = matrix[s:e] @ vector; returns that slice."""
        self.xp.matmul(matrix[s:e], vector, out=out[s:e])
        return out[s:e]

    def distances_to_row(self, j: int, s: int, e: int, out: Any, squared: bool = False) -> Any:
        """out[s:e] = Euclidean distance (squared: its square) from rows s..e to row j; returns that slice."""
        d = self.dots(self.matrix, self.matrix[j], s, e, out)
        d *= -2
        d += self.sq[s:e]
        d += self.sq[j]
        self.clamp0(d)
        return d if squared else self.xp.sqrt(d, out=d)

    def clamp0(self, values: Any) -> None:
        if self.cpu:
            np.maximum(values, 0, out=values)
        else:
            values.clamp_min_(0)

    def best(self, values: Any, rank: Any, s: int = 0) -> tuple[float, int]:
        """(largest value, its row) in `values` (rows s.. of a vector over rows), ties to the smallest rank."""
        top = values.max()
        if self.cpu:
            tied = np.flatnonzero(values == top)
        else:
            tied = self.xp.nonzero(values == top).squeeze(1)
        row = tied[0] if len(tied) == 1 else tied[rank[s + tied].argmin()]
        return float(top), s + int(row)

    def best_of(self, results: list[tuple[float, int]], rank: Any) -> tuple[float, int]:
        """The best of per-block `best` results (ties across blocks to the smallest rank)."""
        top = max(value for value, _ in results)
        rows = [row for value, row in results if value == top]
        return top, min(rows, key=lambda row: int(rank[row]))

    def distances_to_set(self, source: np.ndarray, reference: np.ndarray,
                         reduce: Literal["min", "mean"]) -> Any:
        """For every row: the min or the mean Euclidean distance to the rows `source[reference]`.

        Reference rows are taken `REFERENCE_CHUNK` (or `chunk_rows`) at a time; each temporary block of squared
        distances holds at most CHUNK_ELEMENTS entries (or chunk_rows^2)."""
        ref_chunk = self.chunk_rows or REFERENCE_CHUNK
        out = self.full(np.inf) if reduce == "min" else self.full(0.0, dtype=np.float64)
        for ref_start in range(0, len(reference), ref_chunk):
            rows = reference[ref_start:ref_start + ref_chunk]
            ref = copy_rows(source, rows, self.dtype)
            ref = ref if self.cpu else self.to_device(ref)
            ref_sq = self.empty(len(ref))
            self.squared_norms(ref, 0, len(ref), ref_sq)
            step = self.chunk_rows or max(1, CHUNK_ELEMENTS["cpu" if self.cpu else "cuda"] // len(ref))

            def block(s: int, e: int) -> None:
                for a in range(s, e, step):
                    b = min(e, a + step)
                    d2 = self.xp.matmul(self.matrix[a:b], ref.T)
                    d2 *= -2
                    d2 += ref_sq[None, :]
                    d2 += self.sq[a:b, None]
                    self.clamp0(d2)
                    if reduce == "min":
                        nearest = d2.min(axis=1) if self.cpu else d2.amin(dim=1)
                        self.xp.minimum(out[a:b], self.xp.sqrt(nearest), out=out[a:b])
                    elif self.cpu:
                        out[a:b] += np.sqrt(d2, out=d2).sum(axis=1, dtype=np.float64)
                    else:
                        out[a:b] += d2.sqrt_().sum(dim=1, dtype=self.xp.float64)

            self.run(block)
        if reduce == "mean":
            out /= len(reference)
        return out

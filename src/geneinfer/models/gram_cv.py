"""Study-aware cross-validation of the Gram-based models from sums kept per group.

One pass over the data accumulates

* the sums of all rows and all targets (:class:`~geneinfer.models.gram.GramStats`), for the
  final fit on every training row, and
* per group, the same sums for a subset of the targets (the genes the cross-validation
  curve is scored on, see :func:`geneinfer.models.selection.score_gene_subset`).

A fold's training statistics are then the subset total minus its held-out groups' sums
(``GramStats -=``), and each held-out group's own centred moments give its score without
forming a prediction: with ``p = b'x``, the within-group ``cov(y, p) = b'c_xy,g``,
``var(p) = b'C_xx,g b`` and ``var(y) = c_yy,g`` (centring within the group is what makes the
score blind to study offsets). See :mod:`geneinfer.models.selection` for the folds and score.

Where the rows of a group are contiguous (studies concatenated, the usual layout), each run
of a group's rows is one block product whose columns are added to the total and, sliced, to
the group: the per-group sums cost no extra products. Interleaved groups fall back to the
block product plus a product of each group's gathered rows and subset columns.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
from scipy.linalg import lapack
from scipy.linalg.blas import get_blas_funcs

from geneinfer.models.base import arrays_under
from geneinfer.models.gram import (
    BlockProducts,
    CenteredGram,
    Eigenbasis,
    GramStats,
    Precision,
    blas_threads,
    default_block_rows,
    one_blas_thread,
)
from geneinfer.models.selection import (
    MIN_GROUP_ROWS,
    GroupFolds,
    constant_floor,
    zscore_mse_from_moments,
)

#: a block whose runs of same-group rows average at least this many rows is processed one
#: run at a time (one product per run); below, gathered per group
MIN_RUN_ROWS = 512


class GroupedGramStats:
    """Sums of all rows (all targets) and per-group sums (targets ``genes``) in one pass.

    Each group a fold holds out has its own sums; the rows of every other group (too small
    to score, or not scored) share one pooled part, so memory grows with the scored groups
    only.

    Parameters
    ----------
    folds
        The folds (their ``codes`` are the group codes rows carry, ``0..n_groups-1``).
    genes
        Target columns kept per group (sorted indices).
    precision
        Dtype of the block products (see :class:`~geneinfer.models.gram.GramStats`).
    """

    def __init__(self, folds: GroupFolds, genes: np.ndarray, *, precision: Precision) -> None:
        self.precision = precision
        self.folds = folds
        self.genes = np.asarray(genes, dtype=np.int64)
        self.total = GramStats(precision=precision)
        scored = np.unique(np.concatenate(folds.folds)) if folds.folds else np.zeros(0, int)
        #: part index of each group code: its own for scored groups, the pooled one else
        self.part_of = np.full(folds.n_groups, len(scored), dtype=np.int64)
        self.part_of[scored] = np.arange(len(scored))
        self.parts: list[GramStats | None] = [None] * (len(scored) + 1)
        self._all_genes: bool | None = None
        self._subset_total: GramStats | None = None
        self._block_cross: np.ndarray | None = None  # sum of one block's run products

    def _cols(self) -> np.ndarray | None:
        return None if self._all_genes else self.genes

    def _part(self, k: int) -> GramStats:
        part = self.parts[k]
        if part is None:
            shift_y = self.total.shift_y[self.genes]
            part = GramStats(precision=self.precision, shift_x=self.total.shift_x,
                             shift_y=shift_y)
            self.parts[k] = part
        return part

    def update(self, X: np.ndarray, Y: np.ndarray, codes: np.ndarray, *, where: str) -> None:
        """Add one block; ``codes`` holds the group code of each of its rows."""
        if X.shape[0] == 0:
            return
        if self._all_genes is None:
            self._all_genes = bool(np.array_equal(self.genes, np.arange(Y.shape[1])))
        if self.total.shift_x is None:  # every sum shares the first block's means
            self.total.shift_x = X.mean(axis=0, dtype=np.float64)
            self.total.shift_y = Y.mean(axis=0, dtype=np.float64)
        parts = self.part_of[np.asarray(codes, dtype=np.int64)]
        runs = list(_runs(parts))
        if X.shape[0] / len(runs) >= MIN_RUN_ROWS:
            self._update_runs(X, Y, runs, where)
            return
        self.total.update(X, Y, where=where)
        for k in np.unique(parts):
            rows = np.flatnonzero(parts == k)
            y_rows = Y[rows] if self._all_genes else Y[np.ix_(rows, self.genes)]
            self._part(int(k)).update(X[rows], y_rows, where=where)

    def _update_runs(
        self, X: np.ndarray, Y: np.ndarray, runs: list[tuple[int, int, int]], where: str
    ) -> None:
        """One product per run of a group's rows: its column slice goes to the group, and
        the runs' products are summed (in the product dtype) before they are added to the
        float64 total once per block (each addition to the total is a pass over the
        float64 ``p x T`` sums)."""
        block: BlockProducts | None = None
        for start, stop, g in runs:
            prod = self.total.block_products(X[start:stop], Y[start:stop], where=where)
            self._part(g).add_products(prod, self._cols())
            if block is None:
                buf = self._block_cross
                if buf is None or buf.shape != prod.cross.shape:
                    buf = self._block_cross = np.empty_like(prod.cross)
                np.copyto(buf, prod.cross)
                block = replace(prod, gram=prod.gram.astype(np.float64), cross=buf,
                                syy=prod.syy.copy())
            else:
                block.m += prod.m
                block.gram += prod.gram
                block.cross += prod.cross
                block.syy += prod.syy
        self.total.add_products(block)

    def release_workspace(self) -> None:
        """Free the block buffers of every sum."""
        self.total.release_workspace()
        self._block_cross = None
        for part in self.parts:
            if part is not None:
                part.release_workspace()

    # ------------------------------------------------------------------ folds
    def subset_total(self) -> GramStats:
        """Sums of every row for the scored targets."""
        if self._subset_total is None:
            total = GramStats(precision=self.precision)
            for part in self.parts:
                if part is not None:
                    total += part
            self._subset_total = total
        return self._subset_total

    def train_gram(self, held: np.ndarray) -> CenteredGram:
        """Centred statistics (scored targets) of every row outside groups ``held``."""
        train = self.subset_total().copy()
        for g in held:
            part = self.parts[self._own_part(int(g))]
            if part is not None:
                train -= part
        return train.centered()

    def _own_part(self, g: int) -> int:
        k = int(self.part_of[g])
        if k == len(self.parts) - 1:
            raise ValueError(f"group {g} is not held out by any fold (its rows are pooled)")
        return k

    def group_rows(self, g: int) -> int:
        """Rows summed for held-out group ``g``."""
        part = self.parts[self._own_part(g)]
        return 0 if part is None else int(part.n)

    def group_gram(self, g: int) -> CenteredGram:
        """Group ``g``'s statistics centred about its own means (scored targets)."""
        part = self.parts[self._own_part(g)]
        if part is None:
            raise ValueError(f"group {g} has no rows")
        return part.centered()

    def standardize_(self, mean_x: np.ndarray, scale_x: np.ndarray, mean_y: np.ndarray,
                     scale_y: np.ndarray) -> GroupedGramStats:
        """Every sum turned into that of the standardised variables
        (:meth:`GramStats.standardize_`; the parts with the scored targets' vectors)."""
        self.total.standardize_(mean_x, scale_x, mean_y, scale_y)
        for part in self.parts:
            if part is not None:
                part.standardize_(mean_x, scale_x, mean_y[self.genes], scale_y[self.genes])
        self._subset_total = None
        return self

    def state(self) -> dict[str, np.ndarray]:
        """All sums as arrays (``total.*``, ``part<k>.*``), for a checkpoint."""
        out = {f"total.{k}": v for k, v in self.total.state().items()}
        for k, part in enumerate(self.parts):
            if part is not None:
                out.update({f"part{k}.{key}": v for key, v in part.state().items()})
        return out

    def load_state(self, arrays: dict[str, np.ndarray]) -> GroupedGramStats:
        """Restore sums saved by :meth:`state` with the same folds and genes."""
        self.total.load_state(arrays_under(arrays, "total."))
        for k in range(len(self.parts)):
            saved = arrays_under(arrays, f"part{k}.")
            if saved:
                self.parts[k] = GramStats(precision=self.precision).load_state(saved)
        self._subset_total = None
        return self

    def variance_floor(self) -> np.ndarray:
        """Per-row variance of each scored target below which it counts as constant."""
        gram = self.subset_total().centered()
        return constant_floor(gram.cyy / max(gram.n, 1))


def _runs(codes: np.ndarray) -> Iterator[tuple[int, int, int]]:
    """``(start, stop, code)`` of each run of equal consecutive codes."""
    edges = np.flatnonzero(np.diff(codes)) + 1
    starts = np.concatenate([[0], edges])
    stops = np.concatenate([edges, [len(codes)]])
    for a, b in zip(starts, stops):
        yield int(a), int(b), int(codes[a])


def grouped_stats(
    X: np.ndarray,
    Y: np.ndarray,
    folds: GroupFolds,
    genes: np.ndarray,
    *,
    precision: Precision,
    block_rows: int | None = None,
) -> GroupedGramStats:
    """Accumulate :class:`GroupedGramStats` of in-memory ``X``, ``Y`` in row blocks."""
    stats = GroupedGramStats(folds, genes, precision=precision)
    step = block_rows or default_block_rows(Y.shape[1])
    for start in range(0, X.shape[0], step):
        xb, yb = X[start : start + step], Y[start : start + step]
        stats.update(xb, yb, folds.codes[start : start + step],
                     where=f"rows {start + 1}-{start + len(xb)}")
    stats.release_workspace()
    return stats


@dataclass
class HeldOutGroup:
    """A held-out group's code and its own centred statistics."""

    code: int
    gram: CenteredGram


def iter_folds(stats: GroupedGramStats) -> Iterator[tuple[CenteredGram, list[HeldOutGroup]]]:
    """Per fold of ``stats.folds``: the training statistics and the held-out groups (scored
    targets)."""
    for held in stats.folds.folds:
        # a group planned from its size may have lost rows (incomplete profiles out of core)
        kept = [int(g) for g in held if stats.group_rows(int(g)) >= MIN_GROUP_ROWS]
        groups = [HeldOutGroup(g, stats.group_gram(g)) for g in kept]
        yield stats.train_gram(held), groups


def score_coefficients(
    coef: np.ndarray, group: CenteredGram, floor: np.ndarray, *, precision: Precision
) -> np.ndarray:
    """Within-group z-scored MSE of linear predictions ``b'x`` on one held-out group.

    Parameters
    ----------
    coef
        (p, H, S) C-ordered: coefficients of H candidates for the S scored targets, in the
        dtype of ``precision`` (the dtype of the products).
    group
        The group's statistics centred about its own means.
    floor
        (S,) per-row variance below which a target counts as constant.
    precision
        ``"float32"`` or ``"float64"``.

    Returns
    -------
    ndarray (H, S)
        ``2 (1 - r)`` per candidate and target; NaN for targets constant in the group.

    Notes
    -----
    ``var(p) = b'C_xx,g b`` for every column is the expensive step (p x p by p x HS). With
    the Cholesky factor ``C_xx,g = L L'`` it is ``||L'b||^2``, a triangular product at half
    the flops of a general one (measured 0.15 s against 0.28 s for 943 x 13,000); a group
    with fewer rows than landmarks (singular ``C_xx,g``) takes the general product.
    """
    p, h, s = coef.shape
    dtype = np.dtype(precision)
    flat = np.ascontiguousarray(coef, dtype=dtype).reshape(p, h * s)
    factor = _cholesky_lower(group.cxx)
    with blas_threads(float(p) * p * h * s):
        if factor is not None:
            trmm = get_blas_funcs("trmm", dtype=dtype)
            # flat.T is Fortran-ordered (HS x p): BLAS reads it in place; out = flat' L
            out = trmm(1.0, factor.astype(dtype), flat.T, side=1, lower=1)
            var_p = np.einsum("kp,kp->k", out, out)
        else:
            var_p = np.einsum("pk,pk->k", flat, group.cxx.astype(dtype) @ flat)
    cov = np.einsum("phs,ps->hs", flat.reshape(p, h, s), group.cxy.astype(dtype))
    return zscore_mse_from_moments(cov, var_p.reshape(h, s), group.cyy[None, :],
                                   floor_y=floor[None, :] * group.n)


class RidgeFoldScorer:
    """Within-group moments of ridge predictions for every alpha of a grid, per group.

    With the fold's ``C_xx = V diag(d) V'`` and ``Q = V'c_xy``, ridge with penalty ``a``
    predicts through ``b_a = V diag(s_a) Q``, ``s_a,k = 1 / (d_k + a)``. For a held-out
    group with ``M = V'C_xx,g V`` and ``R = V'c_xy,g``::

        cov_a  = sum_k s_a,k Q_k R_k
        var_a  = sum_kl s_a,k s_a,l Q_k Q_l M_kl

    and the partial fractions ``s_k s_l = (s_k - s_l) / (d_l - d_k)`` (``k != l``) turn the
    double sum into ``sum_k s_k^2 Q_k^2 M_kk + 2 sum_k s_k Q_k H_k`` with
    ``H = (M o D) Q``, ``D_kl = 1 / (d_l - d_k)``, which does not depend on ``a``. So a group
    costs ``M`` (2 p^3), ``R`` and ``H`` (p^2 S each) whatever the number of alphas, instead
    of a p^2 S product per alpha. Pairs of eigenvalues closer than ``1e-6`` relative
    (where the fraction would lose digits) are summed directly, per alpha.
    """

    #: relative gap below which a pair of eigenvalues is summed directly
    NEAR = 1e-6

    def __init__(self, basis: Eigenbasis, alphas: np.ndarray) -> None:
        kept = np.flatnonzero(basis.keep)
        self.V = basis.V[:, kept]
        self.Q = basis.Q[kept]
        d = basis.d[kept]
        self.scale = 1.0 / (d[None, :] + alphas[:, None])  # (H, r)
        gap = d[None, :] - d[:, None]  # d_l - d_k
        near = np.abs(gap) <= self.NEAR * np.maximum.outer(d, d)
        with np.errstate(divide="ignore"):
            self.D = np.where(near, 0.0, 1.0 / np.where(near, 1.0, gap))
        np.fill_diagonal(near, False)
        self.near = np.argwhere(np.triu(near))  # (pairs, 2), k < l

    def moments(self, group: CenteredGram) -> tuple[np.ndarray, np.ndarray]:
        """(cov, var) of truth and prediction within ``group``, each (H, S)."""
        V, Q, s = self.V, self.Q, self.scale
        with blas_threads(2.0 * V.shape[0] ** 2 * V.shape[1]):
            M = V.T @ (group.cxx @ V)
        with blas_threads(2.0 * V.size * Q.shape[1]):
            R = V.T @ group.cxy
            H = (M * self.D) @ Q
        # (n_alphas x r) by (r x S): small products, on one thread (2 spinning threads
        # made them 5-8x slower on a busy machine)
        with blas_threads(2.0 * s.size * Q.shape[1]):
            cov = s @ (Q * R)
            var = (s * s) @ (Q * Q * np.diag(M)[:, None]) + 2.0 * (s @ (Q * H))
        for k, j in self.near:  # both (k, j) and (j, k)
            var += 2.0 * np.outer(s[:, k] * s[:, j], M[k, j] * Q[k] * Q[j])
        return cov, np.maximum(var, 0.0)


def _cholesky_lower(cxx: np.ndarray) -> np.ndarray | None:
    """Lower Cholesky factor of ``cxx`` (float64), or ``None`` if it is not positive definite.

    On one BLAS thread: 10-40 ms for 943 x 943, against more than a second with two
    spinning threads on a busy machine.
    """
    with one_blas_thread():
        factor, info = lapack.dpotrf(cxx, lower=1, clean=1)
    return factor if info == 0 else None

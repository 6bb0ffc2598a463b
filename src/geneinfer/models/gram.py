"""Sufficient statistics of many least-squares problems sharing one design matrix.

Every classical model here (OLS, ridge, lasso, KNN-GE, PCR) needs only the centred Gram
matrices ``C_xx = X_c'X_c`` (landmarks x landmarks), ``C_xy = X_c'Y_c`` (landmarks x
targets), the per-target sums of squares ``diag(Y_c'Y_c)``, the means and the count.
:class:`GramStats` accumulates them over row blocks, so a fit touches each sample once and
the data never has to be in memory at once (``partial_fit`` / ``fit_blocks``).

Precision versus speed
----------------------
The cost is the ``X'Y`` product (``2 n p T`` flops). In float32 BLAS it runs about twice as
fast as in float64, but raw log2 expression (values ~10, spread ~1) loses digits to
cancellation when sums of products are formed around zero. So the landmarks of each block
are *shifted* by a fixed per-gene reference (the means of the first block) before the
float32 product, the per-block products are summed in float64, and the exact centring is
applied at the end with the rank-one correction of the shifted-data algorithm.

The targets are shifted the same way in exact arithmetic, but not in memory: when they are
already in the product dtype, ``X_s'Y`` is formed from the caller's block as it is and
``X_s'(Y - s_y) = X_s'Y - (X_s'1) s_y'`` is applied to the float64 sums. A shifted copy of
a D-GEX-sized block (640 MB) costs more than the product saves on a machine where fresh
memory is slow to fault in (measured: 3.7 s of a 16.9 s fit). Against a float64 fit the
predictions differ by at most 9e-6 log2 units this way (4e-6 with shifted copies; the
float64 fit and scikit-learn's differ by 1.7e-4). ``precision="float64"`` does every
product in float64 instead (about 2x slower); ``benchmarks/bench_linear.py`` measures both.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import linalg
from scipy.linalg.blas import get_blas_funcs

from geneinfer.errors import GeneinferError, InputFormatError

Precision = Literal["float32", "float64"]

#: rows per block when an in-memory matrix is processed in pieces: the shifted copy of a
#: target block is at most ~640 MB. Each block's (landmarks x targets) product is added to
#: the float64 sums. At the D-GEX shapes on 2 cores, blocks of 16,384 rows ran the X'Y
#: products at 142 GFLOP/s against 132 for 7,000 rows (the GEMM has a longer reduction to
#: amortise its packing) and the fewer float64 additions save ~0.3 s; OLS 15.0 s vs 16.2 s
_TARGET_BLOCK_BYTES = 640 * 2**20


#: rows of a target block processed together while they are in cache (~2 MB): measured
#: fastest of 1, 2.4 and 4.8 MB chunks for the shift-and-square pass
_CACHE_CHUNK_BYTES = 2 * 2**20

#: below this many flops a matrix product runs on one BLAS thread
SMALL_FLOPS = 5e8


class NonFiniteValuesError(GeneinferError, ValueError):
    """A data block holds NaN or infinite values (also a ``ValueError``, as scikit-learn's
    estimators raise for such input)."""

    @classmethod
    def describe(cls, X: np.ndarray, Y: np.ndarray, where: str) -> NonFiniteValuesError:
        """The error for a block whose products came out non-finite (counts the values)."""
        parts = []
        for arr, what in ((X, "landmark"), (Y, "target")):
            bad = int(np.count_nonzero(~np.isfinite(arr)))
            if bad:
                parts.append(f"{bad} missing or infinite {what} values")
        if not parts:  # finite, but squares overflow the product dtype
            return cls(f"{where}: values too large for the products (|value| > 1e19); "
                       "expected expression values on a log2 or linear scale")
        return cls(f"{where}: {' and '.join(parts)}; impute or drop them before fitting "
                   "(expected finite numbers)")


@functools.lru_cache(maxsize=1)
def _controller():  # created once: building it scans the loaded libraries
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def one_blas_thread() -> contextlib.AbstractContextManager:
    """Run LAPACK solvers (eigh, eigvalsh) on one BLAS thread; see :func:`eigenbasis`."""
    return _controller().limit(limits=1, user_api="blas")


def blas_threads(flops: float) -> contextlib.AbstractContextManager:
    """One BLAS thread for small products, the default for large ones.

    Threads cannot speed up products of a few hundred Mflop, and on a busy machine their
    spin-waiting makes each small product ~10x slower (measured: 100x200 by 200x200 took
    10 ms with 2 threads, 0.9 ms with 1, under load).
    """
    if flops < SMALL_FLOPS:
        return _controller().limit(limits=1, user_api="blas")
    return contextlib.nullcontext()


@functools.lru_cache(maxsize=2)
def _syrk(dtype: np.dtype):
    return get_blas_funcs("syrk", dtype=dtype)


def _rank_one_update(a: np.ndarray, x: np.ndarray, y: np.ndarray, *, alpha: float) -> None:
    """``a += alpha * outer(x, y)`` in place for a C-ordered float64 ``a`` (BLAS ``dger``)."""
    ger = get_blas_funcs("ger", dtype=np.float64)
    # a.T is Fortran-ordered: dger updates it in place, as outer(y, x)
    out = ger(alpha, np.asarray(y, np.float64), np.asarray(x, np.float64), a=a.T,
              overwrite_a=True)
    if not np.shares_memory(out, a):  # not updated in place (unexpected layout)
        a += alpha * np.outer(x, y)


def default_block_rows(n_targets: int) -> int:
    """Rows per block so that one float32 block of ``n_targets`` columns is <= ~640 MB."""
    return int(max(256, min(16384, _TARGET_BLOCK_BYTES // (4 * max(1, n_targets)))))


@dataclass
class CenteredGram:
    """Centred second moments of a data set (the result of :meth:`GramStats.centered`)."""

    n: int
    mean_x: np.ndarray  # (p,)
    mean_y: np.ndarray  # (T,)
    cxx: np.ndarray  # (p, p) sum over samples of (x - mean_x)(x - mean_x)'
    cxy: np.ndarray  # (p, T)
    cyy: np.ndarray  # (T,) sum of (y - mean_y)^2


@dataclass
class Moments:
    """Second moments of a data set about given reference vectors (for validation error)."""

    n: int
    sxx: np.ndarray
    sxy: np.ndarray
    syy: np.ndarray


@dataclass
class BlockProducts:
    """Products of one block about the shifts (see :meth:`GramStats.block_products`)."""

    m: int
    gram: np.ndarray  # (p + 1, p + 1) upper triangle: [X_s 1]'[X_s 1]
    cross: np.ndarray  # (p + 1, T): [X_s 1]' Y_s (or [X_s 1]' Y when ``raw``)
    syy: np.ndarray  # (T,) float64 sums of squares of Y - shift_y
    raw: bool  # cross was formed from unshifted targets
    shift_x: np.ndarray  # (p,) the shifts the products are about
    shift_y: np.ndarray  # (T,)


class GramStats:
    """Running sums ``n``, ``sum x``, ``sum y``, ``X'X``, ``X'Y``, ``diag(Y'Y)`` over row blocks.

    Values are accumulated about a fixed shift (the first block's means, or the shifts
    given) in float64; each block's products run in ``precision``.

    Parameters
    ----------
    precision
        ``"float32"`` (default) or ``"float64"``: dtype of the per-block matrix products.
    shift_x, shift_y
        Reference vectors; default: the means of the first block. Two ``GramStats`` with the
        same shifts can be added with ``+=``.
    """

    def __init__(
        self,
        *,
        precision: Precision = "float32",
        shift_x: np.ndarray | None = None,
        shift_y: np.ndarray | None = None,
    ) -> None:
        if precision not in ("float32", "float64"):
            raise GeneinferError(f"precision must be 'float32' or 'float64', got {precision!r}")
        self.precision = precision
        self.dtype = np.dtype(precision)
        self.n = 0
        self.shift_x = None if shift_x is None else np.asarray(shift_x, dtype=np.float64)
        self.shift_y = None if shift_y is None else np.asarray(shift_y, dtype=np.float64)
        self.sx: np.ndarray | None = None
        self.sy: np.ndarray | None = None
        self.sxx: np.ndarray | None = None
        self.sxy: np.ndarray | None = None
        self.syy: np.ndarray | None = None
        # work arrays reused between blocks (see :meth:`_buffer`)
        self._buffers: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ accumulation
    @property
    def n_features(self) -> int | None:
        return None if self.sxx is None else self.sxx.shape[0]

    @property
    def n_targets(self) -> int | None:
        return None if self.syy is None else self.syy.shape[0]

    def _init_sums(self, p: int, t: int) -> None:
        self.sx = np.zeros(p)
        self.sy = np.zeros(t)
        # Fortran order like the syrk results added to it: adding a transposed 7 MB
        # matrix element by element costs 20-50 ms a block
        self.sxx = np.zeros((p, p), order="F")
        self.sxy = np.zeros((p, t))
        self.syy = np.zeros(t)

    def update(self, X: np.ndarray, Y: np.ndarray, *, where: str = "block") -> GramStats:
        """Add the rows of one block (``X``: n x p, ``Y``: n x T). Returns ``self``.

        Missing or infinite values raise :class:`NonFiniteValuesError` and leave the sums
        unchanged. The check costs nothing: a NaN or infinity anywhere in the block makes
        the diagonal of the block's ``X'X`` or its target sums of squares non-finite, so
        only those ``p + T`` numbers are inspected (a separate ``isfinite`` scan of a
        D-GEX-sized ``Y`` takes 0.2-0.4 s).
        """
        X, Y = self._check_block(X, Y, where)
        if X.shape[0] == 0:
            return self
        self.add_products(self.block_products(X, Y, where=where))
        return self

    def _check_block(
        self, X: np.ndarray, Y: np.ndarray, where: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """Both blocks as 2-D arrays of matching rows (and columns of earlier blocks)."""
        X = np.asarray(X)
        Y = np.asarray(Y)
        if Y.ndim == 1:
            Y = Y[:, None]
        if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
            raise GeneinferError(
                f"{where}: landmark block {X.shape} and target block {Y.shape} do not match "
                "(expected 2-D arrays with the same number of rows)"
            )
        if self.sxx is not None and X.shape[0] and (X.shape[1] != self.n_features
                                                    or Y.shape[1] != self.n_targets):
            raise GeneinferError(
                f"{where}: {X.shape[1]} landmarks and {Y.shape[1]} targets, but earlier blocks "
                f"had {self.n_features} and {self.n_targets}"
            )
        return X, Y

    def block_products(self, X: np.ndarray, Y: np.ndarray, *, where: str = "block"
                       ) -> BlockProducts:
        """The products of one non-empty block about this object's shifts (sums unchanged).

        Before the first block is added the shifts are that block's means.
        :meth:`add_products` adds the products;
        :class:`geneinfer.models.gram_cv.GroupedGramStats` also adds a column slice of them
        to a group's sums, so one product serves both.
        """
        X, Y = self._check_block(X, Y, where)
        # the first block's means become the shifts once its sums are added
        with np.errstate(invalid="ignore", over="ignore"):
            shift_x = X.mean(axis=0, dtype=np.float64) if self.shift_x is None else self.shift_x
            shift_y = Y.mean(axis=0, dtype=np.float64) if self.shift_y is None else self.shift_y
        m, p = X.shape
        t = Y.shape[1]
        # landmarks shifted, plus a column of ones: one product then also yields the
        # column sums (no separate pass over the large target block)
        xa = self._buffer("_xa", (m, p + 1))
        work = np.promote_types(X.dtype, self.dtype)
        raw = Y.dtype == self.dtype  # the product can read the caller's targets as they are
        # inf - inf and overflowing squares are reported below, not warned about here
        with np.errstate(invalid="ignore", over="ignore"):
            np.subtract(X, shift_x.astype(work), out=xa[:, :p], dtype=work, casting="unsafe")
            xa[:, p] = 1.0
            ys, syy = self._shift_and_square(Y, shift_y, keep=not raw)
        with blas_threads(2.0 * m * (p + 1) * (p + t)):
            # X'X by a symmetric rank-k update (half the flops of a general product);
            # xa.T is Fortran-ordered, so BLAS reads it without a copy
            with np.errstate(invalid="ignore", over="ignore"):
                gram = _syrk(self.dtype)(1.0, xa.T, trans=0)  # upper triangle
            if not (np.isfinite(np.diagonal(gram)).all() and np.isfinite(syy).all()):
                raise NonFiniteValuesError.describe(X, Y, where)
            cross = self._buffer("_cross", (p + 1, t))
            np.matmul(xa.T, ys, out=cross)
        return BlockProducts(m, gram, cross, syy, raw, shift_x, shift_y)

    def add_products(self, prod: BlockProducts, cols: np.ndarray | None = None) -> None:
        """Add a block's products (of target columns ``cols``, default all) to the sums.

        The first products added fix the shifts; later ones must be about the same shifts
        (``shift_y[cols]`` for a column slice).
        """
        cross = prod.cross if cols is None else prod.cross[:, cols]
        syy = prod.syy if cols is None else prod.syy[cols]
        shift_y = prod.shift_y if cols is None else prod.shift_y[cols]
        p = prod.gram.shape[0] - 1
        if self.sxx is None:
            self._init_sums(p, cross.shape[1])
            if self.shift_x is None:
                self.shift_x = prod.shift_x
            if self.shift_y is None:
                self.shift_y = shift_y
        self.n += prod.m
        self.syy += syy
        self.sxx += prod.gram[:p, :p]
        self.sx += prod.gram[:p, p]
        self.sxy += cross[:p]
        self.sy += cross[p]
        if prod.raw:
            # the product was about 0, not shift_y: sum (x - s_x)(y - s_y)' is
            # X_s'Y - (sum of x - s_x) s_y', a rank-one update in place (a float64
            # (p x T) temporary would be another 72 MB of fresh memory per block)
            _rank_one_update(self.sxy, prod.gram[:p, p], shift_y, alpha=-1.0)
            self.sy -= prod.m * shift_y

    def _buffer(self, name: str, shape: tuple[int, int]) -> np.ndarray:
        """A work array of at least ``shape`` in the product dtype, kept between blocks.

        Fresh arrays of tens to hundreds of MB per block cost page faults that, on a
        virtual machine, take as long as a good part of the product.
        """
        buf = self._buffers.get(name)
        if buf is None or buf.shape[0] < shape[0] or buf.shape[1:] != shape[1:]:
            buf = np.empty(shape, dtype=self.dtype)
            self._buffers[name] = buf
        return buf[: shape[0]]

    def _shift_and_square(
        self, Y: np.ndarray, shift_y: np.ndarray, *, keep: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """``Y - shift_y`` in the product dtype and its per-column sums of squares (float64).

        A few cache-sized rows at a time, so that the squares are summed while the rows are
        still in cache: one pass over the block instead of three (measured 0.17 s -> 0.06 s
        per 7,000 x 9,520 block). ``keep=True`` writes the shifted block into a buffer kept
        between blocks and returns it (for targets in another dtype than the product's,
        which must be converted anyway); ``keep=False`` only sums, through a small scratch
        array, and returns ``Y`` itself. Each chunk's squares are summed in the product
        dtype (at most 64 terms) and the chunk sums added in float64.
        """
        m, t = Y.shape
        # <= 64 rows: each chunk's float32 sum of squares then errs by < 64 eps relative
        step = int(np.clip(_CACHE_CHUNK_BYTES // (self.dtype.itemsize * max(1, t)), 8, 64))
        out = self._buffer("_targets", (m, t)) if keep else self._buffer("_scratch", (step, t))
        work = np.promote_types(Y.dtype, self.dtype)
        shift = shift_y.astype(work)
        syy = np.zeros(t)
        for start in range(0, m, step):
            rows = Y[start : start + step]
            chunk = out[start : start + len(rows)] if keep else out[: len(rows)]
            # subtract in the wider dtype, round once when storing
            np.subtract(rows, shift, out=chunk, dtype=work, casting="unsafe")
            syy += np.einsum("ij,ij->j", chunk, chunk)
        return (out if keep else Y), syy

    def release_workspace(self) -> None:
        """Free the block buffers (call when no more blocks will be added soon)."""
        self._buffers = {}

    def __iadd__(self, other: GramStats) -> GramStats:
        return self._combine(other, 1.0)

    def __isub__(self, other: GramStats) -> GramStats:
        """Remove the rows ``other`` summed (e.g. a held-out group from the total)."""
        return self._combine(other, -1.0)

    def _combine(self, other: GramStats, sign: float) -> GramStats:
        if other.n == 0:
            return self
        if self.n == 0 and sign > 0:
            self.__dict__.update({k: (v.copy() if isinstance(v, np.ndarray) else v)
                                  for k, v in other.__dict__.items() if k != "_buffers"})
            return self
        if not (np.array_equal(self.shift_x, other.shift_x)
                and np.array_equal(self.shift_y, other.shift_y)):
            raise ValueError("GramStats with different shifts cannot be added or subtracted")
        if sign < 0 and other.n > self.n:
            raise ValueError(f"cannot remove {other.n} rows from sums of {self.n}")
        self.n += int(sign) * other.n
        for key in ("sx", "sy", "sxx", "sxy", "syy"):
            setattr(self, key, getattr(self, key) + sign * getattr(other, key))
        return self

    def copy(self) -> GramStats:
        """An independent copy of the sums (no work buffers)."""
        out = GramStats(precision=self.precision)
        out += self
        return out

    _STATE = ("shift_x", "shift_y", "sx", "sy", "sxx", "sxy", "syy")

    def state(self) -> dict[str, np.ndarray]:
        """The sums as arrays (for a checkpoint); empty before the first block."""
        if self.n == 0 or self.sxx is None:
            return {}
        return {"n": np.asarray(self.n), **{k: np.asarray(getattr(self, k))
                                            for k in self._STATE}}

    def load_state(self, arrays: dict[str, np.ndarray]) -> GramStats:
        """Restore sums saved by :meth:`state` (in place; returns ``self``)."""
        if "n" not in arrays:
            return self
        self.n = int(arrays["n"])
        for k in self._STATE:
            setattr(self, k, np.array(arrays[k], dtype=np.float64))
        return self

    def standardize_(self, mean_x: np.ndarray, scale_x: np.ndarray, mean_y: np.ndarray,
                     scale_y: np.ndarray) -> GramStats:
        """Turn the sums into those of ``(x - mean_x) / scale_x`` and ``(y - mean_y) / scale_y``
        (in place; returns ``self``). Exact: each variable only changes origin and scale, so
        the sums about the shift are divided by the scales and the shift moves with them.
        Sums standardised with the same vectors can still be added and subtracted."""
        if self.shift_x is None or self.sxx is None:
            return self
        sx = np.asarray(scale_x, dtype=np.float64)
        sy = np.asarray(scale_y, dtype=np.float64)
        self.shift_x = (self.shift_x - mean_x) / sx
        self.shift_y = (self.shift_y - mean_y) / sy
        self.sx = self.sx / sx
        self.sy = self.sy / sy
        self.sxx = self.sxx / sx[:, None]
        self.sxx /= sx[None, :]
        self.sxy = self.sxy / sx[:, None]
        self.sxy /= sy[None, :]
        self.syy = self.syy / sy**2
        return self

    # ------------------------------------------------------------------ results
    def _sxx_full(self) -> np.ndarray:
        """``sxx`` holds the upper triangle (from syrk); mirror it."""
        upper = np.triu(self.sxx)
        return upper + np.triu(upper, 1).T

    def centered(self) -> CenteredGram:
        """Means and centred second moments of all rows seen so far."""
        if self.n == 0 or self.sxx is None:
            raise GeneinferError("no samples were given to fit (expected at least 2 rows)")
        n = self.n
        dx = self.sx / n
        dy = self.sy / n
        cxx = self._sxx_full() - n * np.outer(dx, dx)
        # in place: (p x T) float64 temporaries cost ~0.1 s each at the D-GEX shapes
        cxy = np.outer(dx, -n * dy)
        cxy += self.sxy
        cyy = np.maximum(self.syy - n * dy * dy, 0.0)
        return CenteredGram(n, self.shift_x + dx, self.shift_y + dy, cxx, cxy, cyy)

    def moments_about(self, mean_x: np.ndarray, mean_y: np.ndarray) -> Moments:
        """Second moments about ``mean_x``/``mean_y`` (e.g. a training set's means)."""
        n = self.n
        ax = self.shift_x - mean_x  # x - m = (x - s) + a
        ay = self.shift_y - mean_y
        sxx = self._sxx_full() + np.outer(self.sx, ax)
        sxx += np.outer(ax, self.sx) + n * np.outer(ax, ax)
        sxy = self.sxy + np.outer(self.sx, ay) + np.outer(ax, self.sy) + n * np.outer(ax, ay)
        syy = self.syy + 2 * ay * self.sy + n * ay * ay
        return Moments(n, sxx, sxy, syy)


# ---------------------------------------------------------------------- eigenbasis
@dataclass
class Eigenbasis:
    """``C_xx = V diag(d) V'`` and the target projections ``Q = V' C_xy``.

    ``keep`` marks the eigenvalues above the noise floor; the others are treated as exact
    zeros (pseudo-inverse), which gives the minimum-norm least-squares solution.
    """

    d: np.ndarray  # (p,) ascending
    V: np.ndarray  # (p, p)
    Q: np.ndarray  # (p, T)
    keep: np.ndarray  # (p,) bool


def eigenbasis(gram: CenteredGram, *, rcond: float | None, precision: Precision) -> Eigenbasis:
    """Eigen-decompose ``C_xx`` once; every linear solution below reuses it."""
    d, V, keep = _eigen_kept(gram, rcond=rcond, precision=precision)
    with blas_threads(2.0 * V.size * gram.cxy.shape[1]):
        Q = V.T @ gram.cxy
    Q[~keep] = 0.0
    return Eigenbasis(d, V, Q, keep)


def pinv_solve(
    gram: CenteredGram, *, rcond: float | None, precision: Precision
) -> tuple[np.ndarray, int]:
    """Minimum-norm least-squares coefficients ``pinv(C_xx) C_xy`` (p x T) and the rank.

    Forms the p x p pseudo-inverse first, so only one p x p by p x T product is needed
    (``coef_from_eigen(eigenbasis(...))`` needs two; at the D-GEX shapes each is ~17 GFLOP
    in float64).
    """
    d, V, keep = _eigen_kept(gram, rcond=rcond, precision=precision)
    vk = V[:, keep]
    with blas_threads(2.0 * vk.size * V.shape[0]):
        pinv = (vk / d[keep]) @ vk.T
    with blas_threads(2.0 * pinv.size * gram.cxy.shape[1]):
        return pinv @ gram.cxy, int(keep.sum())


def _eigen_kept(
    gram: CenteredGram, *, rcond: float | None, precision: Precision
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eigenvalues (clipped at 0), eigenvectors and the mask of those above the noise floor."""
    # LAPACK's eigen-solvers are mostly level-2 BLAS: threads do not help them and on a
    # busy machine make them up to 25x slower (943 x 943: 0.3 s on 1 thread, up to 11 s
    # on 2 spinning threads); divide and conquer ("evd") was the fastest driver
    with one_blas_thread():
        d, V = linalg.eigh(gram.cxx, check_finite=False, driver="evd")
    d = np.maximum(d, 0.0)
    if rcond is None:
        # relative size of the rounding error in C_xx: float32 block products carry
        # ~1e-7 relative error, float64 ~1e-16; eigenvalues below a few times that
        # are indistinguishable from zero
        rcond = 1e-6 if precision == "float32" else 1e-12
    top = d.max() if d.size else 0.0
    keep = d > rcond * top if top > 0 else np.zeros_like(d, dtype=bool)
    return d, V, keep


def coef_from_eigen(basis: Eigenbasis, scale: np.ndarray) -> np.ndarray:
    """``V diag(scale) Q`` (p x T); ``scale`` is (p,) or (p, T), e.g. ``1/(d + alpha)``."""
    scale = np.where(basis.keep if scale.ndim == 1 else basis.keep[:, None], scale, 0.0)
    scaled = basis.Q * (scale[:, None] if scale.ndim == 1 else scale)
    with blas_threads(2.0 * basis.V.shape[0] * scaled.size):
        return basis.V @ scaled


def residual_ss_perp(basis: Eigenbasis, gram: CenteredGram) -> np.ndarray:
    """Per-target residual sum of squares of the OLS fit (the part no linear fit removes)."""
    dk = np.where(basis.keep, basis.d, 1.0)
    explained = np.einsum("jt,j->t", basis.Q**2, np.where(basis.keep, 1.0 / dk, 0.0))
    return np.maximum(gram.cyy - explained, 0.0)


def validation_sse(coef: np.ndarray, moments: Moments) -> np.ndarray:
    """Per-target squared error on a held-out set of ``y - mean_y - (x - mean_x)' b``.

    ``coef`` is (p, T); ``moments`` are the held-out set's moments about the training means.
    Computed from the Gram matrices, without forming predictions.
    """
    cross = np.einsum("pt,pt->t", coef, moments.sxy)
    with blas_threads(2.0 * coef.shape[0] * coef.size):
        quad = np.einsum("pt,pt->t", coef, moments.sxx @ coef)
    return np.maximum(moments.syy - 2 * cross + quad, 0.0)


# ---------------------------------------------------------------------- block sources
def iter_row_blocks(
    X: np.ndarray, Y: np.ndarray, block_rows: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(X[a:b], Y[a:b])`` pieces of two row-aligned arrays (numpy, memmap or h5py)."""
    n = X.shape[0]
    if Y.shape[0] != n:
        raise GeneinferError(
            f"{n} landmark rows but {Y.shape[0]} target rows (expected the same samples)"
        )
    t = Y.shape[1] if len(Y.shape) > 1 else 1
    step = block_rows or default_block_rows(t)
    for start in range(0, n, step):
        yield np.asarray(X[start : start + step]), np.asarray(Y[start : start + step])


class NpyRowReader:
    """Read row blocks of a 2-D ``.npy`` file with plain file reads (no memory map).

    Only one block is in memory at a time, and the address space used does not grow with
    the file (unlike ``np.load(mmap_mode="r")``), so it works under tight memory limits.
    Never unpickles: object arrays are refused.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            with open(self.path, "rb") as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
                else:
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
                self.offset = fh.tell()
        except (OSError, ValueError) as exc:
            raise InputFormatError(self.path, f"not a readable .npy file ({exc})") from None
        if len(shape) != 2 or fortran or dtype.hasobject:
            raise InputFormatError(
                self.path, f"array of shape {shape}, dtype {dtype}, fortran order {fortran}",
                expected="a 2-D C-ordered numeric array (samples x genes)",
            )
        self.shape: tuple[int, int] = (int(shape[0]), int(shape[1]))
        self.dtype = dtype

    def iter_blocks(self, block_rows: int) -> Iterator[np.ndarray]:
        n, m = self.shape
        row_bytes = m * self.dtype.itemsize
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            for start in range(0, n, block_rows):
                rows = min(block_rows, n - start)
                block = np.empty((rows, m), dtype=self.dtype)
                got = fh.readinto(memoryview(block).cast("B"))
                if got != rows * row_bytes:
                    raise InputFormatError(
                        self.path, "file is truncated", where=f"row {start + got // row_bytes}",
                        expected=f"{n} rows of {m} values",
                    )
                yield block


def npy_blocks(
    x_path: str | Path, y_path: str | Path, *, block_rows: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Row-aligned ``(X, Y)`` blocks from two ``.npy`` files (samples x landmarks/targets)."""
    rx, ry = NpyRowReader(x_path), NpyRowReader(y_path)
    if rx.shape[0] != ry.shape[0]:
        raise InputFormatError(
            y_path, f"{ry.shape[0]} rows", expected=f"{rx.shape[0]} rows like {x_path}"
        )
    step = block_rows or default_block_rows(ry.shape[1])
    yield from zip(rx.iter_blocks(step), ry.iter_blocks(step))


def accumulate(
    blocks: Iterable[tuple[np.ndarray, np.ndarray]],
    *,
    precision: Precision = "float32",
    stats: GramStats | None = None,
    progress: bool = False,
    total: int | None = None,
) -> GramStats:
    """Add every ``(X, Y)`` block to ``stats`` (a new :class:`GramStats` by default)."""
    stats = stats if stats is not None else GramStats(precision=precision)
    if progress:
        from tqdm.auto import tqdm

        blocks = tqdm(blocks, total=total, desc="Gram matrices", unit="block")
    for i, (xb, yb) in enumerate(blocks):
        stats.update(xb, yb, where=f"block {i + 1}")
    stats.release_workspace()
    return stats

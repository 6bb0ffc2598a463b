"""OLS, ridge and lasso against scikit-learn on real expression; block and out-of-core fits."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import sklearn.linear_model as sk
from classical_data import landmark_target_split

from geneinfer.errors import ConfigError, GeneinferError
from geneinfer.models.classical import split_stats, validation_mask
from geneinfer.models.gram import GramStats, iter_row_blocks, npy_blocks
from geneinfer.models.linear import Lasso, LinearRegression, Ridge


@pytest.fixture(scope="module")
def real(shared):
    """57 bladder-cancer arrays: 200 landmark probes -> 1,000 target probes (RMA log2)."""
    return landmark_target_split(shared)


def _new_profiles(X: np.ndarray) -> np.ndarray:
    """Profiles unlike the training rows: other samples shuffled per probe plus noise."""
    rng = np.random.default_rng(1)
    Z = np.column_stack([rng.permutation(col) for col in X.T])
    return Z + rng.normal(0, 0.3, Z.shape)


# ---------------------------------------------------------------------------- OLS
def test_ols_matches_sklearn_min_norm_when_fewer_samples_than_landmarks(real):
    X, Y = real
    ref = sk.LinearRegression().fit(X, Y)
    m = LinearRegression(precision="float64").fit(X, Y)
    assert m.coef_.shape == (1000, 200)
    assert m.rank_ == X.shape[0] - 1  # centred data of 57 samples
    np.testing.assert_allclose(m.coef_, ref.coef_, atol=2e-6 * np.abs(ref.coef_).max())
    np.testing.assert_allclose(m.intercept_, ref.intercept_, atol=1e-4)
    Xn = _new_profiles(X)
    np.testing.assert_allclose(m.predict(Xn), ref.predict(Xn), atol=1e-4)
    assert m.predict(Xn).dtype == np.float32


def test_ols_matches_sklearn_overdetermined(real):
    X, Y = real
    X = X[:, :30]
    ref = sk.LinearRegression().fit(X, Y)
    for precision, tol in (("float64", 1e-8), ("float32", 1e-4)):
        m = LinearRegression(precision=precision).fit(X, Y)
        scale = np.abs(ref.coef_).max()
        np.testing.assert_allclose(m.coef_, ref.coef_, atol=tol * scale, err_msg=precision)


@pytest.mark.parametrize("target_dtype", [np.float64, np.float32])
def test_float32_gram_is_accurate_on_uncentred_log2_data(real, target_dtype):
    """The shifted float32 products keep raw log2 values (~10) from losing digits.

    float64 targets are converted into a shifted float32 copy; float32 targets are read
    as they are and shifted through the rank-one correction of the sums.
    """
    X, Y = real
    X = X[:, :40] + 5.0  # make cancellation worse than real data
    ref = LinearRegression(precision="float64").fit(X, Y)
    fast = LinearRegression(precision="float32").fit(X, Y.astype(target_dtype))
    Xn = _new_profiles(X)
    err = np.abs(fast.predict(Xn) - ref.predict(Xn)).max()
    assert err < 2e-3 * Y.std()
    # the naive alternative (float32 products of unshifted data) is clearly worse
    xs, ys = X.astype(np.float32), Y.astype(np.float32)
    n = len(X)
    cxx = xs.T @ xs - n * np.outer(xs.mean(0), xs.mean(0))
    cxy = xs.T @ ys - n * np.outer(xs.mean(0), ys.mean(0))
    naive = np.linalg.solve(cxx.astype(np.float64), cxy.astype(np.float64)).T
    naive_err = np.abs(naive - ref.coef_).max()
    assert np.abs(fast.coef_ - ref.coef_).max() < naive_err / 10


def test_blocks_and_partial_fit_equal_in_memory_fit(real):
    X, Y = real
    for cls in (LinearRegression, Ridge):
        full = cls(precision="float64").fit(X, Y)
        blocks = cls(precision="float64").fit_blocks(iter_row_blocks(X, Y, 7))
        part = cls(precision="float64")
        for start in range(0, len(X), 20):
            part.partial_fit(X[start : start + 20], Y[start : start + 20])
        for other in (blocks, part):
            np.testing.assert_allclose(other.coef_, full.coef_, rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(other.intercept_, full.intercept_, rtol=1e-9, atol=1e-6)
            assert other.n_samples_seen_ == len(X)
        if cls is Ridge:
            assert blocks.alpha_ == pytest.approx(full.alpha_) == part.alpha_


def test_blocks_with_missing_values_name_the_block(real):
    X, Y = real
    Y = Y.copy()
    Y[30, 5] = np.nan
    with pytest.raises(GeneinferError, match=r"block 2: 1 missing .*target"):
        LinearRegression().fit_blocks(iter_row_blocks(X, Y, 25))
    with pytest.raises(GeneinferError, match="do not match"):
        LinearRegression().fit_blocks([(X[:10], Y[:9])])
    with pytest.raises(GeneinferError, match="earlier blocks"):
        LinearRegression().fit_blocks([(X[:10], Y[:10]), (X[10:20, :5], Y[10:20])])



@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_caught_by_the_products_and_leave_the_sums_intact(real, bad):
    X, Y = real
    stats = GramStats().update(X[:20], Y[:20])
    before = {k: getattr(stats, k).copy() for k in ("sx", "sy", "sxx", "sxy", "syy")}
    Xb = X[20:40].copy()
    Xb[3, 7] = bad
    with pytest.raises(ValueError, match=r"rows 21-40: 1 missing or infinite landmark"):
        stats.update(Xb, Y[20:40], where="rows 21-40")
    assert stats.n == 20
    for key, value in before.items():
        np.testing.assert_array_equal(getattr(stats, key), value)
    # the in-memory fit (no separate scan) names the rows; sklearn-style ValueError
    Xa = X.copy()
    Xa[45, 0] = bad
    with pytest.raises(GeneinferError, match=r"rows 41-57: 1 missing or infinite landmark"):
        LinearRegression(block_rows=20).fit(Xa, Y)
    Ya = Y.copy()
    Ya[2, 3] = bad
    with pytest.raises(ValueError, match="missing or infinite target"):
        Ridge().fit(X, Ya)


def test_finite_values_whose_squares_overflow_float32_are_refused(real):
    X, Y = real
    Y = Y.copy()
    Y[0, 0] = 1e30
    with pytest.raises(GeneinferError, match="too large"):
        LinearRegression().fit(X, Y)
    m = LinearRegression(precision="float64").fit(X, Y)  # float64 squares do not overflow
    assert np.isfinite(m.coef_).all()


OUT_OF_CORE = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    from geneinfer.models.gram import npy_blocks
    from geneinfer.models.linear import LinearRegression, Ridge
    x_path, y_path, out = sys.argv[1:4]
    data_bytes = int(sys.argv[4])
    LinearRegression().fit(np.ones((50, 3)) + np.arange(150).reshape(50, 3) ** 0.5,
                           np.arange(100.0).reshape(50, 2))
    for dt in (np.float32, np.float64):  # every BLAS thread allocates its buffer now
        np.ones((1500, 1500), dt) @ np.ones((1500, 1500), dt)
    vm = [l for l in open("/proc/self/status") if l.startswith("VmSize")][0]
    used = int(vm.split()[1]) * 1024
    limit = used + data_bytes // 3  # room for a third of the data, no more
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        np.load(y_path)
    except MemoryError:
        print("full load refused")
    ols = LinearRegression(precision="float64").fit_blocks(
        npy_blocks(x_path, y_path, block_rows=1500))
    ridge = Ridge(precision="float64").fit_blocks(npy_blocks(x_path, y_path, block_rows=1500))
    np.savez(out, ols=ols.coef_, ols_b=ols.intercept_, ridge=ridge.coef_, alpha=ridge.alpha_)
    print("fitted under", limit // 2**20, "MiB address space")
    """
)


def test_out_of_core_fit_under_memory_cap_equals_in_memory_fit(tmp_path):
    """Fit from .npy files in a process whose address space cannot hold the data."""
    rng = np.random.default_rng(0)
    n, p, t, r = 30000, 60, 800, 12
    factors = rng.normal(size=(n, r)).astype(np.float32)
    X = factors @ rng.normal(size=(r, p)).astype(np.float32) + rng.normal(
        0, 0.5, (n, p)).astype(np.float32) + 8.0
    Y = X @ (rng.normal(size=(p, t)).astype(np.float32) / p) + rng.normal(
        0, 0.3, (n, t)).astype(np.float32) + 6.0
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", Y)
    data_bytes = X.nbytes + Y.nbytes
    proc = subprocess.run(
        [sys.executable, "-c", OUT_OF_CORE, str(tmp_path / "x.npy"), str(tmp_path / "y.npy"),
         str(tmp_path / "out.npz"), str(data_bytes)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "full load refused" in proc.stdout
    got = np.load(tmp_path / "out.npz")
    ols = LinearRegression(precision="float64").fit(X, Y)
    ridge = Ridge(precision="float64").fit(X, Y)
    np.testing.assert_allclose(got["ols"], ols.coef_, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got["ols_b"], ols.intercept_, rtol=1e-9)
    assert float(got["alpha"]) == pytest.approx(ridge.alpha_)
    np.testing.assert_allclose(got["ridge"], ridge.coef_, rtol=1e-6, atol=1e-7)
    # the same blocks read here also agree (reader keeps rows aligned)
    blocks = list(npy_blocks(tmp_path / "x.npy", tmp_path / "y.npy", block_rows=7000))
    assert [len(b[0]) for b in blocks] == [7000] * 4 + [2000]
    np.testing.assert_array_equal(blocks[-1][1], Y[28000:])


# ---------------------------------------------------------------------------- ridge
def _brute_force_gcv(X, Y, alpha):
    """GCV from an explicit hat matrix and sklearn's ridge residuals."""
    n = len(X)
    Xc = X - X.mean(0)
    H = Xc @ np.linalg.solve(Xc.T @ Xc + alpha * np.eye(X.shape[1]), Xc.T)
    df = np.trace(H) + 1
    resid = Y - sk.Ridge(alpha=alpha).fit(X, Y).predict(X)
    return (resid**2).mean(0) / (1 - df / n) ** 2


def test_ridge_gcv_curve_and_choice_match_brute_force(real):
    X, Y = real
    X, Y = X[:, :120], Y[:, :40]
    m = Ridge(precision="float64").fit(X, Y)
    assert m.alphas_.shape == (13,) and m.gcv_.shape == (13, 40)
    brute = np.array([_brute_force_gcv(X, Y, a) for a in m.alphas_])
    np.testing.assert_allclose(m.gcv_, brute, rtol=1e-5)
    assert m.alpha_ == m.alphas_[np.argmin(brute.mean(1))]
    ref = sk.Ridge(alpha=m.alpha_).fit(X, Y)
    np.testing.assert_allclose(m.coef_, ref.coef_, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(m.predict(X), ref.predict(X), atol=1e-4)

    per_gene = Ridge(precision="float64", alpha_per_gene=True).fit(X, Y)
    assert per_gene.alpha_.shape == (40,)
    np.testing.assert_array_equal(per_gene.alpha_, m.alphas_[np.argmin(brute, axis=0)])
    j = 7
    ref_j = sk.Ridge(alpha=per_gene.alpha_[j]).fit(X, Y[:, j])
    np.testing.assert_allclose(per_gene.coef_[j], ref_j.coef_, rtol=1e-5, atol=1e-7)


def test_ridge_choice_generalises_like_sklearn_ridgecv(real):
    """Held-out error of the GCV choice is as good as RidgeCV's leave-one-out choice."""
    X, Y = real
    train, test = np.arange(0, 57) % 4 != 0, np.arange(0, 57) % 4 == 0
    m = Ridge().fit(X[train], Y[train])
    ref = sk.RidgeCV(alphas=m.alphas_).fit(X[train], Y[train])
    ours = np.mean((m.predict(X[test]) - Y[test]) ** 2)
    theirs = np.mean((ref.predict(X[test]) - Y[test]) ** 2)
    ols = np.mean((sk.LinearRegression().fit(X[train], Y[train]).predict(X[test]) - Y[test]) ** 2)
    assert ours <= theirs * 1.05
    assert ours < 0.9 * ols  # shrinkage matters here: 43 samples, 200 landmarks


def test_ridge_rejects_bad_alphas(real):
    X, Y = real
    with pytest.raises(ConfigError, match="non-negative"):
        Ridge(alphas=[1.0, -2.0]).fit(X, Y)
    m = Ridge(alphas=[0.5]).fit(X, Y)
    assert m.alpha_ == 0.5


# ---------------------------------------------------------------------------- lasso
def test_lasso_matches_sklearn_per_gene(real):
    X, Y = real
    Xs, Ys = X[:, :40], Y[:, :60]  # 57 samples > 40 landmarks: unique solutions
    m = Lasso(alpha=0.02, tol=1e-10, max_iter=20000, precision="float64").fit(Xs, Ys)
    ref = sk.Lasso(alpha=0.02, tol=1e-10, max_iter=100000).fit(Xs, Ys)
    np.testing.assert_allclose(m.coef_, ref.coef_, atol=2e-4)
    np.testing.assert_allclose(m.intercept_, ref.intercept_, atol=2e-3)
    np.testing.assert_array_equal(m.coef_ != 0, np.abs(ref.coef_) > 1e-6)


def _lasso_objective(X, y, coef, intercept, alpha):
    return 0.5 / len(X) * np.sum((y - X @ coef - intercept) ** 2) + alpha * np.abs(coef).sum()


def test_lasso_reaches_sklearn_objective_with_more_landmarks_than_samples(real):
    X, Y = real
    Ys = Y[:, :30]
    m = Lasso(alpha=0.05, precision="float64", tol=1e-6).fit(X, Ys)
    ref = sk.Lasso(alpha=0.05, tol=1e-6, max_iter=50000).fit(X, Ys)
    for j in range(30):
        ours = _lasso_objective(X, Ys[:, j], m.coef_[j].astype(np.float64), m.intercept_[j], 0.05)
        theirs = _lasso_objective(X, Ys[:, j], ref.coef_[j], ref.intercept_[j], 0.05)
        assert ours <= theirs * (1 + 1e-4)


def test_lasso_alpha_choice_on_held_out_split(real):
    X, Y = real
    Xs, Ys = X[:, :50], Y[:, :25]
    m = Lasso(n_alphas=6, eps=1e-2, tol=1e-8, max_iter=20000, precision="float64").fit(Xs, Ys)
    assert m.alphas_.shape == (6, 25) and m.validation_mse_.shape == (6, 25)
    k = int(np.argmin(m.validation_mse_.sum(1)))
    np.testing.assert_allclose(m.alpha_, m.alphas_[k])
    # held-out error of one grid point, recomputed with sklearn on the same split
    mask = validation_mask(len(Xs), 0.2, 0)
    j = 3
    ref = sk.Lasso(alpha=m.alphas_[2, j], tol=1e-10, max_iter=100000).fit(
        Xs[~mask], Ys[~mask, j])
    mse = np.mean((ref.predict(Xs[mask]) - Ys[mask, j]) ** 2)
    np.testing.assert_allclose(m.validation_mse_[2, j], mse, rtol=1e-3)
    # the final model is the full-data lasso at the chosen alpha
    full = sk.Lasso(alpha=m.alpha_[j], tol=1e-10, max_iter=100000).fit(Xs, Ys[:, j])
    np.testing.assert_allclose(m.coef_[j], full.coef_, atol=2e-4)

    per_gene = Lasso(n_alphas=6, eps=1e-2, alpha_per_gene=True, precision="float64",
                     tol=1e-8, max_iter=20000).fit(Xs, Ys)
    best = np.argmin(per_gene.validation_mse_, axis=0)
    np.testing.assert_allclose(per_gene.alpha_, per_gene.alphas_[best, np.arange(25)])


def test_lasso_partial_fit_needs_fixed_alpha(real):
    X, Y = real
    assert not hasattr(Lasso(), "partial_fit")
    m = Lasso(alpha=0.05).fit_blocks(iter_row_blocks(X[:, :20], Y[:, :10], 10))
    ref = Lasso(alpha=0.05).fit(X[:, :20], Y[:, :10])
    np.testing.assert_allclose(m.coef_, ref.coef_, atol=1e-4)
    with pytest.raises(ConfigError, match="non-negative"):
        Lasso(alpha=-1.0).fit(X, Y[:, :3])


def test_lasso_warns_when_not_converged(real):
    X, Y = real
    with pytest.warns(Warning, match="did not converge"):
        Lasso(alpha=1e-4, max_iter=10, tol=1e-12).fit(X, Y[:, :5])


def test_split_statistics_add_up_to_full_statistics(real):
    X, Y = real
    mask = validation_mask(len(X), 0.3, 1)
    train, val = split_stats(X, Y, mask, precision="float64", block_rows=10)
    full = GramStats(precision="float64")
    full += train
    full += val
    ref = GramStats(precision="float64").update(X, Y).centered()
    got = full.centered()
    np.testing.assert_allclose(got.cxy, ref.cxy, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got.cyy, ref.cyy, rtol=1e-9)
    assert train.n == (~mask).sum() and val.n == mask.sum()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = train.centered()
        mom = val.moments_about(t.mean_x, t.mean_y)
    resid = Y[mask] - t.mean_y
    np.testing.assert_allclose(mom.syy, (resid**2).sum(0), rtol=1e-9)


@pytest.mark.parametrize("target_dtype", [np.float32, np.float64])
def test_float32_sums_reuse_buffers_across_uneven_blocks(real, target_dtype):
    """Reused block buffers and the chunked float32 squares stay accurate."""
    X, Y = real
    Y = np.vstack([Y] * 40)  # 2,280 rows: many 64-row chunks per block
    X = np.vstack([X] * 40) + np.random.default_rng(2).normal(0, 0.1, (len(Y), X.shape[1]))
    ref = GramStats(precision="float64").update(X, Y).centered()
    stats = GramStats(precision="float32")
    for start, stop in ((0, 900), (900, 1300), (1300, 2280)):  # grows, shrinks, grows
        stats.update(X[start:stop].astype(np.float32), Y[start:stop].astype(target_dtype))
    got = stats.centered()
    np.testing.assert_allclose(got.cyy, ref.cyy, rtol=2e-5)
    np.testing.assert_allclose(got.mean_y, ref.mean_y, rtol=1e-6)
    scale = np.sqrt(np.outer(np.diag(ref.cxx), ref.cyy))
    assert np.abs(got.cxy - ref.cxy).max() < 2e-5 * scale.max()
    # a fitted model keeps no block-sized buffer
    model = LinearRegression().fit(X, Y.astype(target_dtype))
    assert model._stats._buffers == {}

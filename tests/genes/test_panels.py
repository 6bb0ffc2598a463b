"""Named and user panels, coverage reports, and the data-driven landmark selection."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from geneinfer.errors import (
    ConfigError,
    DataUnavailableError,
    GeneinferError,
    InputFormatError,
    MissingGenesError,
)
from geneinfer.examples import load_embedded
from geneinfer.expression import ExpressionData
from geneinfer.genes import (
    Panel,
    get_panel,
    load_id_map,
    read_panel_file,
    select_landmarks,
)
from geneinfer.genes.matching import match_panel


def test_l1000_panel_is_the_978_lincs_landmarks(shared):
    p = get_panel("l1000", data_dir=shared)
    assert len(p.landmarks) == 978 and len(p.targets) == 12328 - 978
    assert p.symbols["780"] == "DDR1"
    assert "780" in p.landmarks
    # LINCS "best inferred" genes: 10,174 incl. the landmarks.
    assert len(p.info["bing"]) + 978 == 10174


def test_dgex_panel_converts_all_but_a_few_genes_and_accounts_for_each(shared):
    p = get_panel("dgex", data_dir=shared)
    assert len(p.landmarks) == 943
    assert len(p.unresolved) <= 40
    # Every D-GEX target is accounted for: converted, same gene as a landmark, duplicate of
    # another target, or unresolved (all 31 unresolved genes are targets).
    assert len(p.targets) + len(p.info["targets_same_gene_as_landmark"]) \
        + len(p.info["target_duplicates"]) + len(p.unresolved) == 9520
    assert p.symbols[p.landmarks[0]] == "UBE2C"
    l1000 = get_panel("l1000", data_dir=shared)
    assert len(set(p.landmarks) & set(l1000.landmarks)) > 900


def test_panel_file_with_mixed_ids_resolves_to_entrez(tmp_path, shared):
    f = tmp_path / "panel.txt"
    f.write_text("# my landmarks\nDDR1\n5982\nENSG00000175063\n\nNOT_A_GENE\n")
    p = read_panel_file(f, id_map=load_id_map(data_dir=shared))
    assert p.landmarks == ["780", "5982", "11065"]
    assert p.targets is None and p.unresolved == ["NOT_A_GENE"]
    data = load_embedded(["bladderbatch"])["bladderbatch"]
    cov = match_panel(p, data.gene_ids)
    assert len(cov.landmarks) == 3 and cov.targets_from_data
    assert len(cov.targets) == data.n_genes - 3


def test_panel_tsv_with_roles_and_its_errors(tmp_path, shared):
    id_map = load_id_map(data_dir=shared)
    f = tmp_path / "panel.tsv"
    f.write_text("gene\trole\nDDR1\tlandmark\nRFC2\ttarget\n2597\ttarget\n")
    p = get_panel(f, id_map=id_map)
    assert p.landmarks == ["780"] and p.targets == ["5982", "2597"]
    f.write_text("gene\trole\nDDR1\tlandmark\nRFC2\tinferred\n")
    with pytest.raises(InputFormatError, match=r"line 3.*unknown role 'inferred'"):
        get_panel(f, id_map=id_map)
    f.write_text("gene\trole\nDDR1\tlandmark\n780\ttarget\n")
    with pytest.raises(InputFormatError, match=r"line 3.*listed twice"):
        get_panel(f, id_map=id_map)
    with pytest.raises(ConfigError, match="unknown panel"):
        get_panel(tmp_path / "missing.txt")


def test_coverage_lists_missing_genes_never_drops_silently(shared):
    data = load_embedded(["gse781"])["gse781"]
    p = get_panel("l1000", data_dir=shared)
    drop = set(p.landmarks[:10])
    sub = data.select_genes([g for g in data.gene_ids if g not in drop])
    cov = match_panel(p, sub.gene_ids)
    assert set(p.landmarks[:10]) <= set(cov.missing_landmarks)
    assert len(cov.landmarks) + len(cov.missing_landmarks) == 978
    assert len(cov.landmarks) == 975 - 10
    assert cov.summary()["landmarks_missing"] == cov.missing_landmarks


def test_panel_rejects_overlapping_roles():
    with pytest.raises(GeneinferError, match="both landmark and target"):
        Panel("x", landmarks=["1", "2"], targets=["2", "3"])


def _ridge_error(X: np.ndarray, cols: np.ndarray) -> float:
    """Held-out MAE of predicting the other genes from ``cols`` (standardised data)."""
    Z = (X - X.mean(0)) / X.std(0)
    rest = np.setdiff1d(np.arange(X.shape[1]), cols)
    train, test = np.arange(0, 40), np.arange(40, X.shape[0])
    model = Ridge(alpha=1.0).fit(Z[np.ix_(train, cols)], Z[np.ix_(train, rest)])
    return float(np.abs(model.predict(Z[np.ix_(test, cols)]) - Z[np.ix_(test, rest)]).mean())


def test_select_landmarks_is_deterministic_and_beats_random_panels():
    data = load_embedded(["bladderbatch"])["bladderbatch"]
    rng = np.random.default_rng(0)
    perm = rng.permutation(data.n_samples)
    X = data.values[perm][:, np.argsort(-data.values.var(0))[:1500]].astype(np.float64)
    cols = select_landmarks(X, n=30, seed=0)
    assert len(np.unique(cols)) == 30
    np.testing.assert_array_equal(cols, select_landmarks(X, n=30, seed=0))
    chosen = _ridge_error(X, cols)
    random = [_ridge_error(X, np.sort(rng.choice(X.shape[1], 30, replace=False)))
              for _ in range(5)]
    assert chosen < np.mean(random), (chosen, random)


def test_select_landmarks_returns_ids_and_skips_incomplete_genes():
    data = load_embedded(["gse781"])["gse781"]
    sub = data.select_genes(data.gene_ids[:300]).copy()
    sub.values[0, :100] = np.nan
    ids = select_landmarks(sub, n=20, seed=1)
    assert len(ids) == 20 and set(ids) <= set(sub.gene_ids[100:])
    with pytest.raises(GeneinferError, match="cannot select 500 landmarks"):
        select_landmarks(sub, n=500)
    with pytest.raises(GeneinferError):
        select_landmarks(ExpressionData(values=np.ones((3, 4)), gene_ids=list("abcd"),
                                        sample_ids=list("xyz")), n=2)


def test_named_panels_offline_without_files_say_what_to_download(tmp_path, monkeypatch):
    monkeypatch.setenv("GENEINFER_OFFLINE", "1")
    monkeypatch.setenv("GENEINFER_CACHE", str(tmp_path / "cache"))
    # the 978 landmarks ship with geneinfer; without the LINCS table every other gene of the
    # data is a target
    l1000 = get_panel("l1000", data_dir=tmp_path)
    assert len(l1000.landmarks) == 978 and l1000.targets is None
    assert "shipped with geneinfer" in l1000.info["source"][0]
    assert len(l1000.info["bing"]) == 9196
    with pytest.raises(DataUnavailableError, match=r"dgex_map_lm\.txt"):
        get_panel("dgex", data_dir=tmp_path)


def test_targets_in_data_follow_the_panel(shared):
    data = load_embedded(["bladderbatch"])["bladderbatch"]
    p = get_panel("l1000", data_dir=shared)
    tg = match_panel(p, data.gene_ids).targets
    assert set(tg) == set(p.targets) & set(data.gene_ids)
    assert not set(tg) & set(p.landmarks)
    open_panel = Panel("lm only", landmarks=p.landmarks)
    assert len(match_panel(open_panel, data.gene_ids).targets) == data.n_genes - 975
    with pytest.raises(MissingGenesError, match="landmark genes of panel none"):
        match_panel(Panel("none", landmarks=["1"]), data.gene_ids[:5].drop("1", errors="ignore"))

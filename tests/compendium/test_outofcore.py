"""Out-of-core training: the same models as in memory, resumable passes, the shuffled chunk
stream the neural trainer reads (per epoch, per rank, from any step), bounded spools."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from compendium_data import geuvadis, write_archs4

from geneinfer import io as gio
from geneinfer.errors import ConfigError, GeneinferError
from geneinfer.io import Archs4Selection
from geneinfer.io import blocks as io_blocks
from geneinfer.io.archs4 import write_archs4 as write_layout
from geneinfer.models.nn.modules import build_module
from geneinfer.models.nn.trainer import TrainConfig, Trainer
from geneinfer.preprocess import QuantileNormalizer, Standardizer, harmonize
from geneinfer.train import blocks as train_blocks
from geneinfer.train import outofcore
from geneinfer.train.blocks import StreamedSource, prefetch
from geneinfer.train.outofcore import train_inputs, train_streamed
from geneinfer.train.workflow import train_model


@pytest.fixture(scope="module")
def split_files(shared, tmp_path_factory):
    """The 85 GEUVADIS libraries as two ARCHS4 files: 60 to train, 25 to validate."""
    folder = tmp_path_factory.mktemp("ooc")
    counts = geuvadis(shared)
    X = counts.to_numpy().T
    genes = pd.DataFrame({"gene_symbol": counts.index, "ensembl_gene": counts.index})
    n = X.shape[0]
    samples = pd.DataFrame({"geo_accession": [f"GSM{7000 + i}" for i in range(n)],
                            "series_id": [f"GSE{10 + i // 15}" for i in range(n)],
                            "singlecellprobability": np.zeros(n)})
    train, valid = folder / "train.h5", folder / "valid.h5"
    write_layout(train, genes=genes, samples=samples.iloc[:60], blocks=[X[:60]], chunk_samples=7)
    write_layout(valid, genes=genes, samples=samples.iloc[60:], blocks=[X[60:]],
                 chunk_samples=7)
    return train, valid


def _valid_landmarks(model, valid, shared):
    data, _ = harmonize(gio.read(valid), data_dir=shared)
    return data.select_genes(model.landmark_ids).values


@pytest.mark.parametrize(("groups", "rule"), [("series_id", "leave-one-group-out"),
                                             ("none", "gcv")])
def test_streamed_ridge_equals_in_memory_ridge(shared, split_files, groups, rule):
    """The same alpha, chosen by the same rule, and the same model: over the four training
    series from per-group sums kept in the streamed pass, or by GCV without groups."""
    train, valid = split_files
    common = dict(model="ridge", panel="dgex", data_dir=shared, valid=valid, progress=False,
                  groups=groups)
    streamed = train_streamed([train], memory_limit="1G", reference_samples=10**6, **common)
    memory = train_model([gio.read(train)], dedup=False, **common)
    assert streamed.landmark_ids == memory.landmark_ids
    assert streamed.target_ids == memory.target_ids
    chosen, want = streamed.estimator.selection_, memory.estimator.selection_
    assert chosen["method"] == want["method"] == rule
    # GCV with 60 rows and 840 landmarks: at the smallest alphas (1 - df/n)^2 vanishes and
    # rounding differences between the two sums dominate; around the choice they agree
    near = np.asarray(want["grid"]) >= memory.estimator.alpha_ / 10
    np.testing.assert_allclose(np.asarray(chosen["scores"])[near],
                               np.asarray(want["scores"])[near], rtol=1e-3)
    assert streamed.info["selection"]["method"] == rule
    for key in ("column", "n_groups", "sizes"):
        assert streamed.info["groups"][key] == memory.info["groups"][key], key
    assert streamed.estimator.alpha_ == pytest.approx(memory.estimator.alpha_, rel=1e-6)
    X = _valid_landmarks(streamed, valid, shared)
    np.testing.assert_allclose(streamed.predict_log2(X), memory.predict_log2(X), atol=1e-4)
    a, b = streamed.preprocessor.state()[0], memory.preprocessor.state()[0]
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-9, err_msg=key)
    assert streamed.info["valid_mae"] == pytest.approx(memory.info["valid_mae"], rel=1e-4)
    assert streamed.info["out_of_core"]["passes"]["statistics"]["profiles_read"] == 60


def test_streamed_pcr_chooses_its_components_over_the_series_as_in_memory(shared,
                                                                         split_files):
    train, valid = split_files
    common = dict(model="pcr", panel="dgex", data_dir=shared, valid=valid, progress=False,
                  groups="series_id")
    streamed = train_streamed([train], memory_limit="1G", reference_samples=10**6, **common)
    memory = train_model([gio.read(train)], dedup=False, **common)
    chosen, want = streamed.estimator.selection_, memory.estimator.selection_
    assert chosen["method"] == want["method"] == "leave-one-group-out"
    np.testing.assert_allclose(chosen["scores"], want["scores"], rtol=1e-5)
    assert streamed.estimator.n_components_ == memory.estimator.n_components_
    X = _valid_landmarks(streamed, valid, shared)
    np.testing.assert_allclose(streamed.predict_log2(X), memory.predict_log2(X), atol=1e-4)


def test_a_killed_pass_resumes_where_it_stopped(shared, split_files, tmp_path, monkeypatch):
    train, valid = split_files
    common = dict(model="ridge", panel="dgex", data_dir=shared, valid=valid, progress=False,
                  memory_limit="1G", reference_samples=10**6)
    whole = train_streamed([train], **common)
    # blocks of 14 samples (2 chunks of 7), a checkpoint after every block; alpha over the
    # four series as in the whole run, so the per-series sums are saved and restored too
    monkeypatch.setattr(outofcore, "_budget_plan",
                        lambda *a, **k: (14, 0, 14, outofcore.MAX_SCORED_GROUPS))
    monkeypatch.setattr(outofcore, "CHECKPOINT_SECONDS", 0.0)
    calls = {"n": 0}
    load = train_blocks.InputPlan.load

    def dying(self, start, stop):
        calls["n"] += 1
        if calls["n"] == 9:  # 5 reference blocks, then the 4th statistics block
            raise KeyboardInterrupt
        return load(self, start, stop)

    monkeypatch.setattr(train_blocks.InputPlan, "load", dying)
    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        train_streamed([train], checkpoint_dir=ckpt, **common)
    assert (ckpt / "outofcore" / "statistics.npz").is_file()
    calls["n"] = -100  # no more deaths; count the blocks read on resume
    again = train_streamed([train], checkpoint_dir=ckpt, **common)
    assert calls["n"] == -100 + 2  # the reference pass was done; 2 statistics blocks left
    assert again.estimator.selection_["method"] == "leave-one-group-out"
    assert again.estimator.alpha_ == pytest.approx(whole.estimator.alpha_, rel=1e-5)
    X = _valid_landmarks(whole, valid, shared)
    np.testing.assert_allclose(again.predict_log2(X), whole.predict_log2(X), atol=1e-4)
    # other settings: the saved state is not reused
    calls["n"] = -1000
    train_streamed([train], checkpoint_dir=ckpt, **{**common, "reference_samples": 20})
    assert calls["n"] > -1000 + 5


def test_validation_by_sample_index_holds_out_whole_series(shared, split_files):
    train, _ = split_files
    model = train_streamed([train], model="ols", panel="dgex", data_dir=shared,
                           progress=False, memory_limit="1G")
    info = model.info
    assert info["validation"] == "held-out whole group, 15 samples"
    assert info["n_train_samples"] == 45 and info["n_valid_samples"] == 15
    assert info["valid_r_median"] > 0.5


def test_models_that_need_every_row_are_refused(shared, split_files):
    train, _ = split_files
    for name, why in (("knn", "compares each profile"), ("cnn", "orders the landmarks")):
        with pytest.raises(ConfigError, match=f"cannot train out of core: it {why}"):
            train_streamed([train], model=name, data_dir=shared, progress=False)
    with pytest.raises(ConfigError, match="with a fixed alpha"):
        train_streamed([train], model="lasso", data_dir=shared, progress=False)


def test_scored_groups_are_capped_by_the_memory_budget():
    """Each scored training group keeps ~15 MB of sums at the D-GEX shape: an 8 GiB budget
    scores the maximum, a small one fewer, a tiny one none (GCV then), and what is kept is
    charged to the budget."""
    limit = outofcore._scored_group_limit
    full, full_bytes = limit(8 * 2**30, n_landmarks=943, scored_genes=1000)
    assert full == outofcore.MAX_SCORED_GROUPS
    assert full_bytes <= outofcore.GROUP_SUMS_SHARE * 8 * 2**30
    some, some_bytes = limit(2**30, n_landmarks=943, scored_genes=1000)
    assert 2 <= some < full and some_bytes <= outofcore.GROUP_SUMS_SHARE * 2**30
    assert limit(2**27, n_landmarks=943, scored_genes=1000) == (0, 0)
    assert limit(8 * 2**30, n_landmarks=943, scored_genes=0) == (0, 0)
    args = dict(n_read=20_000, n_out=9_979, n_landmarks=943, n_targets=9_036, mode="gram",
                n_total=300_000, fraction=0.2, alignment=100, source="f.h5")
    with_groups = outofcore._budget_plan(8 * 2**30, scored_genes=1000, **args)
    without = outofcore._budget_plan(8 * 2**30, **args)
    assert with_groups[3] == full and without[3] == 0
    assert with_groups[0] < without[0]  # smaller blocks: the group sums are charged


def test_memory_limit_too_small_for_one_block(shared, split_files, tmp_path):
    train, _ = split_files
    with pytest.raises(ConfigError, match=r"--memory-limit 300.0 MB is too small for one "
                       r"block of 16 samples of .*train\.h5 \(10101 input genes\).*give at "
                       r"least"):
        train_inputs([train], out_of_core=True, memory_limit="300M", model="ridge",
                     panel="dgex", data_dir=shared, progress=False,
                     checkpoint_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_dgex_streamed_trains_and_scores(shared, split_files, tmp_path):
    train, valid = split_files
    params = {"hidden": (64,), "max_epochs": 4, "batch_size": 16, "precision": "fp32"}
    model = train_streamed([train], model="dgex", params=params, panel="dgex",
                           data_dir=shared, valid=valid, progress=False, memory_limit="1G",
                           checkpoint_dir=tmp_path / "ck")
    history = model.estimator.history_[0]["history"]
    assert len(history) == 5 and history[-1]["val_loss"] < history[0]["val_loss"]
    assert model.info["validation_used_for_early_stopping"]
    # the same network trained in memory (other batch order) scores alike
    memory = train_model([gio.read(train)], model="dgex", params=params, panel="dgex",
                         data_dir=shared, valid=valid, progress=False, dedup=False)
    assert model.info["valid_mae"] == pytest.approx(memory.info["valid_mae"], rel=0.05)
    assert model.estimator.history_[0]["best_val_loss"] == pytest.approx(
        memory.estimator.history_[0]["best_val_loss"], rel=0.1)


# --------------------------------------------------------------------------- the stream
def _source(n_rows=200, chunk=10, window=40, drop=()):
    """A StreamedSource over a synthetic input whose rows carry their own index."""
    class Reader:
        n_samples = n_rows
        source = "synthetic"
        chunk_samples = chunk

    class Plan:
        offset = 0
        n_samples = n_rows
        alignment = chunk
        reader = Reader()

        def load(self, start, stop):
            rows = np.arange(start, stop, dtype=np.float32)[:, None]
            return np.repeat(rows, 3, axis=1), rows * 10

    usable = np.ones(n_rows, dtype=bool)
    usable[list(drop)] = False
    return StreamedSource([Plan()], usable, transform=lambda x, y: (x, y), n_in=3, n_out=1,
                          chunk_rows=chunk, window_rows=window, identity="t")


def _epoch(src, **kw):
    return [x[:, 0].numpy().astype(int) for x, _ in src.epoch_batches(**kw)]


def test_stream_order_is_shuffled_per_epoch_and_resumable():
    src = _source(drop=(5, 77))
    assert len(src) == 198 and src.steps_per_epoch(16, 1) == 12
    e0 = _epoch(src, epoch=0, start_step=0, batch_size=16)
    assert len(e0) == 12 and all(len(b) == 16 for b in e0)
    seen = np.concatenate(e0)
    assert len(set(seen)) == len(seen) and not {5, 77} & set(seen)
    assert not np.array_equal(seen, np.sort(seen))  # shuffled
    e1 = _epoch(src, epoch=1, start_step=0, batch_size=16)
    assert not np.array_equal(np.concatenate(e1), seen)
    assert _epoch(src, epoch=0, start_step=0, batch_size=16)[3].tolist() == e0[3].tolist()
    tail = _epoch(src, epoch=0, start_step=5, batch_size=16)
    assert [b.tolist() for b in tail] == [b.tolist() for b in e0[5:]]
    # the window bounds how far rows travel: each window holds whole chunks
    first_window = set(np.concatenate(e0)[:40] // 10)
    assert len(first_window) <= 5


def test_each_rank_reads_its_own_chunks():
    src = _source(n_rows=300)
    steps = src.steps_per_epoch(8, 3)
    parts = [_epoch(src, epoch=2, start_step=0, batch_size=8, rank=r, world_size=3)
             for r in range(3)]
    assert all(len(p) == steps for p in parts)
    chunks = [set(np.concatenate(p) // 10) for p in parts]
    assert not (chunks[0] & chunks[1] or chunks[1] & chunks[2] or chunks[0] & chunks[2])


def test_trainer_resumes_a_streamed_epoch_mid_way(tmp_path):
    rng = np.random.default_rng(0)
    W = rng.normal(size=(3, 2)).astype(np.float32)

    class Source(StreamedSource):
        die_after: int | None = None

        def epoch_batches(self, **kw):
            for k, (x, _) in enumerate(super().epoch_batches(**kw)):
                if self.die_after is not None and k == self.die_after:
                    raise KeyboardInterrupt
                yield x, torch.from_numpy(np.tanh(x.numpy() / 100.0) @ W)

    def make():
        base = _source(n_rows=240, chunk=8, window=32)
        src = Source(base.plans, np.ones(240, bool), transform=lambda x, y: (x, y), n_in=3,
                     n_out=2, chunk_rows=8, window_rows=32, identity="resume")
        return src

    def fit(src, ckpt):
        cfg = TrainConfig(max_epochs=2, batch_size=16, checkpoint_dir=str(ckpt),
                          checkpoint_every_steps=3, progress=False, precision="fp32",
                          device="cpu")
        torch.manual_seed(0)
        module = build_module("mlp", 3, 2, hidden=(8,))
        Trainer(cfg).fit(module, src, None, module_config={"t": 1})
        return module.state_dict()

    whole = fit(make(), tmp_path / "a")
    broken = make()
    broken.die_after = 10  # epoch 0 has 15 steps; checkpoint at step 9
    with pytest.raises(KeyboardInterrupt):
        fit(broken, tmp_path / "b")
    resumed = fit(make(), tmp_path / "b")
    for key in whole:
        torch.testing.assert_close(resumed[key], whole[key])


def test_prefetch_raises_producer_errors_and_stops():
    def produce(i):
        if i == 3:
            raise GeneinferError("block 3 is bad")
        return i * i

    got = []
    with pytest.raises(GeneinferError, match="block 3 is bad"):
        for value in prefetch(produce, range(10)):
            got.append(value)
    assert got == [0, 1, 4]
    gen = prefetch(lambda i: i, range(10**9))
    assert [next(gen) for _ in range(3)] == [0, 1, 2]
    gen.close()  # the thread stops (would run for ever otherwise)


def test_large_gct_spool_is_a_transposed_file(shared, monkeypatch):
    path = shared / "gpl96" / "bladderbatch.gct.gz"
    whole = gio.read(path)
    monkeypatch.setattr(io_blocks, "SPOOL_IN_MEMORY_BYTES", 1_000_000)
    monkeypatch.setattr(io_blocks, "_TRANSPOSE_BATCH_BYTES", 300_000)
    with gio.open_blocks(path) as reader:
        assert reader.spool.transposed
        np.testing.assert_array_equal(reader.read(0, reader.n_samples), whole.values)
        cols = np.array([5, 0, 22282])
        np.testing.assert_array_equal(reader.read(10, 20, cols), whole.values[10:20][:, cols])
        folder = reader.spool._tmp.name
    assert not __import__("os").path.exists(folder)  # deleted on close


def test_in_memory_or_streamed_by_the_memory_limit(shared, split_files, capsys,
                                                   monkeypatch):
    train, valid = split_files
    need = outofcore.in_memory_bytes([outofcore.TrainingInput(str(train))])
    # four float32 copies of 60 x 10,101 values, and the program
    assert need == 4 * 4 * 60 * 10101 + outofcore.BASE_BYTES
    common = dict(model="ridge", panel="dgex", data_dir=shared, valid=valid)
    small = train_inputs([train], memory_limit="4G", progress=True, **common)
    assert "out_of_core" not in small.info
    monkeypatch.setattr(outofcore, "in_memory_bytes", lambda inputs: 2 * 2**30)  # as if big
    big = train_inputs([train], memory_limit="1G", progress=True, **common)
    assert "out_of_core" in big.info
    err = capsys.readouterr().err
    assert "training out of core (reading them whole needs about 2.0 GB, more than the " \
           "memory limit of 1.0 GB)" in err


def test_selection_reaches_both_paths(shared, tmp_path):
    path = tmp_path / "a4.h5"
    write_archs4(path, shared)
    sel = Archs4Selection(series=("GSE1", "GSE2"))
    inp = outofcore.TrainingInput(str(path), selection=sel)
    common = dict(model="ols", panel="dgex", data_dir=shared, progress=False)
    mem = train_inputs([inp], memory_limit="8G", **common)
    ooc = train_inputs([inp], out_of_core=True, memory_limit="1G", **common)
    # in memory every profile trains the model (each series is also scored by a model
    # fitted without it); out of core the held-out series stay out
    assert mem.info["validation_rule"] == "out-of-group"
    assert mem.info["n_train_samples"] == mem.info["n_valid_samples"] == 56
    assert ooc.info["n_train_samples"] + ooc.info["n_valid_samples"] == 56


def test_block_wise_fits_equal_whole_fits_on_real_arrays(bladder):
    X = bladder.astype(np.float32)
    X[3, 10] = np.nan  # a missing value is ignored alike
    q_whole, s_whole = QuantileNormalizer().fit(X), Standardizer().fit(X)
    q, s = QuantileNormalizer(), Standardizer()
    for start in range(0, len(X), 13):
        q.partial_fit(X[start:start + 13])
        s.partial_fit(X[start:start + 13])
        # a checkpoint taken here continues to the same result
        q = QuantileNormalizer.from_accumulator_state(q.accumulator_state())
        s = Standardizer.from_accumulator_state(s.accumulator_state())
    np.testing.assert_allclose(q.reference_, q_whole.reference_, rtol=1e-12)
    X64 = X.astype(np.float64)  # the exact statistics (fit() sums NaN blocks in float32)
    np.testing.assert_allclose(s.mean_, np.nanmean(X64, axis=0), rtol=1e-12)
    np.testing.assert_allclose(s.scale_, np.nanstd(X64, axis=0), rtol=1e-9)
    np.testing.assert_allclose(s.scale_, s_whole.scale_, rtol=1e-5)


def test_without_a_model_out_of_core_trains_ridge_the_default_stacks_anchor(shared,
                                                                            split_files):
    train, valid = split_files
    common = dict(panel="dgex", data_dir=shared, valid=valid, progress=False,
                  memory_limit="1G")
    model = train_streamed([train], **common)
    assert model.info["model"] == "ridge" and model.estimator.alpha_ > 0
    with pytest.raises(ConfigError, match="'stack' cannot train out of core: it refits"):
        train_streamed([train], model="stack", **common)

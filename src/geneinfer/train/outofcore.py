"""Training on more profiles than fit in memory (ARCHS4, GTEx, large GEO compendia).

``geneinfer train`` (:func:`train_inputs`) estimates what reading the training inputs whole
would take and, above the memory budget (``--memory-limit``, default half of this machine's
memory) or when asked (``--out-of-core``), trains with :func:`train_streamed` instead of
:func:`geneinfer.train.workflow.train_model`. The model file is the same kind of file.

Passes (each streams blocks of samples, read ahead in a background thread):

1. **plan** - open every input, plan its harmoniser (log2, Entrez genes), find the panel's
   landmarks and targets among the genes all inputs share, number all samples globally and
   hold out validation samples *by index*: whole groups (ARCHS4 series, GTEx tissues, else
   input files) when there are several, else a seeded random share; at most as many as the
   memory budget holds (they are kept in memory for the validation metrics and early
   stopping). A ``--valid`` file is read whole instead.
2. **reference** (quantile normalisation only) - a seeded sample of blocks holding about
   :data:`REFERENCE_SAMPLES` training profiles gives each block's quantile reference (all
   training profiles when there are fewer: then the reference is exactly the in-memory one).
3. **statistics** - every block once: the per-gene means and standard deviations of the
   normalised profiles (standardisation), the training means of the landmarks, the
   validation profiles; linear models add the block's ``X'X`` and ``X'Y``, and those that
   choose a hyper-parameter (ridge's alpha, PCR's components) also keep the sums of each
   training group a fold holds out (:class:`~geneinfer.models.gram_cv.GroupedGramStats`:
   at most :data:`MAX_SCORED_GROUPS` groups, a seeded sample, within
   :data:`GROUP_SUMS_SHARE` of the budget; the other groups' rows share one pooled sum).
4. **fit** - linear models solve from those sums, with the standardisation applied to the
   sums exactly: choosing over the held-out training groups as in memory
   (:meth:`GramLinearModel.fit_grouped_gram`; by GCV with fewer than two scorable groups,
   :meth:`GramLinearModel.fit_gram`); neural models train on a
   :class:`~geneinfer.train.blocks.StreamedSource` (a new chunk order every epoch, rows
   shuffled within windows of several chunks, each torchrun rank reading its own chunks).
5. **validation** - per-gene metrics on the held-out profiles, as in memory.

Samples with a missing value in a landmark or a target are left out (counted); near-duplicate
removal compares all profiles with each other and is skipped (a message says so).

What each model supports out of core (:data:`OUT_OF_CORE`): ``ols``, ``ridge`` (alpha over
held-out training groups from per-group sums), ``pcr`` and ``knn-ge`` / ``lasso`` with a
fixed ``k`` / ``alpha`` from the sums; ``dgex`` and ``autoencoder`` from the stream.
``knn``, ``svr``, ``cnn``, ``ridge-mlp``, ``per-gene-best`` and ``stack`` need all rows in
memory and are refused with the reason; without ``--model`` out of core, ridge is trained
(the default stack's anchor).

Resuming: the pass position, the running sums and the validation rows read so far are saved
under ``<checkpoint_dir>/outofcore`` every :data:`CHECKPOINT_SECONDS` and at the end of each
pass; the same command rerun after a kill continues from there (the neural trainer resumes
from its own checkpoints in the same folder).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from geneinfer import __version__
from geneinfer.errors import ConfigError, GeneinferError, MissingGenesError
from geneinfer.genes import Panel, get_panel
from geneinfer.genes.matching import PanelMatch, match_genes, match_panel
from geneinfer.io import (
    Archs4Blocks,
    Archs4Selection,
    BlockReader,
    detect_format,
    open_blocks,
    peek,
    read_sample_attributes,
)
from geneinfer.io.attributes import AttributedBlocks
from geneinfer.io.gct import read_gct_header
from geneinfer.models.base import arrays_under
from geneinfer.models.bundle import InferenceModel
from geneinfer.models.gram import GramStats
from geneinfer.models.gram_cv import GroupedGramStats
from geneinfer.models.nn.trainer import BatchSource
from geneinfer.models.registry import make_model, param_names
from geneinfer.models.selection import GroupFolds, plan_folds
from geneinfer.preprocess import Harmonizer, ProfilePreprocessor, QuantileNormalizer, Standardizer
from geneinfer.preprocess.pipeline import STATE_VERSION as PREPROCESS_STATE_VERSION
from geneinfer.train.blocks import Block, InputPlan, StreamedSource, plan_blocks, prefetch
from geneinfer.train.validation import FILE_GROUP_COLUMN, NO_GROUPS, TrainingGroups
from geneinfer.train.workflow import (
    DEFAULT_MODEL,
    MIN_TRAIN_SAMPLES,
    SPLIT_SEED,
    VALID_FRACTION,
    load_input,
    train_model,
    validation_metrics,
)
from geneinfer.utils.files import atomic_path
from geneinfer.utils.memory import format_size, parse_size, physical_memory

logger = logging.getLogger(__name__)

#: training profiles the quantile reference is computed from (a seeded sample of blocks)
REFERENCE_SAMPLES = 20_000
#: seconds between checkpoints of a pass
CHECKPOINT_SECONDS = 30.0
#: default memory budget: this share of the machine's memory
DEFAULT_MEMORY_SHARE = "50%"
#: reading a file whole takes about this many float32 copies of its matrix (read,
#: harmonised, stacked, landmark/target copies, preprocessed copies)
IN_MEMORY_COPIES = 4
#: what the interpreter, numpy, torch and the rest take before any data
BASE_BYTES = 400 * 2**20
#: bytes per value of an input column in a block: the read (4) and float64 CPM (8) with
#: temporaries, and per value of an output gene: harmonised, normalised, standardised
_BYTES_PER_INPUT_VALUE = 20
_BYTES_PER_OUTPUT_VALUE = 20
#: fewest samples a block may have
MIN_BLOCK_ROWS = 16
#: share of the memory budget for the neural models' shuffle windows (three in flight)
WINDOW_SHARE = 0.12
#: linear models that choose a hyper-parameter do so over held-out training groups, each
#: scored group keeping its own sums (~15 MB at 943 landmarks and 1,000 scored genes): at
#: most this many groups are scored (a seeded sample; the others always train) ...
MAX_SCORED_GROUPS = 50
#: ... and their sums take at most this share of the memory budget
GROUP_SUMS_SHARE = 0.15
STATE_VERSION = 1

#: model name -> how it trains out of core (the others need every row in memory)
OUT_OF_CORE: dict[str, str] = {
    "ols": "from the streamed X'X and X'Y sums: the same fit as in memory",
    "ridge": "from the streamed sums; alpha over held-out training groups from per-group "
             "sums (as in memory), by GCV with a single group",
    "pcr": "from the streamed sums; the number of components over held-out training groups "
           "(by GCV with a single group)",
    "knn-ge": "from the streamed sums with a fixed k (--param k=N)",
    "lasso": "from the streamed sums with a fixed alpha (--param alpha=A)",
    "dgex": "mini-batches streamed in a new shuffled order every epoch",
    "autoencoder": "mini-batches streamed in a new shuffled order every epoch",
}
#: why the others cannot
NOT_OUT_OF_CORE: dict[str, str] = {
    "knn": "it compares each profile with every training profile",
    "svr": "its kernel solver needs every training profile at once",
    "cnn": "it orders the landmarks from their correlations before training",
    "ridge-mlp": "it fits its ridge base on every training profile before the network",
    "per-gene-best": "it refits several candidate models on every training profile",
    "stack": "it refits its candidate models on folds of every training profile",
}
#: the model trained out of core when none is named (the in-memory default, a stack, needs
#: every profile in memory; ridge is its anchor)
OUT_OF_CORE_DEFAULT = "ridge"


# ====================================================================== inputs
@dataclass(frozen=True)
class TrainingInput:
    """One training file and how to read it.

    Attributes
    ----------
    path
        The file.
    format
        Its format (default: from the name, else the content).
    selection
        Which samples of an ARCHS4 file (ignored for other formats).
    soft_platform
        The platform of a SOFT family file with several.
    """

    path: str
    format: str | None = None
    selection: Archs4Selection | None = None
    soft_platform: str | None = None

    def options(self) -> dict[str, Any]:
        """Reader options that apply to this file's format."""
        fmt = detect_format(self.path, format=self.format)
        opts: dict[str, Any] = {"format": fmt}
        if fmt == "archs4" and self.selection is not None:
            opts["selection"] = self.selection
        if fmt == "soft" and self.soft_platform:
            opts["platform"] = self.soft_platform
        return opts

    def open(self, sample_attributes: Any = None, *, nonfinite: str = "error") -> BlockReader:
        if not Path(self.path).exists():
            raise GeneinferError(f"{self.path}: no such file")
        opts = self.options()
        opts["nonfinite"] = nonfinite
        if sample_attributes is not None:
            opts["sample_attributes"] = sample_attributes
        return open_blocks(self.path, **opts)

    @property
    def plain(self) -> bool:
        """Read as :func:`geneinfer.io.read` reads it by default."""
        return self.format is None and self.selection is None and self.soft_platform is None


def as_inputs(items: Sequence[Any]) -> list[TrainingInput]:
    return [i if isinstance(i, TrainingInput) else TrainingInput(os.fspath(i)) for i in items]


def input_shape(inp: TrainingInput) -> tuple[int, int]:
    """(samples, genes) of an input without reading its values."""
    opts = inp.options()
    if not Path(inp.path).exists():
        raise GeneinferError(f"{inp.path}: no such file")
    if opts["format"] == "gct":  # the header says it: no need to parse the body
        hdr = read_gct_header(inp.path)
        return hdr.n_samples, hdr.n_genes
    n_samples, n_genes, _ = peek(inp.path, **opts)
    return n_samples, n_genes


def in_memory_bytes(inputs: Sequence[TrainingInput]) -> int:
    """About what :func:`~geneinfer.train.workflow.train_model` takes for these inputs."""
    total = 0
    for inp in inputs:
        n, g = input_shape(inp)
        total += IN_MEMORY_COPIES * 4 * n * g
    return total + BASE_BYTES


def memory_budget(limit: str | int | None) -> int:
    """Bytes from ``--memory-limit`` (``"8G"``, ``"50%"``; default half of the memory)."""
    try:
        return parse_size(DEFAULT_MEMORY_SHARE if limit is None else limit,
                          total=physical_memory() or 16 * 2**30)
    except ValueError as exc:
        raise ConfigError(f"--memory-limit {exc}") from None


# ====================================================================== dispatch
def train_inputs(
    inputs: Sequence[TrainingInput | str | os.PathLike[str]],
    *,
    memory_limit: str | int | None = None,
    out_of_core: bool | None = None,
    sample_attributes: Any = None,
    progress: bool = True,
    **options: Any,
) -> InferenceModel:
    """Train in memory (:func:`~geneinfer.train.workflow.train_model`) when the inputs fit
    the memory budget, else out of core (:func:`train_streamed`).

    Parameters
    ----------
    inputs
        Files (or :class:`TrainingInput` with reader options).
    memory_limit
        Budget (``"8G"``, ``"50%"``, bytes); default half of this machine's memory.
    out_of_core
        True: always stream; False: never; None (default): decide from the budget.
    sample_attributes
        A sample attribute table (file or DataFrame) joined to the inputs whose samples it
        lists (GTEx: ``SMTSD`` becomes the group).
    **options
        As for :func:`train_streamed` / :func:`~geneinfer.train.workflow.train_model`.
    """
    items = as_inputs(inputs)
    if not items:
        raise ConfigError("no training data given")
    budget = memory_budget(memory_limit)
    need = in_memory_bytes(items)
    stream = out_of_core if out_of_core is not None else need > budget
    if stream:
        if progress:
            why = ("asked for" if out_of_core else
                   f"reading them whole needs about {format_size(need)}, more than the "
                   f"memory limit of {format_size(budget)}")
            _say(f"training out of core ({why})")
        return train_streamed(items, memory_limit=budget, sample_attributes=sample_attributes,
                              progress=progress, **options)
    options.pop("reference_samples", None)
    sources, columns = _in_memory_sources(items, sample_attributes,
                                          nonfinite=options.get("nonfinite", "error"))
    if options.get("groups") is None and len(set(columns)) == 1 and columns[0] is not None:
        # every input names its samples' studies (ARCHS4 series, GTEx tissues): group by them
        options["groups"] = columns[0]
    return train_model(sources, progress=progress, **options)


def _in_memory_sources(items: list[TrainingInput], sample_attributes: Any, *,
                       nonfinite: str = "error") -> tuple[list[Any], list[str | None]]:
    """Paths :func:`~geneinfer.io.read` reads as they are; the others (a selection, a
    platform, attributes) read here with their options. Also each input's group column
    (the sample-metadata column its reader declares as the study, else None)."""
    if sample_attributes is None and all(inp.plain for inp in items):
        return ([inp.path for inp in items],
                [Archs4Blocks.group_column if inp.options()["format"] == "archs4" else None
                 for inp in items])
    with contextlib.ExitStack() as stack:
        readers = _open_all(items, sample_attributes, stack, nonfinite=nonfinite)
        sources = [inp.path if inp.plain and not isinstance(r, AttributedBlocks)
                   else r.block(0, r.n_samples) for inp, r in zip(items, readers)]
        return sources, [getattr(r, "group_column", None) for r in readers]


# ====================================================================== the plan
@dataclass
class _Plan:
    inputs: list[InputPlan]
    match: PanelMatch
    n_total: int
    groups: np.ndarray  # int code per sample
    group_names: list[str]
    group_column: str  # the sample-metadata column the groups come from (or the file)
    valid_mask: np.ndarray
    valid_desc: str
    block_rows: int
    blocks: list[Block]
    window_rows: int
    max_scored: int = 0  # training groups study-aware selection may score (0: none)
    fingerprint: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def landmarks(self) -> list[str]:
        return self.match.landmarks

    @property
    def targets(self) -> list[str]:
        return self.match.targets


def _say(message: str) -> None:
    logger.info(message)
    print(f"geneinfer: {message}", file=sys.stderr, flush=True)


def _open_all(inputs: list[TrainingInput], sample_attributes: Any, stack: contextlib.ExitStack,
              *, nonfinite: str = "error") -> list[BlockReader]:
    readers = [stack.enter_context(inp.open(nonfinite=nonfinite)) for inp in inputs]
    if sample_attributes is None:
        return readers
    table = (sample_attributes if isinstance(sample_attributes, pd.DataFrame)
             else read_sample_attributes(sample_attributes))
    out, joined = [], 0
    for reader in readers:
        if reader.sample_ids().isin(table.index).any():
            out.append(AttributedBlocks(reader, table, source=str(sample_attributes)))
            joined += 1
        else:
            out.append(reader)
    if not joined:
        raise GeneinferError(f"{sample_attributes}: lists none of the samples of "
                             f"{', '.join(r.source for r in readers)}")
    return out


def _group_labels(reader: BlockReader, column: str | None = None) -> tuple[np.ndarray, str]:
    """Each sample's group and the column it comes from: ``column`` of the sample metadata
    (``--groups``; ``"none"``: one group), by default the reader's group column (series,
    tissue), else the file."""
    if column == NO_GROUPS:
        return np.full(reader.n_samples, "all", dtype=object), NO_GROUPS
    wanted = column or getattr(reader, "group_column", None)
    if wanted:
        for name, get in reader.sample_columns():
            if name == wanted:
                # the values alone, as in memory (the column is kept beside them)
                return np.array([str(v) for v in get()], dtype=object), wanted
        if column:
            have = ", ".join(name for name, _ in reader.sample_columns()[:20]) or "none"
            raise ConfigError(f"--groups {column}: no such sample-metadata column in "
                              f"{reader.source} (columns: {have})")
    return np.full(reader.n_samples, Path(reader.source).name, dtype=object), FILE_GROUP_COLUMN


def _harmonize_inputs(readers: list[BlockReader], *, scale: str | None, annotation: Any,
                      data_dir: Any, progress: bool) -> list[Harmonizer]:
    out = []
    for reader in readers:
        h = Harmonizer.for_reader(reader, scale=scale, annotation=annotation,
                                  data_dir=data_dir)
        if progress:
            _say(h.report.summary())
        out.append(h)
    return out


def _common_genes(harmonizers: list[Harmonizer]) -> pd.Index:
    genes = pd.Index(harmonizers[0].gene_ids)
    for h in harmonizers[1:]:
        genes = genes[genes.isin(h.gene_ids)]
    if not len(genes):
        raise GeneinferError("the training files share no genes: "
                             + ", ".join(h.source for h in harmonizers))
    return genes


def _valid_split(groups: np.ndarray, n_names: int, n_valid: int, seed: int
                 ) -> tuple[np.ndarray, str]:
    """Held-out mask: whole groups when there are several, else random samples."""
    n = len(groups)
    rng = np.random.default_rng(seed)
    if n_names >= 2:
        sizes = np.bincount(groups, minlength=n_names)
        held: list[int] = []
        total = 0
        for g in rng.permutation(n_names):
            size = int(sizes[g])
            if size and abs(total + size - n_valid) < abs(total - n_valid) and \
                    total + size <= n_valid * 1.5 and n - total - size >= MIN_TRAIN_SAMPLES:
                held.append(int(g))
                total += size
        if held:
            what = "whole group" if len(held) == 1 else f"{len(held)} whole groups"
            return np.isin(groups, held), f"held-out {what}, {total} samples"
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, n_valid, replace=False)] = True
    return mask, f"held-out {n_valid} random training samples"


def _scored_group_limit(budget: int, *, n_landmarks: int, scored_genes: int) -> tuple[int, int]:
    """(training groups study-aware selection may score, bytes their sums take): each
    scored group's sums, plus the pooled part and a fold's working copies."""
    if not scored_genes:
        return 0, 0
    part = 8 * (n_landmarks + 1) * (n_landmarks + scored_genes + 2)
    extra = 5  # the pooled rows, the subset total, a fold's copy and its centred sums
    limit = int(min(MAX_SCORED_GROUPS, GROUP_SUMS_SHARE * budget // part - extra))
    return (limit, (limit + extra) * part) if limit >= 2 else (0, 0)


def _budget_plan(budget: int, *, n_read: int, n_out: int, n_landmarks: int, n_targets: int,
                 mode: str, n_total: int, fraction: float, alignment: int, source: str,
                 scored_genes: int = 0) -> tuple[int, int, int, int]:
    """(block rows, validation cap, window rows, scored groups) that fit ``budget``; an
    error if none does. ``scored_genes``: targets a linear model scores when it chooses
    over groups (0: it does not)."""
    per_value = 4 * n_out
    fixed = BASE_BYTES
    max_scored = 0
    if mode == "gram":  # float64 sums, their centred copy and the solver's work arrays
        fixed += 8 * (n_landmarks + 1) * (n_landmarks + n_targets) * 4
        max_scored, group_bytes = _scored_group_limit(budget, n_landmarks=n_landmarks,
                                                      scored_genes=scored_genes)
        fixed += group_bytes
    else:  # network weights, gradients and optimizer state: a share of the budget
        fixed += budget // 4
    valid_cap = int(0.15 * budget // (3 * per_value))
    n_valid = min(round(fraction * n_total), max(valid_cap, 0))
    per_row = _BYTES_PER_INPUT_VALUE * n_read + _BYTES_PER_OUTPUT_VALUE * n_out
    left = budget - fixed - n_valid * 3 * per_value
    rows = int(left // (3 * per_row))  # one block in use, one read ahead, one being read
    smallest = max(MIN_BLOCK_ROWS, min(alignment, 256))
    if rows < smallest:
        need = fixed + n_valid * 3 * per_value + 3 * per_row * smallest
        raise ConfigError(
            f"--memory-limit {format_size(budget)} is too small for one block of {smallest} "
            f"samples of {source} ({n_read} input genes): the model's sums, the validation "
            f"profiles and the program need about {format_size(fixed + n_valid * 3 * per_value)}"
            f" and a block about {format_size(3 * per_row * smallest)} (give at least "
            f"{format_size(need)})"
        )
    rows = min(rows, 65_536)
    window = int(max(alignment, min(32_768, budget * WINDOW_SHARE // (3 * per_value))))
    return max(smallest, (rows // alignment) * alignment or rows), n_valid, window, max_scored


def _make_plan(readers: list[BlockReader], harmonizers: list[Harmonizer], panel: Any, *,
               data_dir: Any, valid: Any, fraction: float, budget: int, mode: str,
               groups: str | None = None,
               scored_genes: Callable[[int], int] | None = None) -> _Plan:
    genes = _common_genes(harmonizers)
    pobj = panel if isinstance(panel, Panel) else get_panel(panel, data_dir=data_dir)
    match = match_panel(pobj, genes, source=", ".join(r.source for r in readers))
    wanted = [*match.landmarks, *match.targets]
    plans, offset, labels, columns = [], 0, [], []
    for reader, h in zip(readers, harmonizers):
        outputs = np.asarray(h.gene_ids.get_indexer(pd.Index(wanted)), dtype=np.int64)
        plans.append(InputPlan(reader, h, outputs, len(match.landmarks),
                               h.input_columns(outputs), offset))
        reader_labels, column = _group_labels(reader, groups)
        labels.append(reader_labels)
        columns.append(column)
        offset += reader.n_samples
    names, groups = np.unique(np.concatenate(labels), return_inverse=True)
    n_total = offset
    if n_total < MIN_TRAIN_SAMPLES + (0 if valid is not None else 1):
        raise GeneinferError(f"{n_total} samples are too few to train (need at least "
                             f"{MIN_TRAIN_SAMPLES + 1})")
    n_read = max(len(p.reader.gene_ids) if p.read_cols is None else len(p.read_cols)
                 for p in plans)
    block_rows, n_valid, window, max_scored = _budget_plan(
        budget, n_read=n_read, n_out=len(wanted), n_landmarks=len(match.landmarks),
        n_targets=len(match.targets), mode=mode, n_total=n_total,
        fraction=0.0 if valid is not None else fraction,
        alignment=max(p.alignment for p in plans), source=plans[0].name,
        scored_genes=scored_genes(len(match.targets)) if scored_genes else 0)
    if valid is not None:
        mask, desc = np.zeros(n_total, dtype=bool), os.fspath(valid)
    else:
        if not 0.0 < fraction < 1.0:
            raise ConfigError(f"the validation fraction must be between 0 and 1, got {fraction}")
        n_valid = max(1, min(n_valid, n_total - MIN_TRAIN_SAMPLES))
        mask, desc = _valid_split(groups.astype(np.int64), len(names), n_valid, SPLIT_SEED)
        if n_valid < round(fraction * n_total):
            desc += f" (the share {fraction:g} capped to fit the memory limit)"
    blocks = plan_blocks(plans, block_rows)
    return _Plan(plans, match, n_total, groups.astype(np.int64), [str(x) for x in names],
                 ", ".join(dict.fromkeys(columns)), mask, desc, block_rows, blocks, window,
                 max_scored)


@dataclass(frozen=True)
class _GroupSelection:
    """How a linear model chooses over the training groups out of core."""

    folds: GroupFolds
    fold_code: np.ndarray  # each plan group's code in ``folds`` (-1: validation only)
    genes: np.ndarray  # the target columns scored (kept per group)

    def settings(self) -> dict[str, Any]:
        """What identifies it in the checkpoint fingerprint."""
        return {"scored_groups": [f.tolist() for f in self.folds.folds],
                "scored_genes": self.genes.tolist()}


def _group_selection(plan: _Plan, genes: np.ndarray) -> _GroupSelection | None:
    """Folds of the training groups for study-aware selection of a linear model (at most
    ``plan.max_scored`` scored) scoring target columns ``genes``; ``None`` where the
    single-group rule applies."""
    if plan.max_scored < 2:
        return None
    train = plan.groups[~plan.valid_mask]
    folds = plan_folds(train, len(train), max_scored=plan.max_scored, seed=SPLIT_SEED)
    if folds is None:
        return None
    fold_code = np.full(len(plan.group_names), -1, dtype=np.int64)
    present = np.unique(train)
    fold_code[present] = np.arange(len(present))
    return _GroupSelection(folds, fold_code, genes)


def _fingerprint(plan: _Plan, settings: dict[str, Any]) -> str:
    h = hashlib.sha256()
    payload = {"version": STATE_VERSION, "settings": settings,
               "inputs": [p.reader.fingerprint() for p in plan.inputs],
               "harmonised": [p.harmonizer.report.to_json() for p in plan.inputs],
               "landmarks": plan.landmarks, "targets": plan.targets,
               "blocks": [(b.source, b.start, b.stop) for b in plan.blocks]}
    h.update(json.dumps(payload, sort_keys=True, default=str).encode())
    h.update(np.packbits(plan.valid_mask).tobytes())
    return h.hexdigest()


# ====================================================================== checkpoints
class _Checkpoint:
    """Pass position, running sums and validation rows under ``folder`` (None: not kept)."""

    def __init__(self, folder: Path | None, fingerprint: str, n_landmarks: int,
                 n_targets: int) -> None:
        self.folder = folder
        self.fingerprint = fingerprint
        self.widths = (n_landmarks, n_targets)
        self.valid_x: list[np.ndarray] = []
        self.valid_y: list[np.ndarray] = []
        self.valid_rows: list[np.ndarray] = []
        self.state: dict[str, Any] = {}
        if folder is not None:
            self._load()

    def _path(self, name: str) -> Path:
        assert self.folder is not None
        return self.folder / name

    def _load(self) -> None:
        try:
            state = json.loads(self._path("state.json").read_text())
        except (OSError, ValueError):
            state = None
        if not state or state.get("fingerprint") != self.fingerprint:
            if state:
                logger.warning("%s: state of another training run (other data or settings); "
                               "starting over", self.folder)
            self._reset()
            return
        self.state = state
        n = int(state.get("n_valid", 0))
        p, t = self.widths
        x = np.fromfile(self._path("valid_x.f32"), np.float32, count=n * p) if n else []
        y = np.fromfile(self._path("valid_y.f32"), np.float32, count=n * t) if n else []
        r = np.fromfile(self._path("valid_rows.i64"), np.int64, count=n) if n else []
        if n and (len(x) != n * p or len(y) != n * t or len(r) != n):
            logger.warning("%s: validation rows incomplete; starting over", self.folder)
            self._reset()
            return
        if n:
            self.valid_x, self.valid_y, self.valid_rows = ([x.reshape(n, p)], [y.reshape(n, t)],
                                                           [r])
        for name in ("valid_x.f32", "valid_y.f32", "valid_rows.i64"):  # drop unsaved rows
            with open(self._path(name), "r+b") as fh:
                fh.truncate({"valid_x.f32": 4 * n * p, "valid_y.f32": 4 * n * t,
                             "valid_rows.i64": 8 * n}[name])

    def _reset(self) -> None:
        self.state = {}
        self.valid_x, self.valid_y, self.valid_rows = [], [], []
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        for name in ("state.json", "reference.npz", "statistics.npz"):
            self._path(name).unlink(missing_ok=True)
        for name in ("valid_x.f32", "valid_y.f32", "valid_rows.i64"):
            self._path(name).write_bytes(b"")

    @property
    def n_valid(self) -> int:
        return int(sum(len(r) for r in self.valid_rows))

    def add_valid(self, X: np.ndarray, Y: np.ndarray, rows: np.ndarray) -> None:
        X, Y = np.ascontiguousarray(X, np.float32), np.ascontiguousarray(Y, np.float32)
        rows = np.ascontiguousarray(rows, np.int64)
        self.valid_x.append(X)
        self.valid_y.append(Y)
        self.valid_rows.append(rows)
        if self.folder is not None:
            for name, arr in (("valid_x.f32", X), ("valid_y.f32", Y), ("valid_rows.i64", rows)):
                with open(self._path(name), "ab") as fh:
                    fh.write(arr.tobytes())

    def arrays(self, name: str) -> dict[str, np.ndarray] | None:
        if self.folder is None or not self._path(f"{name}.npz").is_file():
            return None
        with np.load(self._path(f"{name}.npz"), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def save(self, phase: str, next_block: int, arrays: dict[str, np.ndarray],
             counters: dict[str, Any]) -> None:
        if self.folder is None:
            return
        with atomic_path(self._path(f"{phase}.npz")) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        state = {**self.state, "fingerprint": self.fingerprint, "n_valid": self.n_valid,
                 phase: {"next_block": int(next_block), **counters}}
        with atomic_path(self._path("state.json")) as tmp:
            Path(tmp).write_text(json.dumps(state))
        self.state = state

    def validation(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p, t = self.widths
        if not self.valid_rows:
            return (np.empty((0, p), np.float32), np.empty((0, t), np.float32),
                    np.empty(0, np.int64))
        return (np.concatenate(self.valid_x), np.concatenate(self.valid_y),
                np.concatenate(self.valid_rows))


# ====================================================================== passes
@dataclass
class _Stats:
    """What the statistics pass accumulates."""

    raw_landmarks: Standardizer = field(default_factory=Standardizer)
    raw_targets: Standardizer = field(default_factory=Standardizer)
    landmarks: Standardizer = field(default_factory=Standardizer)
    targets: Standardizer = field(default_factory=Standardizer)
    gram: GramStats | None = None
    #: per-group sums for study-aware selection (its ``total`` is ``gram``)
    grouped: GroupedGramStats | None = None
    usable: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    n_incomplete: int = 0

    _PARTS = ("raw_landmarks", "raw_targets", "landmarks", "targets")

    def to_arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {"usable": np.packbits(self.usable),
                                      "n_usable": np.asarray(len(self.usable))}
        for part in self._PARTS:
            std = getattr(self, part)
            if getattr(std, "n_features_in_", None):
                out.update({f"{part}.{k}": v for k, v in std.accumulator_state().items()})
        if self.grouped is not None:
            out.update({f"grouped.{k}": v for k, v in self.grouped.state().items()})
        elif self.gram is not None:
            out.update({f"gram.{k}": v for k, v in self.gram.state().items()})
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], gram: GramStats | None,
                    grouped: GroupedGramStats | None = None) -> _Stats:
        obj = cls(gram=gram, grouped=grouped)
        n = int(arrays["n_usable"])
        obj.usable = np.unpackbits(arrays["usable"], count=n).astype(bool)
        for part in cls._PARTS:
            keys = arrays_under(arrays, f"{part}.")
            if keys:
                setattr(obj, part, Standardizer.from_accumulator_state(keys))
        if grouped is not None:
            grouped.load_state(arrays_under(arrays, "grouped."))
        elif gram is not None:
            gram.load_state(arrays_under(arrays, "gram."))
        return obj


def _bar(total: int, desc: str, *, initial: int, enabled: bool) -> tqdm:
    return tqdm(total=total, initial=initial, desc=desc, unit="profiles", unit_scale=True,
                smoothing=0.1, dynamic_ncols=True, disable=not enabled)


def _run_pass(plan: _Plan, blocks: list[Block], *, start: int, desc: str, progress: bool,
              consume: Callable[[Block, np.ndarray, np.ndarray], None],
              save: Callable[[int], None]) -> float:
    """Stream ``blocks[start:]`` into ``consume`` (read ahead), saving every
    :data:`CHECKPOINT_SECONDS`; returns the seconds taken."""
    total = sum(b.stop - b.start for b in blocks)
    done = sum(b.stop - b.start for b in blocks[:start])
    t0 = last = time.monotonic()

    def load(item: tuple[int, Block]) -> tuple[int, Block, np.ndarray, np.ndarray]:
        i, block = item
        X, Y = plan.inputs[block.source].load(block.start, block.stop)
        return i, block, X, Y

    with _bar(total, desc, initial=done, enabled=progress) as bar:
        for i, block, X, Y in prefetch(load, list(enumerate(blocks))[start:], depth=2):
            consume(block, X, Y)
            del X, Y
            bar.update(block.stop - block.start)
            if time.monotonic() - last >= CHECKPOINT_SECONDS and i + 1 < len(blocks):
                save(i + 1)
                last = time.monotonic()
    save(len(blocks))
    return time.monotonic() - t0


def _complete(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    return np.isfinite(X).all(axis=1) & np.isfinite(Y).all(axis=1)


def _reference_pass(plan: _Plan, ckpt: _Checkpoint, *, n_reference: int, progress: bool
                    ) -> tuple[QuantileNormalizer, QuantileNormalizer, dict[str, Any]]:
    """Quantile references from a seeded sample of blocks with ~``n_reference`` training
    profiles (all blocks when there are fewer training profiles)."""
    rng = np.random.default_rng(SPLIT_SEED + 1)
    chosen, n = [], 0
    for k in rng.permutation(len(plan.blocks)):
        if n >= n_reference:
            break
        block = plan.blocks[k]
        chosen.append(int(k))
        n += int((~plan.valid_mask[block.rows(plan.inputs)]).sum())
    blocks = [plan.blocks[k] for k in sorted(chosen)]  # in file order: sequential reads
    state = ckpt.state.get("reference", {})
    arrays = ckpt.arrays("reference") if state else None
    qx = QuantileNormalizer.from_accumulator_state(
        arrays_under(arrays, "lm.")) if arrays else \
        QuantileNormalizer()
    qy = QuantileNormalizer.from_accumulator_state(
        arrays_under(arrays, "tg.")) if arrays else \
        QuantileNormalizer()
    start = int(state.get("next_block", 0)) if arrays else 0

    def consume(block: Block, X: np.ndarray, Y: np.ndarray) -> None:
        keep = ~plan.valid_mask[block.rows(plan.inputs)] & _complete(X, Y)
        if keep.any():
            qx.partial_fit(X[keep])
            qy.partial_fit(Y[keep])

    def save(next_block: int) -> None:
        arrays = {f"lm.{k}": v for k, v in qx.accumulator_state().items()}
        arrays.update({f"tg.{k}": v for k, v in qy.accumulator_state().items()})
        ckpt.save("reference", next_block, arrays, {})

    seconds = 0.0
    if start < len(blocks):
        seconds = _run_pass(plan, blocks, start=start, desc="quantile reference",
                            progress=progress, consume=consume, save=save)
    if not hasattr(qx, "reference_"):
        raise GeneinferError("no complete training profile to compute the quantile reference")
    rows = sum(b.stop - b.start for b in blocks)
    return qx, qy, {"blocks": len(blocks), "profiles_read": rows, "seconds": seconds,
                    "profiles_used": int(qx.accumulator_state()["count"])}


def _statistics_pass(plan: _Plan, ckpt: _Checkpoint, *, refs: tuple | None, gram: bool,
                     precision: str, progress: bool,
                     selection: _GroupSelection | None = None
                     ) -> tuple[_Stats, dict[str, Any]]:
    """``selection``: keep the per-group sums it scores besides the totals."""
    state = ckpt.state.get("statistics", {})
    arrays = ckpt.arrays("statistics") if state else None
    grouped = None
    if gram and selection is not None:
        grouped = GroupedGramStats(selection.folds, selection.genes,
                                   precision=precision)  # type: ignore[arg-type]
        stats_gram = grouped.total
    else:
        stats_gram = GramStats(precision=precision) if gram else None  # type: ignore[arg-type]
    stats = (_Stats.from_arrays(arrays, stats_gram, grouped) if arrays
             else _Stats(gram=stats_gram, grouped=grouped))
    if not len(stats.usable):
        stats.usable = np.zeros(plan.n_total, dtype=bool)
    stats.n_incomplete = int(state.get("n_incomplete", 0))
    start = int(state.get("next_block", 0)) if arrays else 0

    def consume(block: Block, X: np.ndarray, Y: np.ndarray) -> None:
        rows = block.rows(plan.inputs)
        ok = _complete(X, Y)
        stats.n_incomplete += int((~ok).sum())
        held = plan.valid_mask[rows]
        if (held & ok).any():
            ckpt.add_valid(X[held & ok], Y[held & ok], rows[held & ok])
        train = ~held & ok
        if not train.any():
            return
        Xt, Yt = X[train], Y[train]
        stats.usable[rows[train]] = True
        stats.raw_landmarks.partial_fit(Xt)
        stats.raw_targets.partial_fit(Yt)
        if refs is not None:
            Xt, Yt = refs[0].transform(Xt), refs[1].transform(Yt)
        stats.landmarks.partial_fit(Xt)
        stats.targets.partial_fit(Yt)
        where = f"{plan.inputs[block.source].name}, samples {block.start}..{block.stop}"
        if stats.grouped is not None:
            codes = selection.fold_code[plan.groups[rows[train]]]  # type: ignore[union-attr]
            stats.grouped.update(Xt, Yt, codes, where=where)
        elif stats.gram is not None:
            stats.gram.update(Xt, Yt, where=where)

    def save(next_block: int) -> None:
        ckpt.save("statistics", next_block, stats.to_arrays(),
                  {"n_incomplete": stats.n_incomplete})

    seconds = 0.0
    if start < len(plan.blocks):
        seconds = _run_pass(plan, plan.blocks, start=start, desc="statistics",
                            progress=progress, consume=consume, save=save)
    if stats.grouped is not None:
        stats.grouped.release_workspace()
    elif stats.gram is not None:
        stats.gram.release_workspace()
    n_train = int(stats.usable.sum())
    if n_train < MIN_TRAIN_SAMPLES:
        raise GeneinferError(f"{n_train} complete training profiles are too few (need "
                             f"{MIN_TRAIN_SAMPLES}); {stats.n_incomplete} had missing values")
    return stats, {"blocks": len(plan.blocks), "profiles_read": plan.n_total,
                   "seconds": seconds}


# ====================================================================== fitting
def _preprocessor(refs: tuple | None, stats: _Stats, *, standardize: bool, n_landmarks: int,
                  n_targets: int) -> ProfilePreprocessor:
    """The fitted preprocessor from the streamed references and statistics."""
    arrays: dict[str, np.ndarray] = {}
    if refs is not None:
        arrays["landmarks.reference"] = refs[0].reference_
        arrays["targets.reference"] = refs[1].reference_
    if standardize:
        for block, std in (("landmarks", stats.landmarks), ("targets", stats.targets)):
            arrays[f"{block}.mean"], arrays[f"{block}.scale"] = std.mean_, std.scale_
    meta = {"version": PREPROCESS_STATE_VERSION, "quantile": refs is not None,
            "standardize": standardize, "n_landmarks": n_landmarks, "n_targets": n_targets}
    return ProfilePreprocessor.from_state(arrays, meta)


def _standardize_sums(stats: _Stats, standardize: bool) -> None:
    """Turn the sums of the normalised profiles into those of the preprocessed
    (standardised) ones, in place and exactly (:meth:`GramStats.standardize_`); the
    per-group sums too."""
    if not standardize:
        return
    means = (stats.landmarks.mean_, stats.landmarks.scale_, stats.targets.mean_,
             stats.targets.scale_)
    if stats.grouped is not None:
        stats.grouped.standardize_(*means)
    elif stats.gram is not None:
        stats.gram.standardize_(*means)


def _model_stats(est: Any, stats: _Stats, standardize: bool) -> dict[str, np.ndarray]:
    """The neural model's own standardisation of its (preprocessed) inputs and targets: what
    its ``fit`` computes from the training rows. After the preprocessor's standardisation
    those rows have mean 0 and SD 1 exactly, so it is the identity then."""
    p, t = stats.landmarks.n_features_in_, stats.targets.n_features_in_
    if standardize or not est.get_params().get("standardize", True):
        return {"x_mean": np.zeros(p, np.float32), "x_scale": np.ones(p, np.float32),
                "y_mean": np.zeros(t, np.float32), "y_scale": np.ones(t, np.float32)}
    return {"x_mean": stats.landmarks.mean_, "x_scale": stats.landmarks.scale_,
            "y_mean": stats.targets.mean_, "y_scale": stats.targets.scale_}


def _scaled(values: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(values - mean) / scale`` in place (``values`` is a fresh array); nothing to do
    for the identity the preprocessor's standardisation leaves."""
    if not (mean.any() or (scale != 1).any()):
        return values
    values -= mean.astype(np.float32)
    values /= scale.astype(np.float32)
    return values


def _stream_source(plan: _Plan, stats: _Stats, pre: ProfilePreprocessor,
                   model_stats: dict[str, np.ndarray], identity: str) -> StreamedSource:
    def transform(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = _scaled(pre.transform_landmarks(X), model_stats["x_mean"], model_stats["x_scale"])
        y = _scaled(pre.transform_targets(Y), model_stats["y_mean"], model_stats["y_scale"])
        return x, y

    chunk = max(p.alignment for p in plan.inputs)
    chunk = max(chunk, (min(plan.block_rows, 1024) // chunk) * chunk)
    return StreamedSource(plan.inputs, stats.usable, transform=transform,
                          n_in=len(plan.landmarks), n_out=len(plan.targets), chunk_rows=chunk,
                          window_rows=plan.window_rows, identity=identity)


def _estimator(name: str, params: dict[str, Any], *, device: str, progress: bool,
               checkpoint_dir: str | os.PathLike[str] | None) -> tuple[Any, str]:
    """The estimator and how it trains out of core (``gram`` or ``stream``)."""
    if name in NOT_OUT_OF_CORE:
        raise ConfigError(f"model {name!r} cannot train out of core: {NOT_OUT_OF_CORE[name]}; "
                          f"use {', '.join(OUT_OF_CORE)} or train on a subset that fits the "
                          "memory limit")
    unknown = [k for k in params if k not in param_names(name)]
    if unknown:
        raise ConfigError(f"model {name!r} has no parameter {', '.join(map(repr, unknown))}; "
                          f"it accepts: {', '.join(sorted(param_names(name)))}")
    est = make_model(name, **params)
    have = est.get_params(deep=False)
    extra = {"device": device, "progress": bool(progress),
             "checkpoint_dir": os.fspath(checkpoint_dir) if checkpoint_dir else None}
    est.set_params(**{k: v for k, v in extra.items()
                      if k in have and k not in params and v is not None})
    if hasattr(est, "fit_stream"):
        return est, "stream"
    if hasattr(est, "fit_gram"):
        return est, "gram"
    reason = OUT_OF_CORE.get(name, "it needs every training profile in memory")
    raise ConfigError(f"model {name!r} with these parameters cannot train out of core "
                      f"(out of core it trains {reason})")


def _validation_file(valid: Any, plan: _Plan, means: np.ndarray, *, scale: str | None,
                     annotation: Any, data_dir: Any, nonfinite: str = "error"
                     ) -> tuple[np.ndarray, np.ndarray]:
    vdata, _ = load_input(valid, scale=scale, annotation=annotation, data_dir=data_dir,
                          nonfinite=nonfinite)
    lm = match_genes(plan.landmarks, vdata.gene_ids)
    if not lm.present.any():
        raise MissingGenesError(lm.missing, what="landmark genes", source=vdata.source)
    X = lm.take(vdata.values)
    X = np.where(np.isnan(X), means[None, :], X).astype(np.float32)
    return X, match_genes(plan.targets, vdata.gene_ids).take(vdata.values)


def _symbols(plan: _Plan) -> dict[str, str]:
    out = dict(plan.match.symbols)
    for p in plan.inputs:
        genes = p.harmonizer.mapping.genes
        if "symbol" in genes:
            out.update({str(k): str(v) for k, v in genes["symbol"].dropna().items() if str(v)})
    return out


def _target_std(std: Standardizer) -> np.ndarray:
    a = std.accumulator_state()
    with np.errstate(invalid="ignore", divide="ignore"):
        m1 = a["s1"] / a["n"]
        return np.sqrt(np.maximum(a["s2"] / a["n"] - m1 * m1, 0.0))


def _nan_stat(values: pd.Series, how: Callable) -> float | None:
    v = values.to_numpy(dtype=float)
    return float(how(v)) if np.isfinite(v).any() else None


# ====================================================================== training
def train_streamed(
    inputs: Sequence[TrainingInput | str | os.PathLike[str]],
    *,
    model: str = "default",
    panel: Any = "l1000",
    valid: Any = None,
    params: dict[str, Any] | None = None,
    scale: str | None = None,
    annotation: Any = None,
    data_dir: str | os.PathLike[str] | None = None,
    dedup: bool = True,
    quantile: bool = True,
    standardize: bool = True,
    valid_fraction: float = VALID_FRACTION,
    device: str = "auto",
    checkpoint_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    memory_limit: str | int | None = None,
    sample_attributes: Any = None,
    reference_samples: int = REFERENCE_SAMPLES,
    dedup_threshold: float = 1.0,
    groups: str | None = None,
    refit: bool | str = "auto",
    nonfinite: str = "error",
) -> InferenceModel:
    """Train a landmark -> target model streaming the inputs (see the module docstring).

    Parameters are those of :func:`~geneinfer.train.workflow.train_model`, plus
    ``memory_limit`` (what blocks, validation profiles and model state may take),
    ``sample_attributes`` (a table joined to the inputs' samples) and ``reference_samples``
    (training profiles the quantile reference is computed from). ``groups`` names the
    sample-metadata column of the studies (default: the readers' own, ARCHS4 series or
    GTEx tissue, else the file); whole groups are held out for validation and early
    stopping. Hyper-parameters that linear models choose are chosen over the training
    groups from per-group sums, as in memory (by GCV on the sums with fewer than two
    groups; ``refit`` does not apply: the validation profiles are never trained on).
    ``nonfinite`` is the readers' policy for infinite values.
    """
    del refit  # out of core the held-out profiles stay out (no second pass over the data)
    t_start = time.monotonic()
    name = model
    if model in ("default", None):
        name = OUT_OF_CORE_DEFAULT
        if progress:
            _say(f"out of core the default model is {OUT_OF_CORE_DEFAULT} (the in-memory "
                 f"default, {DEFAULT_MODEL}, needs every profile in memory)")
    params = dict(params or {})
    est, mode = _estimator(name, params, device=device, progress=progress,
                           checkpoint_dir=checkpoint_dir)
    budget = memory_budget(memory_limit)
    items = as_inputs(inputs)
    if dedup and progress:
        _say("near-duplicate removal compares every pair of profiles; out of core it is "
             "skipped (--no-dedup silences this)")
    with contextlib.ExitStack() as stack:
        readers = _open_all(items, sample_attributes, stack, nonfinite=nonfinite)
        harmonizers = _harmonize_inputs(readers, scale=scale, annotation=annotation,
                                        data_dir=data_dir, progress=progress)
        chooses = mode == "gram" and est.chooses_hyperparameters()
        plan = _make_plan(readers, harmonizers, panel, data_dir=data_dir, valid=valid,
                          fraction=valid_fraction, budget=budget, mode=mode, groups=groups,
                          scored_genes=(lambda t: len(est.scored_genes(t))) if chooses
                          else None)
        selection = (_group_selection(plan, est.scored_genes(len(plan.targets)))
                     if chooses else None)
        precision = str(est.get_params().get("precision", "float32"))
        settings = {"quantile": quantile, "standardize": standardize, "mode": mode,
                    "precision": precision, "reference_samples": int(reference_samples),
                    "budget_blocks": plan.block_rows,
                    "group_selection": None if selection is None else selection.settings()}
        plan.fingerprint = _fingerprint(plan, settings)
        if progress:
            _say(f"{plan.n_total} profiles in {len(plan.inputs)} input(s), "
                 f"{len(plan.landmarks)} landmarks -> {len(plan.targets)} targets; "
                 f"{len(plan.blocks)} blocks of up to {plan.block_rows} profiles; "
                 f"validation: {plan.valid_desc}")
        # under torchrun every rank makes the same passes; rank 0 alone keeps their state
        keep = checkpoint_dir and int(os.environ.get("RANK", "0") or 0) == 0
        folder = Path(checkpoint_dir) / "outofcore" if keep else None
        ckpt = _Checkpoint(folder, plan.fingerprint, len(plan.landmarks), len(plan.targets))
        passes: dict[str, Any] = {}
        refs = None
        if quantile:
            qx, qy, passes["reference"] = _reference_pass(plan, ckpt, n_reference=int(
                reference_samples), progress=progress)
            refs = (qx, qy)
        stats, passes["statistics"] = _statistics_pass(plan, ckpt, refs=refs,
                                                       gram=mode == "gram",
                                                       precision=precision, progress=progress,
                                                       selection=selection)
        pre = _preprocessor(refs, stats, standardize=standardize,
                            n_landmarks=len(plan.landmarks), n_targets=len(plan.targets))
        means = stats.raw_landmarks.mean_.astype(np.float32)
        if valid is not None:
            X_va, Y_va = _validation_file(valid, plan, means, scale=scale,
                                          annotation=annotation, data_dir=data_dir,
                                          nonfinite=nonfinite)
        else:
            X_va, Y_va, _ = ckpt.validation()
        if not len(X_va):
            raise GeneinferError("no complete validation profile (every held-out profile has "
                                 "missing values); give a validation file (--valid)")
        t_fit = time.monotonic()
        if mode == "gram":
            _standardize_sums(stats, standardize)
            if stats.grouped is not None:
                est.fit_grouped_gram(stats.grouped)
            else:
                est.fit_gram(stats.gram.centered())  # type: ignore[union-attr]
            stats.gram = stats.grouped = None
        else:
            ms = _model_stats(est, stats, standardize)
            Y_fill = np.where(np.isnan(Y_va), stats.raw_targets.mean_[None, :],
                              Y_va).astype(np.float32)
            y_va = _scaled(pre.transform_targets(Y_fill), ms["y_mean"], ms["y_scale"])
            del Y_fill
            val = BatchSource(_scaled(pre.transform_landmarks(X_va), ms["x_mean"],
                                      ms["x_scale"]), y_va)
            source = _stream_source(plan, stats, pre, ms, plan.fingerprint)
            est.fit_stream(source, val, **ms)
            del val, y_va  # the scored copies: the metrics below use the raw profiles
        passes["fit"] = {"seconds": time.monotonic() - t_fit}
        n_train = int(stats.usable.sum())
        bundle = _bundle(est, pre, plan, stats, means, X_va, Y_va, name)
    _describe(bundle, plan, stats, passes, name=name, dedup=dedup, quantile=quantile,
              standardize=standardize, n_train=n_train, n_valid=len(X_va), budget=budget,
              seconds=time.monotonic() - t_start, reference_samples=int(reference_samples))
    return bundle


def _bundle(est: Any, pre: ProfilePreprocessor, plan: _Plan, stats: _Stats,
            means: np.ndarray, X_va: np.ndarray, Y_va: np.ndarray, name: str
            ) -> InferenceModel:
    symbols = _symbols(plan)
    kind = plan.inputs[0].harmonizer.gene_id_kind
    bundle = InferenceModel.from_fitted(
        est, pre, plan.landmarks, plan.targets,
        landmark_symbols=[symbols.get(g, g) for g in plan.landmarks],
        target_symbols=[symbols.get(g, g) for g in plan.targets],
        landmark_means=means, gene_id_kind=kind if kind != "unknown" else "entrez",
    )
    bundle.gene_metrics_ = validation_metrics(Y_va, bundle.predict_log2(X_va), plan.targets,
                                             train_std=_target_std(stats.raw_targets))
    return bundle


def _describe(bundle: InferenceModel, plan: _Plan, stats: _Stats, passes: dict[str, Any], *,
              name: str, dedup: bool, quantile: bool, standardize: bool,
              n_train: int, n_valid: int, budget: int, seconds: float,
              reference_samples: int) -> None:
    metrics = bundle.gene_metrics
    for info in passes.values():
        if info.get("seconds") and info.get("profiles_read"):
            info["profiles_per_s"] = info["profiles_read"] / info["seconds"]
    bundle.info_ = {
        "model": name,
        "params": bundle.estimator.get_params(deep=False),
        "training_files": [p.name for p in plan.inputs],
        "inputs": [p.harmonizer.report.to_json() for p in plan.inputs],
        "groups": TrainingGroups(np.asarray(plan.group_names)[plan.groups],
                                 plan.group_column, None).describe(),
        "validation": plan.valid_desc,
        "validation_rule": "group-holdout" if len(plan.group_names) > 1 else "holdout",
        "validation_used_for_early_stopping": hasattr(bundle.estimator, "fit_stream"),
        "selection": getattr(bundle.estimator, "selection_", None),
        "panel": plan.match.summary(),
        "n_train_samples": n_train,
        "n_valid_samples": int(n_valid),
        "missing_values": {"samples_with_missing_values": int(stats.n_incomplete)},
        "dedup": {"enabled": False, "skipped": bool(dedup),
                  "why": "out of core: comparing every pair of profiles is not streamed"},
        "quantile": bool(quantile),
        "standardize": bool(standardize),
        "out_of_core": {"memory_limit": int(budget), "block_rows": int(plan.block_rows),
                        "blocks": len(plan.blocks), "reference_samples": reference_samples,
                        "groups": len(plan.group_names), "passes": passes,
                        "seconds": seconds},
        "valid_mae": _nan_stat(metrics["valid_mae"], np.nanmean),
        "valid_mae_std": _nan_stat(metrics["valid_mae_std"], np.nanmean),
        "valid_r_median": _nan_stat(metrics["valid_r"], np.nanmedian),
        "geneinfer_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }

"""One harmoniser: any input -> log2 expression with canonical gene ids.

Every command (``train``, ``predict``, ``study``, ``demo``, calibration) and the Python API
bring their inputs onto the same footing through this module, so a fix here fixes them all.
For one input (a file, a block reader, or data in memory) a :class:`Harmonizer` is planned
once, from its gene ids and metadata and its first samples:

1. **scale**: given by the caller, else stated by the file, else detected
   (:func:`geneinfer.scales.resolve_scale`, on the first 1,000 samples);
2. **genes**: probes, Ensembl ids or symbols -> Entrez ids
   (:func:`geneinfer.genes.plan_gene_mapping`; probes of a file that names its GEO platform,
   such as a series matrix, use that platform's annotation when it is cached);

and then applied to any block of samples (the same numbers whether an input is read whole or
in blocks):

* log2 values are kept; linear values become ``log2(max(x, 1))``; columns that share a gene
  are averaged (D-GEX's mean of a gene's probes, on log2);
* counts become counts per million with the sample's total count of *all* input genes as its
  library size, columns that share a gene are summed (reads of one gene add up), then
  ``log2(CPM + 1)``;
* z-scores and log ratios cannot be converted and are refused with the way out.

:class:`LandmarkInputs` then finds a model's landmarks among the harmonised genes and turns
raw blocks into the model's landmark matrix, filling absent landmarks from the training means
when asked to.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from geneinfer.errors import GeneinferError, InputFormatError, MissingGenesError
from geneinfer.expression import ExpressionData
from geneinfer.genes import GeneIdMap, GeneMapping, MappingReport, plan_gene_mapping
from geneinfer.genes.mapping import Annotation
from geneinfer.genes.matching import GeneMatch, match_genes
from geneinfer.io import BlockReader
from geneinfer.preprocess.rnaseq import counts_to_cpm
from geneinfer.scales import DETECTION_ROWS, ResolvedScale, resolve_scale

logger = logging.getLogger(__name__)

#: Linear intensities are clipped at this value before log2 (MAS5 values below 1 are noise;
#: the floor keeps zeros finite).
LINEAR_FLOOR = 1.0
#: Prior count added to counts-per-million before log2.
CPM_PRIOR = 1.0
_CONVERSIONS = {"log2": "none", "linear": f"log2(max(x, {LINEAR_FLOOR:g}))",
                "counts": f"log2(CPM + {CPM_PRIOR:g})"}


def not_convertible(scale: str, source: str | None) -> GeneinferError:
    """The error for values that cannot be put on log2 expression (z-scores, log ratios)."""
    return GeneinferError(
        f"{source or 'the input data'}: values are on the {scale!r} scale (centred on zero: "
        "z-scores or log ratios), which carries no expression level; give expression levels "
        "(log2, linear or counts; for L1000 data the level 3 file), or state the scale "
        "(--scale log2) if these really are log2 expression values"
    )


def linear_to_log2(values: np.ndarray, *, floor: float = LINEAR_FLOOR) -> np.ndarray:
    """``log2(max(x, floor))`` in float32; NaN stays NaN."""
    if floor <= 0:
        raise GeneinferError(f"linear floor must be positive, got {floor}")
    v = np.asarray(values, dtype=np.float32)
    # np.maximum (unlike fmax) propagates NaN, so missing values stay missing
    return np.log2(np.maximum(v, np.float32(floor)), dtype=np.float32)


@dataclass
class HarmonizeReport:
    """What harmonising one input did (shown by every command, stored in model files)."""

    source: str
    scale: ResolvedScale
    conversion: str
    genes: MappingReport
    #: infinite values the reader turned into missing ones (``nonfinite="missing"``)
    nonfinite_as_missing: int = 0

    def summary(self) -> str:
        conv = "" if self.conversion == "none" else f" -> {self.conversion}"
        nonfinite = (f"; {self.nonfinite_as_missing} non-finite values read as missing"
                     if self.nonfinite_as_missing else "")
        return (f"{self.source}: {self.scale.describe()}{conv}; {self.genes.summary()}"
                f"{nonfinite}")

    def to_json(self) -> dict[str, Any]:
        g = self.genes
        return {"source": self.source, "scale": self.scale.scale, "scale_from": self.scale.how,
                "conversion": self.conversion, "gene_ids": g.source_kind, "via": g.via,
                "n_input_genes": g.n_input, "n_genes": g.n_output,
                "n_unmapped": g.n_unmapped, "n_merged": g.n_merged,
                "nonfinite_as_missing": self.nonfinite_as_missing,
                "summary": self.summary()}


@dataclass
class Harmonizer:
    """How one input's blocks become log2 expression with canonical genes.

    Build it with :meth:`plan` (or :meth:`for_reader`); :attr:`gene_ids` are the output
    genes and :meth:`transform` converts a block.
    """

    scale: ResolvedScale
    mapping: GeneMapping
    source: str

    @classmethod
    def plan(
        cls,
        *,
        gene_ids: Any,
        genes: Any,
        gene_id_kind: str,
        head: np.ndarray,
        stated_scale: str = "unknown",
        scale: str | None = None,
        annotation: Annotation = None,
        id_map: GeneIdMap | None = None,
        known: GeneIdMap | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        to: str = "entrez",
        map_genes: bool = True,
        source: str | None = None,
        platform: str | None = None,
    ) -> Harmonizer:
        """Decide the scale (from ``head``: the input's first samples) and the gene mapping.

        ``map_genes=False`` keeps the input's genes as they are (scale conversion only);
        ``known`` are genes the caller knows (a model's genes and symbols), trusted first;
        ``platform`` is the GEO platform the input names (see :func:`named_platform`).
        """
        name = source or "the input data"
        resolved = resolve_scale(head, stated=stated_scale, given=scale, source=name)
        if resolved.scale not in _CONVERSIONS:
            raise not_convertible(resolved.scale, name)
        if map_genes:
            mapping = plan_gene_mapping(gene_ids, genes, gene_id_kind, to=to,
                                        annotation=annotation, id_map=id_map, known=known,
                                        data_dir=data_dir, source=name, platform=platform)
        else:
            mapping = GeneMapping.identity(gene_ids, genes, gene_id_kind)
        return cls(resolved, mapping, name)

    @classmethod
    def for_reader(cls, reader: BlockReader, **options: Any) -> Harmonizer:
        """:meth:`plan` for a :class:`~geneinfer.io.BlockReader` (reads its first samples)."""
        head = reader.read(0, min(reader.n_samples, DETECTION_ROWS))
        if "platform" not in options:
            options["platform"] = _reader_platform(reader)
        return cls.plan(gene_ids=reader.gene_ids, genes=reader.genes,
                        gene_id_kind=reader.gene_id_kind, head=head, stated_scale=reader.scale,
                        source=reader.source, **options)

    @property
    def gene_ids(self):
        return self.mapping.gene_ids

    @property
    def gene_id_kind(self) -> str:
        return self.mapping.gene_id_kind

    @property
    def changes_input(self) -> bool:
        """Whether values are converted or genes re-keyed (worth telling the user)."""
        return self.scale.scale != "log2" or not self.mapping.is_identity

    def announce(self) -> None:
        """Say once (a warning, hidden only by ``--quiet``) when the input is converted or
        re-keyed: train and predict tell the user the same way."""
        if self.changes_input:
            logger.warning("%s", self.report.summary())

    @property
    def report(self) -> HarmonizeReport:
        return HarmonizeReport(self.source, self.scale, _CONVERSIONS[self.scale.scale],
                               self.mapping.report)

    def input_columns(self, outputs: np.ndarray | None = None) -> np.ndarray | None:
        """Input columns to read for the output genes at ``outputs`` (None = all columns);
        counts always need every column, since a library size is a sample's total."""
        if outputs is None or self.scale.scale == "counts":
            return None
        return self.mapping.input_columns(outputs)

    def transform(self, raw: np.ndarray, *, outputs: np.ndarray | None = None,
                  columns: np.ndarray | None = None, sample_ids: Sequence[str] | None = None
                  ) -> np.ndarray:
        """log2 values of the output genes (all, or those at ``outputs``) from ``raw``:
        samples x the input ``columns`` that :meth:`input_columns` named (None = all)."""
        kind = self.scale.scale
        if kind == "counts":
            cpm = counts_to_cpm(raw, source=self.source, sample_ids=sample_ids)
            summed = self.mapping.apply(cpm, how="sum", outputs=outputs, columns=columns)
            return np.log2(summed.astype(np.float64) + CPM_PRIOR).astype(np.float32)
        log2 = linear_to_log2(raw) if kind == "linear" else np.asarray(raw, dtype=np.float32)
        return self.mapping.apply(log2, how="mean", outputs=outputs, columns=columns)

    def to_data(self, data: ExpressionData) -> ExpressionData:
        """``data`` (the input this harmoniser was planned for) on log2 with canonical genes."""
        values = self.transform(data.values, sample_ids=list(data.sample_ids))
        return ExpressionData(values=values, gene_ids=self.gene_ids, sample_ids=data.sample_ids,
                              genes=self.mapping.genes, samples=data.samples, scale="log2",
                              gene_id_kind=self.gene_id_kind, source=data.source)


#: sample-metadata column in which GEO files (SOFT, series matrix) name their platform
PLATFORM_COLUMN = "platform_id"


def named_platform(samples: Any) -> str | None:
    """The one GEO platform a sample table names (``platform_id``), else None."""
    if samples is None or PLATFORM_COLUMN not in getattr(samples, "columns", ()):
        return None
    values = {str(v).strip() for v in samples[PLATFORM_COLUMN].dropna()}
    return values.pop() if len(values) == 1 else None


def _reader_platform(reader: BlockReader) -> str | None:
    for name, get in reader.sample_columns():
        if name == PLATFORM_COLUMN:
            values = {str(v).strip() for v in get() if v is not None}
            return values.pop() if len(values) == 1 else None
    return None


def harmonize(
    data: ExpressionData,
    *,
    scale: str | None = None,
    annotation: Annotation = None,
    id_map: GeneIdMap | None = None,
    known: GeneIdMap | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    to: str = "entrez",
    platform: str | None = None,
) -> tuple[ExpressionData, HarmonizeReport]:
    """``data`` on log2 with canonical gene ids, and a report of what was done.

    Parameters
    ----------
    scale
        The scale of the values, when the file does not say it or says it wrongly;
        default: stated by the file, else detected.
    annotation
        For probe ids: a platform (``"GPL570"``), an annotation file, a table indexed by
        probe id, or None (the input's own Entrez column, else the annotation of the
        platform the data names when cached, else GPL96).
    platform
        The data's GEO platform; default: the one its ``platform_id`` column names.
    id_map, data_dir
        Gene tables for Ensembl ids and symbols (:func:`geneinfer.genes.load_id_map`).
    known
        Genes the caller knows (a model's genes with their symbols), trusted first.
    to
        The canonical id kind (``"entrez"``).
    """
    harmonizer = Harmonizer.plan(
        gene_ids=data.gene_ids, genes=data.genes, gene_id_kind=data.gene_id_kind,
        head=data.values, stated_scale=data.scale, scale=scale, annotation=annotation,
        id_map=id_map, known=known, data_dir=data_dir, to=to, source=data.source,
        platform=platform or named_platform(data.samples),
    )
    harmonizer.announce()
    return harmonizer.to_data(data), harmonizer.report


def to_log2(data: ExpressionData, *, scale: str | None = None) -> ExpressionData:
    """``data`` on log2, genes unchanged (the scale step of :func:`harmonize`)."""
    if data.scale == "log2" and scale in (None, "log2"):
        return data
    harmonizer = Harmonizer.plan(
        gene_ids=data.gene_ids, genes=data.genes, gene_id_kind=data.gene_id_kind,
        head=data.values, stated_scale=data.scale, scale=scale, map_genes=False,
        source=data.source,
    )
    return harmonizer.to_data(data)


# ---------------------------------------------------------------------------- model inputs
MISSING_POLICIES = ("error", "impute")
#: Largest share of a model's landmarks that may be imputed (filled with training means)
#: unless the caller raises it: beyond this, predictions mostly repeat the training means.
MAX_IMPUTE_FRACTION = 0.1


class TooManyAbsentError(MissingGenesError):
    """More of a model's landmarks are absent than may be imputed."""

    def __init__(self, missing: list[str], *, n_landmarks: int, limit: float,
                 source: str | None) -> None:
        super().__init__(missing, what="landmark genes of the model", source=source)
        share = len(missing) / max(n_landmarks, 1)
        where = f" in {source}" if source else ""
        self.args = (
            f"{len(missing)} of {n_landmarks} landmark genes of the model are missing{where} "
            f"({share:.1%}), more than the {limit:.0%} that may be imputed from training means "
            "(predictions would mostly repeat them); give data with the landmarks, train a "
            "model on the ones it measures (geneinfer train --landmarks-from), or force "
            f"it with --max-impute {_ceil_share(share)} (max_impute_fraction=)",)


def _ceil_share(share: float) -> str:
    """The smallest two-decimal share at least ``share`` (what to pass to force it)."""
    return f"{min(1.0, np.ceil(share * 100) / 100):.2f}".rstrip("0").rstrip(".")


def check_imputable(n_absent: int, landmark_ids: Sequence[str], absent: Sequence[str], *,
                    max_fraction: float = MAX_IMPUTE_FRACTION,
                    source: str | None = None) -> None:
    """Refuse to impute more than ``max_fraction`` of a model's landmarks
    (:class:`TooManyAbsentError` says how many and how to force it)."""
    if not 0.0 <= max_fraction <= 1.0:
        raise GeneinferError(f"max_impute_fraction must be between 0 and 1, got {max_fraction}")
    if n_absent > max_fraction * len(landmark_ids):
        raise TooManyAbsentError(list(absent), n_landmarks=len(landmark_ids),
                                 limit=max_fraction, source=source)


#: what to do about landmarks an input lacks (an older or other platform)
MISSING_LANDMARKS_HINT = (
    "train a model on the landmarks this input measures (geneinfer train --landmarks-from "
    "THIS_FILE ...) or fill them from the training means (--missing-landmarks impute)"
)


@dataclass
class LandmarkInputs:
    """How the blocks of one input become a model's log2 landmark matrix.

    Attributes
    ----------
    harmonizer
        The input's :class:`Harmonizer`.
    match
        The model's landmarks among the harmonised genes.
    read_cols
        Input columns to read (None = all).
    outputs
        Harmonised genes computed (the present landmarks' positions).
    means
        Training means of the landmarks, for ``missing="impute"``.
    missing
        ``"error"``: absent landmarks and missing values are errors naming them;
        ``"impute"``: they get the training means.
    """

    harmonizer: Harmonizer
    match: GeneMatch
    read_cols: np.ndarray | None
    outputs: np.ndarray
    means: np.ndarray | None
    missing: str
    landmark_names: list[str]

    @classmethod
    def plan(
        cls,
        harmonizer: Harmonizer,
        landmark_ids: Sequence[str],
        *,
        landmark_symbols: Sequence[str] | None = None,
        means: np.ndarray | None = None,
        missing: str = "error",
        max_impute_fraction: float = MAX_IMPUTE_FRACTION,
    ) -> LandmarkInputs:
        """Find the landmarks; absent ones are an error unless ``missing="impute"``, and
        more than ``max_impute_fraction`` of them absent is an error even then (every
        prediction path plans its inputs here, so every path applies the limit)."""
        if missing not in MISSING_POLICIES:
            raise GeneinferError(f"missing landmarks must be 'error' or 'impute', not "
                                 f"{missing!r}")
        symbols = list(landmark_symbols or landmark_ids)
        names = [f"{g} ({s})" if s != g else g for g, s in zip(landmark_ids, symbols)]
        match = match_genes(landmark_ids, harmonizer.gene_ids)
        if match.n_missing and missing == "error":
            absent = ~match.present
            raise MissingGenesError(list(np.asarray(landmark_ids)[absent]),
                                    names=list(np.asarray(names)[absent]),
                                    what="landmark genes of the model",
                                    source=harmonizer.source, hint=MISSING_LANDMARKS_HINT)
        if missing == "impute" and means is None:
            raise GeneinferError("this model has no training means; cannot impute landmarks")
        if missing == "impute":
            check_imputable(match.n_missing, landmark_ids,
                            list(np.asarray(landmark_ids)[~match.present]),
                            max_fraction=max_impute_fraction, source=harmonizer.source)
        outputs = match.columns()
        return cls(harmonizer, match, harmonizer.input_columns(outputs), outputs,
                   None if means is None else np.asarray(means, dtype=np.float32), missing,
                   names)

    @property
    def n_absent(self) -> int:
        return self.match.n_missing

    def landmarks(self, raw: np.ndarray, *, sample_ids: Sequence[str], where: str = ""
                  ) -> tuple[np.ndarray, int]:
        """The landmark matrix of a block (``raw``: its :attr:`read_cols`) and the number of
        missing values imputed in it (absent landmarks not counted)."""
        values = self.harmonizer.transform(raw, outputs=self.outputs, columns=self.read_cols,
                                           sample_ids=sample_ids)
        X = self.match.place(values)
        if np.isinf(X).any():  # readers refuse them; data handed over in memory may not
            self._inf_error(X, sample_ids, where)
        bad = np.isnan(X)
        bad[:, ~self.match.present] = False  # absent landmarks were accepted up front
        if bad.any() and self.missing == "error":
            self._nan_error(bad, sample_ids, where)
        if self.missing == "impute":
            X = np.where(np.isnan(X), self.means[None, :], X).astype(np.float32)
        return X, int(bad.sum())

    def _inf_error(self, X: np.ndarray, sample_ids: Sequence[str], where: str) -> None:
        r, c = (int(i) for i in np.argwhere(np.isinf(X))[0])
        raise InputFormatError(
            self.harmonizer.source,
            f"infinite landmark value of {sample_ids[r]} / {self.landmark_names[c]}",
            where=where or None, expected="finite values (NaN marks a missing one)")

    def _nan_error(self, bad: np.ndarray, sample_ids: Sequence[str], where: str) -> None:
        rows, cols = np.nonzero(bad)
        shown = "; ".join(f"{sample_ids[r]} / {self.landmark_names[c]}"
                          for r, c in list(zip(rows, cols))[:5])
        raise InputFormatError(
            self.harmonizer.source,
            f"{int(bad.sum())} missing (NaN) landmark values in {len(np.unique(rows))} "
            f"samples, e.g. {shown}",
            where=where or None,
            expected="finite values, or --missing-landmarks impute",
        )

"""Sample attribute tables joined to an expression file's samples (GTEx's tissues).

GTEx publishes the expression matrix (gene TPM as GCT) and, separately, one row of
attributes per sample (``GTEx_Analysis_v8_Annotations_SampleAttributesDS.txt``: ``SAMPID``
then ``SMTS`` tissue, ``SMTSD`` detailed tissue, ``SMRIN``, ...). :func:`read_sample_attributes`
reads such a table (first column = sample id) and :class:`AttributedBlocks` serves the
samples of any :class:`~geneinfer.io.BlockReader` with those columns added, and the
detailed tissue as the sample's group (``group_column = "SMTSD"``).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable

import numpy as np
import pandas as pd

from geneinfer.errors import InputFormatError
from geneinfer.io._common import NA_TOKENS, PathLike, check_readable, is_gzip, translate_errors
from geneinfer.io.blocks import BlockReader

log = logging.getLogger(__name__)

#: attribute columns that name a sample's group, most specific first (GTEx detailed tissue,
#: then tissue)
GROUP_COLUMNS = ("SMTSD", "SMTS")


def read_sample_attributes(path: PathLike) -> pd.DataFrame:
    """A tab-separated table of sample attributes, indexed by its first column (text)."""
    path = check_readable(path)
    with translate_errors(path, what="tab-separated sample attribute table"):
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False,
                            na_values=list(NA_TOKENS), quoting=csv.QUOTE_NONE,
                            compression="gzip" if is_gzip(path) else None)
    if table.shape[1] < 2:
        raise InputFormatError(path, f"{table.shape[1]} column(s)", where=1,
                               expected="a sample id column (e.g. SAMPID) and attributes, "
                               "tab-separated")
    ids = table.iloc[:, 0].astype(str).str.strip()
    dup = ids[ids.duplicated()]
    if len(dup):
        raise InputFormatError(path, f"sample {dup.iloc[0]!r} is listed twice",
                               where=f"column {table.columns[0]}", expected="one row per sample")
    table = table.iloc[:, 1:].set_axis(pd.Index(ids, dtype=object), axis=0)
    return table.astype(object).where(table.notna(), None)


class AttributedBlocks(BlockReader):
    """Another reader's samples with attribute columns added (see the module docstring).

    Parameters
    ----------
    inner
        The expression reader (closed with this one).
    attributes
        Table indexed by sample id (:func:`read_sample_attributes`).
    source
        Where the attributes come from, for messages.
    """

    def __init__(self, inner: BlockReader, attributes: pd.DataFrame, *, source: str) -> None:
        self.inner = inner
        self.source, self.path = inner.source, inner.path
        self.n_samples, self.gene_ids, self.genes = inner.n_samples, inner.gene_ids, inner.genes
        self.scale, self.gene_id_kind = inner.scale, inner.gene_id_kind
        ids = inner.sample_ids()
        found = ids.isin(attributes.index)
        if not found.any():
            raise InputFormatError(
                source, f"none of the {len(ids)} samples of {inner.source} is listed "
                f"(e.g. {', '.join(ids[:3])})", where=f"column {attributes.index.name or 1}",
                expected="the expression file's sample ids in the first column",
            )
        if not found.all():
            log.warning("%s: %d of %d samples of %s have no attributes", source,
                        int((~found).sum()), len(ids), inner.source)
        own = {name for name, _ in inner.sample_columns()}
        self.attributes = attributes.reindex(ids)[[c for c in attributes.columns
                                                   if c not in own]]
        self.n_without_attributes = int((~found).sum())
        self.group_column = next((c for c in GROUP_COLUMNS if c in self.attributes),
                                 getattr(inner, "group_column", None))

    def read(self, start: int, stop: int, cols: np.ndarray | None = None) -> np.ndarray:
        return self.inner.read(start, stop, cols)

    def read_rows(self, rows: np.ndarray, cols: np.ndarray | None = None) -> np.ndarray:
        return self.inner.read_rows(rows, cols)

    def sample_ids(self) -> pd.Index:
        return self.inner.sample_ids()

    def sample_columns(self) -> list[tuple[str, Callable[[], np.ndarray]]]:
        extra = [(str(c), (lambda c=c: self.attributes[c].to_numpy()))
                 for c in self.attributes.columns]
        return [*self.inner.sample_columns(), *extra]

    def samples(self, start: int = 0, stop: int | None = None) -> pd.DataFrame:
        own = self.inner.samples(start, stop)
        return pd.concat([own, self.attributes.iloc[start:stop].set_axis(own.index)], axis=1)

    def fingerprint(self) -> dict[str, object]:
        return {**self.inner.fingerprint(), "attributes": list(map(str, self.attributes))}

    def close(self) -> None:
        self.inner.close()

"""Which genes of a panel or a model a data set has: the one landmark matcher.

Data reach the matcher with canonical gene ids (:func:`geneinfer.preprocess.harmonize`), so
matching is by id. Training resolves a panel against its data (:func:`match_panel`);
prediction, calibration and the study find a model's landmarks (and targets) in an input
(:func:`match_genes`). Nothing is dropped silently: missing genes are listed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from geneinfer.errors import GeneinferError, MissingGenesError
from geneinfer.genes.panels import Panel


@dataclass
class GeneMatch:
    """Where each wanted gene is among the available ones.

    Attributes
    ----------
    wanted
        The genes asked for, in order.
    positions
        Per wanted gene: its column among the available genes, or -1.
    """

    wanted: list[str]
    positions: np.ndarray

    @property
    def present(self) -> np.ndarray:
        return self.positions >= 0

    @property
    def missing(self) -> list[str]:
        return [g for g, ok in zip(self.wanted, self.present) if not ok]

    @property
    def n_missing(self) -> int:
        return int((~self.present).sum())

    def columns(self) -> np.ndarray:
        """Available columns of the present genes (in wanted order)."""
        return self.positions[self.present]

    def place(self, present_values: np.ndarray) -> np.ndarray:
        """A samples x wanted-genes matrix from the values of the present genes (in wanted
        order); absent genes are NaN."""
        out = np.full((present_values.shape[0], len(self.wanted)), np.nan, dtype=np.float32)
        out[:, self.present] = present_values
        return out

    def take(self, values: np.ndarray, *, fill: float | np.ndarray = np.nan) -> np.ndarray:
        """Values of the wanted genes from a samples x available-genes block; absent genes
        get ``fill`` (a scalar, or one value per wanted gene)."""
        out = np.empty((values.shape[0], len(self.wanted)), dtype=np.float32)
        out[:] = fill
        out[:, self.present] = values[:, self.columns()]
        return out


def match_genes(wanted: Sequence[str], available: Sequence[str] | pd.Index) -> GeneMatch:
    """Positions of ``wanted`` genes among ``available`` ones (-1 where absent)."""
    index = available if isinstance(available, pd.Index) else pd.Index(list(available))
    wanted = [str(g) for g in wanted]
    return GeneMatch(wanted, index.get_indexer(pd.Index(wanted)))


@dataclass
class PanelMatch:
    """The genes of a panel that a data set has.

    Attributes
    ----------
    name
        The panel's name.
    landmarks, targets
        Present landmark and target genes (panel order; targets never include landmarks).
    missing_landmarks, missing_targets
        Panel genes the data lack.
    targets_from_data
        The panel names no targets, so every non-landmark gene of the data is one.
    symbols
        Gene id -> symbol from the panel.
    """

    name: str
    landmarks: list[str]
    targets: list[str]
    missing_landmarks: list[str] = field(default_factory=list)
    missing_targets: list[str] = field(default_factory=list)
    targets_from_data: bool = False
    symbols: dict[str, str] = field(default_factory=dict)

    @property
    def landmark_fraction(self) -> float:
        total = len(self.landmarks) + len(self.missing_landmarks)
        return len(self.landmarks) / total if total else 0.0

    def summary(self) -> dict[str, Any]:
        """JSON-able counts (stored in model files)."""
        out: dict[str, Any] = {
            "panel": self.name,
            "landmarks_found": len(self.landmarks),
            "landmarks_in_panel": len(self.landmarks) + len(self.missing_landmarks),
            "landmarks_missing": self.missing_landmarks,
            "targets": len(self.targets),
            "targets_from_data": self.targets_from_data,
        }
        if not self.targets_from_data:
            out["targets_in_panel"] = len(self.targets) + len(self.missing_targets)
            out["targets_missing"] = len(self.missing_targets)
        return out


def match_panel(panel: Panel, gene_ids: Sequence[str] | pd.Index, *,
                source: str | None = None) -> PanelMatch:
    """Resolve ``panel`` against the (canonical) genes a data set measures.

    Raises :class:`~geneinfer.errors.MissingGenesError` when no landmark is present and
    :class:`~geneinfer.errors.GeneinferError` when no target is.
    """
    present = set(map(str, gene_ids))
    lm_all = [str(g) for g in panel.landmarks]
    landmarks = [g for g in lm_all if g in present]
    if not landmarks:
        raise MissingGenesError(lm_all, what=f"landmark genes of panel {panel.name}",
                                source=source)
    panel_lm = set(lm_all)
    if panel.targets:
        targets = [g for g in panel.targets if g in present and g not in panel_lm]
        missing_tg = [g for g in panel.targets if g not in present]
    else:
        targets = [str(g) for g in gene_ids if str(g) not in panel_lm]
        missing_tg = []
    if not targets:
        raise GeneinferError(f"no target genes of panel {panel.name} in {source or 'the data'}")
    return PanelMatch(panel.name, landmarks, targets,
                      [g for g in lm_all if g not in present], missing_tg,
                      not panel.targets, dict(panel.symbols))

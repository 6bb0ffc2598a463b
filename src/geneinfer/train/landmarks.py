"""A panel cut down to the landmarks that one platform measures (``--landmarks-from``).

An older or different array measures only part of a panel: HG-U95Av2 has about 770 of
D-GEX's 943 landmarks. A model trained on all of them cannot be used on such a study
without imputing the absent ones; :func:`panel_measured_in` gives the panel to train the
model that study needs: the landmarks present in the study's file (after harmonising it,
with its annotation), and the panel's other landmarks moved to the targets, so the model
infers them too.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from geneinfer.errors import MissingGenesError
from geneinfer.genes import Panel, get_panel
from geneinfer.io import open_blocks
from geneinfer.preprocess import Harmonizer

logger = logging.getLogger(__name__)


def measured_genes(path: str | os.PathLike[str], *, annotation: Any = None,
                   scale: str | None = None, data_dir: str | os.PathLike[str] | None = None,
                   read_options: dict[str, Any] | None = None) -> set[str]:
    """The canonical (Entrez) genes a file measures, harmonised as training reads it."""
    with open_blocks(path, **(read_options or {})) as reader:
        harmonizer = Harmonizer.for_reader(reader, scale=scale, annotation=annotation,
                                           data_dir=data_dir)
        return set(map(str, harmonizer.gene_ids))


def panel_measured_in(panel: Any, path: str | os.PathLike[str], *, annotation: Any = None,
                      scale: str | None = None, data_dir: str | os.PathLike[str] | None = None,
                      read_options: dict[str, Any] | None = None) -> Panel:
    """``panel`` with only the landmarks that ``path`` measures; the others become targets.

    Raises :class:`~geneinfer.errors.MissingGenesError` when the file has none of them.
    """
    base = panel if isinstance(panel, Panel) else get_panel(panel, data_dir=data_dir)
    measured = measured_genes(path, annotation=annotation, scale=scale, data_dir=data_dir,
                              read_options=read_options)
    keep = [g for g in base.landmarks if g in measured]
    absent = [g for g in base.landmarks if g not in measured]
    if not keep:
        raise MissingGenesError(base.landmarks, what=f"landmark genes of panel {base.name}",
                                source=str(path),
                                hint="is it this platform's file, with its annotation "
                                "(--landmarks-annotation FILE)?")
    targets = None if base.targets is None else [*base.targets, *absent]
    logger.info("%s measures %d of the %d landmarks of panel %s", path, len(keep),
                len(base.landmarks), base.name)
    info = {**base.info, "landmarks_not_measured": absent}
    return Panel(f"{base.name} (landmarks measured in {Path(path).name})", keep, targets,
                 dict(base.symbols), list(base.unresolved), info)

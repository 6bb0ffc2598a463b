"""Evaluation: per-gene metrics (D-GEX style) and train / validation / test splits."""

from geneinfer.evaluate.metrics import (
    gene_scores,
    mae,
    per_gene_ccc,
    per_gene_mae,
    per_gene_pearson,
    per_gene_rmse,
    share_better,
    summarize,
    within_study_zscore,
)
from geneinfer.evaluate.splits import Split, external_test, leave_one_group_out, random_split

__all__ = [
    "Split",
    "external_test",
    "gene_scores",
    "leave_one_group_out",
    "mae",
    "per_gene_ccc",
    "per_gene_mae",
    "per_gene_pearson",
    "per_gene_rmse",
    "random_split",
    "share_better",
    "summarize",
    "within_study_zscore",
]

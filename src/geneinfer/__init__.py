"""geneinfer: infer whole-transcriptome expression from landmark genes."""

from geneinfer.data import ExpressionData
from geneinfer.errors import GeneinferError

__version__ = "0.1.0"

__all__ = ["ExpressionData", "GeneinferError", "__version__"]

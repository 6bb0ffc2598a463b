"""geneinfer: infer whole-transcriptome expression from landmark genes."""

from geneinfer.errors import GeneinferError
from geneinfer.expression import ExpressionData

__version__ = "0.1.0"

__all__ = ["ExpressionData", "GeneinferError", "__version__"]

"""Benchmark studies: one TOML file -> data -> folds -> models -> metrics -> report.

* :mod:`.config` - the configuration and its checks (:func:`load_config`);
* :mod:`.sources` - reading and harmonising the data sets;
* :mod:`.folds` - leave-one-dataset-out, random and external-test folds;
* :mod:`.runner` - :class:`Study`: every (model x fold) unit trains through
  ``geneinfer train``'s code and predicts through ``geneinfer predict``'s;
* :mod:`.results` - unit records, tables and the HTML report.
"""

from geneinfer.study.config import ModelSpec, SourceSpec, StudyConfig, load_config, parse_config
from geneinfer.study.folds import Fold, build_folds
from geneinfer.study.results import calibrate_predictions
from geneinfer.study.runner import Study, learning_curve, run_study, score_test_set

__all__ = [
    "Fold",
    "ModelSpec",
    "SourceSpec",
    "Study",
    "StudyConfig",
    "build_folds",
    "calibrate_predictions",
    "learning_curve",
    "load_config",
    "parse_config",
    "run_study",
    "score_test_set",
]

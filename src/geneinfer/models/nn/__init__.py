"""The torch engine behind the neural estimators: networks (:mod:`.modules`), the training
loop (:mod:`.trainer`) and multi-process training (:mod:`.distributed`).

Kept apart as scvi-tools keeps ``module/``, ``model/`` and ``train/``: the estimators in
:mod:`geneinfer.models.neural` combine a network with the trainer; nothing here knows about
files, panels or saved models.
"""

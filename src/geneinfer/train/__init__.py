"""Training workflow: expression files -> a saved-ready inference model (:mod:`.workflow`).

The torch training loop itself lives with the models (:mod:`geneinfer.models.nn`).
"""

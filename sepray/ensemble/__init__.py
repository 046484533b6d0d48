"""Ensembles of separators: a weighted average of several models' estimates, each model at its own rate.

``weights`` (combination and fitting, pure math) <- ``package`` (the plain-data package) <- ``members`` (a loaded
ensemble separates songs and files) <- ``runs`` (MLflow runs: load any run's separator, ``sepray separate``)
<- ``build`` (an ensemble from finished runs, fitted on their validation songs, logged as a run: ``sepray
ensemble`` and a sweep's ensemble stage, :mod:`sepray.sweep.ensemble_stage`).
"""

"""The ModelDeck serving runtime: what runs on targets.

This package is a small world of its own. It imports only the standard library,
numpy, onnxruntime, its declared server dependencies, ``modeldeck.core.errors``
and itself -- never MLflow, Qt, paramiko or docker -- because it is shipped to
hosts, containers and edge devices that have none of those.
"""

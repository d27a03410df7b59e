"""Which types a scikit-learn model needs trusted to be loaded back from skops.

MLflow 3.17 saves scikit-learn models in the skops format, and skops refuses to
load any type that is not on its safe list (tree models carry
``sklearn.tree._tree.Tree``) unless the caller names it in ``trusted``. MLflow
reads that list from the model's ``MLmodel`` file, so it must be written at log
time. We compute the *exact* list for one model (what skops itself reports as
untrusted in its serialized form) instead of trusting everything.

Loading still requires ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true`` in the
loading process: MLflow gates every sklearn format behind that switch.
"""

from __future__ import annotations

from typing import Any


def skops_trusted_types(model: Any) -> list[str]:
    """The exact, sorted list of type names skops would refuse when loading ``model``.

    Pass this as ``skops_trusted_types=`` to ``mlflow.sklearn.save_model``/``log_model``.
    An empty list means the model needs nothing beyond skops' defaults.
    """
    import skops.io

    return sorted(skops.io.get_untrusted_types(data=skops.io.dumps(model)))

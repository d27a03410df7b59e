"""Loading a scikit-learn model MLflow saved, without trusting more than needed.

MLflow 3 saves scikit-learn models with skops, which refuses to load types it
does not know are safe unless the caller names them. ModelDeck never trusts
what the file (or its ``MLmodel``) *says* to trust: it asks skops for the exact
untrusted types the file needs and accepts them only when every one is a class
on ModelDeck's allow-list -- scikit-learn classes, numpy scalar/dtype types and
scipy sparse containers. Functions (``posix.system``, ``builtins.eval``) and
classes from anywhere else are refused with a list of what was found.

``sklearn.tree._tree.Tree`` is on skops' caution list because a crafted file can
hold out-of-range node indices that crash ``predict``; ModelDeck accepts it but
checks every tree's node arrays before the model is used at all.

Pickle/cloudpickle files (older MLflow, ``serialization_format="cloudpickle"``)
run arbitrary code when loaded, so they load only with an explicit
``trust_pickle=True`` (``--trust-pickle``).
"""

from __future__ import annotations

import importlib
import logging
import re
from pathlib import Path
from typing import Any

from modeldeck.core.errors import BundleError, ConversionError

log = logging.getLogger(__name__)

_NUMPY_DTYPE_CLASS = re.compile(r"^numpy\.dtypes\.[A-Za-z0-9]+DType$")
_NUMPY_REFUSED = {"numpy.object_", "numpy.void"}  # containers of arbitrary Python objects / raw bytes
_SCIPY_SPARSE = re.compile(r"^scipy\.sparse\.(_[a-z]+\.)?[a-z]+_(matrix|array)$")


def is_allowed_type(name: str) -> bool:
    """Whether ``name`` (a skops type name ``module.Class``) is a class ModelDeck accepts.

    It must resolve to a class (never a function) in ``sklearn.*``, be a numpy
    scalar or dtype class, or a scipy sparse container.
    """
    module, _, attr = name.rpartition(".")
    if not module or not attr:
        return False
    if name.startswith("sklearn."):
        pass
    elif name.startswith("numpy."):
        if name in _NUMPY_REFUSED:
            return False
        if not (_NUMPY_DTYPE_CLASS.match(name) or _is_numpy_scalar_type(name)):
            return False
    elif name.startswith("scipy.sparse."):
        if not _SCIPY_SPARSE.match(name):
            return False
    else:
        return False
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return False
    return isinstance(obj, type)


def _is_numpy_scalar_type(name: str) -> bool:
    import numpy as np

    return name in {f"{t.__module__}.{t.__name__}" for t in np.sctypeDict.values()}


def load_skops(path: Path) -> Any:
    """Load a ``.skops`` file, trusting only the allow-listed types it needs.

    Raises :class:`ConversionError` listing every type that is not allowed.
    """
    import skops.io

    try:
        needed = skops.io.get_untrusted_types(file=path)
    except Exception as exc:  # skops raises zipfile/JSON errors of many kinds for a damaged file
        raise BundleError(f"cannot read {path.name}: {exc.__class__.__name__}: {exc}") from exc
    refused = sorted(t for t in needed if not is_allowed_type(t))
    if refused:
        raise ConversionError(
            f"refusing to load {path.name}: it needs types ModelDeck does not trust: {', '.join(refused)}",
            hint="only scikit-learn, numpy and scipy.sparse classes are loaded; re-log the model without custom code",
        )
    log.info("loading %s trusting %s", path.name, needed or "nothing beyond skops defaults")
    try:
        model = skops.io.load(path, trusted=list(needed))
    except Exception as exc:
        raise BundleError(f"cannot load {path.name}: {exc.__class__.__name__}: {exc}") from exc
    check_trees(model)
    return model


def load_pickle(path: Path, *, trust_pickle: bool) -> Any:
    """Load a pickle/cloudpickle file, only when the user said it is trusted (it can run any code)."""
    if not trust_pickle:
        raise ConversionError(
            f"refusing to load {path.name}: it is a pickle, and loading a pickle runs arbitrary code",
            hint="if you trust where this model came from, pass --trust-pickle (or re-log it with skops)",
        )
    import cloudpickle

    log.warning("loading pickle %s because trust_pickle was given", path)
    try:
        with path.open("rb") as fh:
            model = cloudpickle.load(fh)
    except Exception as exc:  # unpickling can raise anything
        raise BundleError(f"cannot load {path.name}: {exc.__class__.__name__}: {exc}") from exc
    check_trees(model)
    return model


def trusted_types(path: Path) -> list[str]:
    """The untrusted types a skops file needs (for the manifest's record of what was accepted)."""
    import skops.io

    return sorted(skops.io.get_untrusted_types(file=path))


def check_trees(model: Any) -> None:
    """Refuse a model whose trees have out-of-range node or feature indices (they could crash ``predict``).

    Covers ``sklearn.tree._tree.Tree`` (decision trees, forests, gradient boosting)
    and the histogram gradient-boosting ``TreePredictor``: scikit-learn's Cython
    code indexes both without bounds checks.
    """
    for tree, n_features in _find_trees(model, set(), None):
        if _is_hist_predictor(tree):
            _check_hist_predictor(tree, n_features)
        else:
            _check_tree(tree)


def _check_tree(tree: Any) -> None:
    import numpy as np

    n = int(tree.node_count)
    left, right, feature = tree.children_left, tree.children_right, tree.feature
    n_features = int(tree.n_features)
    if len(left) != n or len(right) != n or len(feature) != n or tree.value.shape[0] != n:
        raise ConversionError("refusing a decision tree whose node arrays disagree with its node count")
    leaf = left == -1
    idx = np.arange(n)
    # Children come after their parent (sklearn appends nodes as it grows the tree), so there are no cycles.
    ok = bool((((left > idx) & (left < n)) | leaf).all() and (((right > idx) & (right < n)) | leaf).all())
    ok = ok and bool(((right == -1) == leaf).all())
    ok = ok and bool((((feature >= 0) & (feature < n_features)) | leaf).all())
    if not ok:
        raise ConversionError("refusing a decision tree with out-of-range node indices (crafted or corrupt file)")


def _is_hist_predictor(obj: Any) -> bool:
    return type(obj).__name__ == "TreePredictor" and type(obj).__module__.startswith("sklearn.ensemble.")


def _check_hist_predictor(pred: Any, n_features: int | None) -> None:
    import numpy as np

    nodes = pred.nodes
    n = len(nodes)
    idx = np.arange(n)
    inner = nodes["is_leaf"] == 0
    left, right, feature = nodes["left"].astype(np.int64), nodes["right"].astype(np.int64), nodes["feature_idx"]
    ok = bool((((left > idx) & (left < n)) | ~inner).all() and (((right > idx) & (right < n)) | ~inner).all())
    limit = n_features if n_features is not None else np.iinfo(np.int64).max
    ok = ok and bool((((feature >= 0) & (feature < limit)) | ~inner).all())
    categorical = inner & (nodes["is_categorical"] != 0)
    if categorical.any():
        bitsets = len(getattr(pred, "raw_left_cat_bitsets", ()))
        ok = ok and bool((nodes["bitset_idx"][categorical] < bitsets).all())
    if not ok:
        raise ConversionError(
            "refusing a histogram gradient-boosting tree with out-of-range node indices (crafted or corrupt file)"
        )


def _find_trees(obj: Any, seen: set[int], n_features: int | None, depth: int = 0) -> list[tuple[Any, int | None]]:
    """Every tree object reachable from ``obj``, with the feature count of the estimator that owns it."""
    from sklearn.tree._tree import Tree

    if id(obj) in seen or depth > 50:
        return []
    seen.add(id(obj))
    if isinstance(obj, Tree) or _is_hist_predictor(obj):
        return [(obj, n_features)]
    found: list[tuple[Any, int | None]] = []
    if isinstance(obj, (list, tuple, set)):
        for item in obj:
            found += _find_trees(item, seen, n_features, depth + 1)
    elif isinstance(obj, dict):
        for item in obj.values():
            found += _find_trees(item, seen, n_features, depth + 1)
    elif type(obj).__module__ == "numpy" and getattr(obj, "dtype", None) is not None and obj.dtype == object:
        for item in obj.ravel():
            found += _find_trees(item, seen, n_features, depth + 1)
    elif type(obj).__module__.startswith("sklearn.") and hasattr(obj, "__dict__"):
        owned = getattr(obj, "n_features_in_", None)
        own = owned.__index__() if owned is not None and hasattr(owned, "__index__") else n_features
        for item in vars(obj).values():
            found += _find_trees(item, seen, own, depth + 1)
    return found

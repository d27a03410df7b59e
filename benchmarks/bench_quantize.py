"""Edge optimisation benchmark: what --optimize and --quantize int8 buy on this machine.

    .venv/bin/python benchmarks/bench_quantize.py [--quick]

For MLP regressors of growing width (where int8 matters) and a random forest
(where it cannot), builds a plain, a graph-optimised and an int8 bundle with the
real bundler, then measures each model file with onnxruntime (1 thread; median
of a bounded number of runs at batch 1 and batch 64) and prints size and latency
ratios plus the accuracy delta the bundler recorded. Numbers are for this box only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RUNS = 200
BUDGET_S = 2.0


def median_ms(sess: Any, feed: dict[str, np.ndarray]) -> float:
    sess.run(None, feed)
    times: list[float] = []
    deadline = time.perf_counter() + BUDGET_S
    while len(times) < RUNS and (not times or time.perf_counter() < deadline):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def measure(bundle: Path, x: np.ndarray) -> tuple[int, float, float]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    path = bundle / "model.onnx"
    sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return path.stat().st_size, median_ms(sess, {name: x[:1]}), median_ms(sess, {name: x[:64]})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller models, for a smoke run")
    args = parser.parse_args()

    import pandas as pd
    from modeldeck.core.bundle import BundleOptions, build_bundle
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.neural_network import MLPRegressor

    from tests.fixtures.bundles import save_sklearn

    rng = np.random.default_rng(0)
    features = 64
    x = rng.normal(size=(512, features)).astype(np.float32)
    y = x[:, :8].sum(axis=1) + 0.1 * rng.normal(size=512)
    frame = pd.DataFrame(x.astype(np.float64), columns=[f"f{i}" for i in range(features)])
    widths = [64, 256] if args.quick else [64, 256, 1024]
    models: list[tuple[str, Any, list[str]]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: accuracy is not the point, weights are
        for w in widths:
            mlp = MLPRegressor(hidden_layer_sizes=(w, w), max_iter=20, random_state=0).fit(frame, y)
            models.append((f"mlp {w}x{w}", mlp, ["sklearn.neural_network._stochastic_optimizers.AdamOptimizer"]))
        forest = RandomForestRegressor(n_estimators=50, max_depth=8, random_state=0).fit(frame, y)
        models.append(("forest 50", forest, ["sklearn.tree._tree.Tree"]))

    variants = {
        "plain": BundleOptions(),
        "optimize": BundleOptions(optimize=True),
        "int8": BundleOptions(quantize="int8", max_accuracy_delta=1.0),
    }
    print(f"{'model':<14} {'variant':<9} {'size KB':>9} {'b1 ms':>8} {'b64 ms':>8} {'build s':>8}  note")
    with tempfile.TemporaryDirectory(prefix="bench-quantize-") as tmp:
        work = Path(tmp)
        for label, model, trusted in models:
            folder = save_sklearn(
                model, work / label.replace(" ", "-"), input_example=frame.head(16), skops_trusted_types=trusted
            )
            base: tuple[int, float, float] | None = None
            for variant, options in variants.items():
                out = work / f"{folder.name}-{variant}"
                t0 = time.perf_counter()
                report = build_bundle(str(folder), out, options=options)
                build_s = time.perf_counter() - t0
                size, b1, b64 = measure(out, x)
                note = ""
                if report.optimization:
                    step = report.optimization["steps"][-1]
                    note = (
                        f"accuracy delta {step['accuracy_delta']:.4f}"
                        if step.get("applied")
                        else step.get("reason", "")[:60]
                    )
                if base is None:
                    base = (size, b1, b64)
                    ratio = ""
                else:
                    ratio = f"  size x{size / base[0]:.2f}, b1 x{b1 / base[1]:.2f}, b64 x{b64 / base[2]:.2f}"
                print(f"{label:<14} {variant:<9} {size / 1024:9.1f} {b1:8.3f} {b64:8.3f} {build_s:8.2f}  {note}{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

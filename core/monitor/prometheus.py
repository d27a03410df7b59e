"""Fleet scale through a Prometheus server: query its HTTP API, write its file_sd targets, export a Grafana dashboard.

The PromQL here computes the same series as :mod:`modeldeck.core.monitor.derive`
(same names), so a dashboard can plot either source. Deployments are selected by
the ``deployment`` label that :func:`write_file_sd` attaches to every target.
"""

from __future__ import annotations

import json
import logging
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from modeldeck.core.errors import ModelDeckError
from modeldeck.core.fileio import atomic_write_text
from modeldeck.core.monitor.scrape import ScrapeError

log = logging.getLogger(__name__)

_NOT_SCRAPES = 'route!="/metrics"'


def _selector(deployment: str, *extra: str) -> str:
    quoted = json.dumps(deployment)  # PromQL string escaping is Go's, which JSON's matches for label values
    return "{" + ",".join((f"deployment={quoted}", *extra)) + "}"


def queries(deployment: str, window: str = "1m") -> dict[str, str]:
    """PromQL per series name (the names of ``derive.SERIES``) for one deployment."""
    sel = _selector(deployment)
    req = _selector(deployment, _NOT_SCRAPES)

    def by_status(prefix: str) -> str:
        status = _selector(deployment, _NOT_SCRAPES, f'status=~"{prefix}.."')
        total = f"sum(rate(modeldeck_requests_total{req}[{window}]))"
        # "or vector(0)": no 5xx series at all means a rate of 0, not "no data"
        return f"(sum(rate(modeldeck_requests_total{status}[{window}])) or vector(0)) / {total}"

    def quantile(q: float) -> str:
        return f"histogram_quantile({q}, sum by (le) (rate(modeldeck_request_duration_seconds_bucket{req}[{window}])))"

    def mean(name: str) -> str:
        return f"sum(rate({name}_sum{sel}[{window}])) / sum(rate({name}_count{sel}[{window}]))"

    return {
        "request_rate": f"sum(rate(modeldeck_requests_total{req}[{window}]))",
        "error_rate": by_status("5"),
        "client_error_rate": by_status("4"),
        "latency_p50": quantile(0.5),
        "latency_p95": quantile(0.95),
        "latency_p99": quantile(0.99),
        "inference_mean": mean("modeldeck_inference_duration_seconds"),
        "batch_size_mean": mean("modeldeck_batch_size"),
        "cpu_percent": f"100 * sum(rate(process_cpu_seconds_total{sel}[{window}]))",
        "resident_memory": f"sum(process_resident_memory_bytes{sel})",
        "uptime": f"max(time() - process_start_time_seconds{sel})",
        "in_flight": f"sum(modeldeck_requests_in_flight{sel}) - count(modeldeck_requests_in_flight{sel})",
    }


class PrometheusError(ModelDeckError):
    """The Prometheus server did not answer, or refused the query."""


@dataclass(frozen=True)
class PrometheusClient:
    """A small client for ``/api/v1/query`` and ``/api/v1/query_range``; every call ends within ``timeout``."""

    base_url: str
    timeout: float = 5.0

    def _get(self, path: str, params: Mapping[str, str]) -> Any:
        url = f"{self.base_url.rstrip('/')}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                body = response.read(64 * 1024 * 1024)
        except urllib.error.HTTPError as exc:  # 400/422 carry Prometheus' own error message
            try:
                detail = json.loads(exc.read(65536)).get("error", "")
            except (ValueError, OSError):
                detail = ""
            raise PrometheusError(f"Prometheus refused the query (HTTP {exc.code}): {detail}".rstrip(": ")) from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise PrometheusError(
                f"Prometheus at {self.base_url} unreachable: {getattr(exc, 'reason', exc)}",
                hint="check the Prometheus URL in settings",
            ) from exc
        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise PrometheusError(f"{self.base_url} did not answer JSON; is it a Prometheus server?") from exc
        if doc.get("status") != "success":
            raise PrometheusError(f"Prometheus query failed: {doc.get('error', 'unknown error')}")
        return doc["data"]

    def query(self, promql: str, at: float | None = None) -> list[tuple[dict[str, str], float]]:
        """An instant query: ``[(labels, value), ...]`` (scalars come back with empty labels)."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._get("/api/v1/query", params)
        if data["resultType"] in ("scalar", "string"):
            return [({}, float(data["result"][1]))]
        return [(r.get("metric", {}), float(r["value"][1])) for r in data["result"]]

    def query_range(
        self, promql: str, start: float, end: float, step: float
    ) -> list[tuple[dict[str, str], np.ndarray, np.ndarray]]:
        """A range query: ``[(labels, t, v), ...]`` with float arrays (``NaN`` where Prometheus says so)."""
        params = {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        data = self._get("/api/v1/query_range", params)
        out = []
        for r in data["result"]:
            values = r.get("values", [])
            t = np.array([float(p[0]) for p in values])
            v = np.array([float(p[1]) for p in values])
            out.append((r.get("metric", {}), t, v))
        return out

    def series(
        self, deployment: str, start: float, end: float, step: float = 1.0, window: str = "1m"
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The dashboard series of one deployment, by the same names as the collector's ring buffers."""
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name, promql in queries(deployment, window).items():
            result = self.query_range(promql, start, end, step)
            out[name] = (result[0][1], result[0][2]) if result else (np.array([]), np.array([]))
        return out

    def latest(self, deployment: str, window: str = "1m") -> dict[str, float]:
        """The current value of every series (NaN when Prometheus has none yet)."""
        out = {}
        for name, promql in queries(deployment, window).items():
            result = self.query(promql)
            out[name] = result[0][1] if result else math.nan
        return out


@dataclass(frozen=True)
class ScrapeTarget:
    """One deployment as Prometheus should scrape it (``address`` is ``host:port``)."""

    deployment: str
    address: str
    model: str = ""
    version: str = ""
    metrics_path: str = "/metrics"


def write_file_sd(path: Path, deployments: Iterable[ScrapeTarget]) -> None:
    """Write Prometheus file_sd JSON for ``deployments`` atomically (Prometheus never reads half a file).

    Each target carries ``deployment``, ``model`` and ``version`` labels; a
    non-default metrics path is passed as ``__metrics_path__``.
    """
    groups = []
    for d in deployments:
        if not d.address or "/" in d.address or ":" not in d.address:
            raise ScrapeError(f"scrape target {d.address!r} of {d.deployment!r} is not host:port")
        labels = {"deployment": d.deployment, "model": d.model, "version": d.version}
        if d.metrics_path != "/metrics":
            labels["__metrics_path__"] = d.metrics_path
        groups.append({"targets": [d.address], "labels": labels})
    atomic_write_text(path, json.dumps(groups, indent=2), mode=0o644)  # Prometheus often runs as another user


_PANELS = (
    ("Throughput", "request_rate", "reqps"),
    ("Errors (5xx)", "error_rate", "percentunit"),
    ("Client errors (4xx)", "client_error_rate", "percentunit"),
    ("Latency", ("latency_p50", "latency_p95", "latency_p99"), "s"),
    ("Inference time (mean)", "inference_mean", "s"),
    ("Batch size (mean)", "batch_size_mean", "short"),
    ("CPU", "cpu_percent", "percent"),
    ("Resident memory", "resident_memory", "bytes"),
    ("Uptime", "uptime", "s"),
)


def grafana_dashboard(title: str = "ModelDeck deployments", *, window: str = "1m") -> dict[str, Any]:
    """A Grafana dashboard (JSON model) with ModelDeck's panels and a ``deployment`` variable.

    Import it in Grafana and pick the Prometheus data source when asked (``${DS_PROMETHEUS}``).
    """
    marker = "__DEPLOYMENT__"
    q = queries(marker, window)
    panels = []
    for i, (panel_title, names, unit) in enumerate(_PANELS):
        names = (names,) if isinstance(names, str) else names
        targets = [
            {
                "refId": chr(ord("A") + j),
                "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"},
                "expr": q[name].replace(json.dumps(marker), '"$deployment"'),
                "legendFormat": name.removeprefix("latency_") if len(names) > 1 else panel_title,
            }
            for j, name in enumerate(names)
        ]
        panels.append(
            {
                "id": i + 1,
                "type": "timeseries",
                "title": panel_title,
                "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"},
                "gridPos": {"h": 8, "w": 8, "x": (i % 3) * 8, "y": (i // 3) * 8},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": targets,
            }
        )
    return {
        "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource", "pluginId": "prometheus"}],
        "title": title,
        "uid": "modeldeck-deployments",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "5s",
        "tags": ["modeldeck"],
        "templating": {
            "list": [
                {
                    "name": "deployment",
                    "type": "query",
                    "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"},
                    "query": "label_values(modeldeck_model_info, deployment)",
                    "refresh": 2,
                }
            ]
        },
        "annotations": {
            "list": [
                {
                    "name": "Version changes",
                    "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"},
                    "enable": True,
                    "expr": 'count(count_over_time(modeldeck_model_info{deployment="$deployment"}[1m])) > 1',
                }
            ]
        },
        "panels": panels,
    }

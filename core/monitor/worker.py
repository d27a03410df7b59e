"""The monitor's collection process: scrape, parse, derive and apply health rules away from a GUI's GIL.

    python -m modeldeck.core.monitor.worker     (started by :class:`~modeldeck.core.monitor.process.CollectorProcess`)

Parsing 50 ``/metrics`` pages a second is pure Python; in the GUI process it held
the GIL the UI thread needs. Here a :class:`Collector` runs as before and its
samples and events go to the parent as JSON lines on stdout, batched every
``BATCH_S`` (a line is sent at least every ``HEARTBEAT_S`` even when there is
nothing to say, so the parent can tell a hung process from a quiet one).

Commands arrive as JSON lines on stdin: one ``config`` line first, then ``add`` /
``remove``; another ``config`` replaces the collector (scraping, or a
:class:`~modeldeck.core.monitor.prometheus.PrometheusCollector` when it names a
Prometheus server: then lines of ``b``, history from before, precede the samples).
Every line out carries the generation of the config it comes from, so the parent
can drop what was collected under an old one. End of stdin means the parent is
gone (or wants us gone): the process stops collecting and exits, so it never
outlives the GUI. Nothing here imports Qt.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import os
import sys
import threading
import time
from dataclasses import fields
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
from modeldeck.core.errors import ModelDeckError
from modeldeck.core.monitor.collector import Collector, Endpoint, MonitorEvent, Sample
from modeldeck.core.monitor.derive import SERIES, Derived
from modeldeck.core.monitor.health import HealthPolicy, HealthRule, HealthState, HealthStatus

if TYPE_CHECKING:  # imported by the process only in Prometheus mode (the GUI side never needs the query client)
    from modeldeck.core.monitor.prometheus import Backfill, PrometheusCollector

log = logging.getLogger(__name__)

PROTOCOL = 1
BATCH_S = 0.1
HEARTBEAT_S = 1.0
MAX_LINE = 4 << 20  # a batch line longer than this is not something this module wrote
CHILD_NICE = 5  # the collection process's niceness increment (see _lower_priority)
NICE_ENV = "MODELDECK_MONITOR_NICE"

_DERIVED_FIELDS = tuple(f.name for f in fields(Derived))
_STR_FIELDS = frozenset({"model_name", "model_version", "bundle_sha256"})
_BOOL_FIELDS = frozenset({"restarted", "version_changed"})


class MonitorProcessError(ModelDeckError):
    """The collection process died, hung, or sent something that is not this protocol."""


# -- wire format (both sides) ----------------------------------------------------------------------------------------


def policy_to_wire(policy: HealthPolicy) -> dict[str, Any]:
    return {
        "down_after_failures": policy.down_after_failures,
        "rules": [[r.metric, r.op, r.threshold, r.for_seconds, int(r.state)] for r in policy.rules],
    }


def policy_from_wire(data: dict[str, Any]) -> HealthPolicy:
    rules = tuple(HealthRule(m, op, float(t), float(f), HealthState(int(s))) for m, op, t, f, s in data["rules"])
    return HealthPolicy(rules, int(data["down_after_failures"]))


def _num(value: float) -> float | None:
    return None if math.isnan(value) else value  # JSON has no NaN; null stands for it


def sample_to_wire(sample: Sample) -> list[Any]:
    d = sample.derived
    row = None
    if d is not None:
        row = [getattr(d, name) for name in _DERIVED_FIELDS]
        row = [_num(v) if isinstance(v, float) else v for v in row]
    return [sample.endpoint, sample.at, row, int(sample.health.state), sample.health.reason, sample.error]


def event_to_wire(event: MonitorEvent) -> list[Any]:
    return [event.kind, event.endpoint, event.at, event.detail]


def _float(value: object, what: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise MonitorProcessError(f"monitor process sent {what} = {value!r}, not a number")


def _str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise MonitorProcessError(f"monitor process sent {what} = {value!r}, not a string")
    return value


def sample_from_wire(row: object) -> Sample:
    """Check and rebuild one sample; anything malformed is a :class:`MonitorProcessError` naming the field."""
    if not isinstance(row, list) or len(row) != 6:
        raise MonitorProcessError(f"monitor process sent a malformed sample: {str(row)[:200]}")
    endpoint, at, derived, state, reason, error = row
    derived_obj = None
    if derived is not None:
        if not isinstance(derived, list) or len(derived) != len(_DERIVED_FIELDS):
            raise MonitorProcessError(f"monitor process sent malformed figures: {str(derived)[:200]}")
        values: dict[str, Any] = {}
        for name, value in zip(_DERIVED_FIELDS, derived, strict=True):
            if name in _STR_FIELDS:
                values[name] = _str(value, name)
            elif name in _BOOL_FIELDS:
                values[name] = bool(value)
            else:
                values[name] = _float(value, name)
        derived_obj = Derived(**values)
    try:
        health = HealthStatus(HealthState(state), _str(reason, "health reason"))
    except ValueError as exc:
        raise MonitorProcessError(f"monitor process sent an unknown health state {state!r}") from exc
    return Sample(_str(endpoint, "endpoint"), _float(at, "time"), derived_obj, health, _str(error, "error"))


def event_from_wire(row: object) -> MonitorEvent:
    if not isinstance(row, list) or len(row) != 4:
        raise MonitorProcessError(f"monitor process sent a malformed event: {str(row)[:200]}")
    kind, endpoint, at, detail = row
    return MonitorEvent(
        _str(kind, "event kind"), _str(endpoint, "endpoint"), _float(at, "time"), _str(detail, "detail")
    )


def backfill_to_wire(backfill: Backfill) -> list[Any]:
    """``[endpoint, n, base64 of little-endian float64 rows t, *SERIES]``.

    A backfill is ~8,000 numbers per endpoint: as JSON floats, decoding 50 endpoints' took 235 ms of the GUI
    process' CPU (and GIL); as raw doubles it is a copy.
    """
    block = np.vstack([backfill.t, *(backfill.values[name] for name in SERIES)]).astype("<f8")
    return [backfill.endpoint, len(backfill.t), base64.b64encode(block.tobytes()).decode("ascii")]


def backfill_from_wire(row: object) -> tuple[str, np.ndarray, dict[str, np.ndarray]]:
    """Check and rebuild one backfill: times finite and ascending, one value per time in every series."""
    if not isinstance(row, list) or len(row) != 3 or not isinstance(row[1], int) or not isinstance(row[2], str):
        raise MonitorProcessError(f"monitor process sent a malformed backfill: {str(row)[:200]}")
    endpoint, n, encoded = row
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MonitorProcessError(f"monitor process sent a backfill that is not base64: {exc}"[:300]) from exc
    rows = 1 + len(SERIES)
    if n < 1 or len(raw) != rows * n * 8:
        raise MonitorProcessError(f"monitor process sent a backfill of {len(raw)} bytes for {n} points")
    block = np.frombuffer(raw, dtype="<f8").reshape(rows, n).astype(float)
    t = block[0]
    if not np.all(np.isfinite(t)) or not np.all(np.diff(t) > 0):
        raise MonitorProcessError("monitor process sent a backfill whose times are not ascending")
    return _str(endpoint, "endpoint"), t, dict(zip(SERIES, block[1:], strict=True))


def decode_line(line: bytes) -> dict[str, Any]:
    """One line from the process as a dict; not JSON, or not an object, is a :class:`MonitorProcessError`."""
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MonitorProcessError(
            f"monitor process sent something that is not its protocol: {line[:120]!r}",
            hint="something in the monitor process wrote to its stdout",
        ) from exc
    if not isinstance(message, dict):
        raise MonitorProcessError(f"monitor process sent {line[:120]!r}, not a JSON object")
    return message


# -- the process ------------------------------------------------------------------------------------------------------


class _Worker:
    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.events: list[MonitorEvent] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.collector: Collector | PrometheusCollector | None = None
        self.generation = 0  # of the parent's last config; every line says which one it comes from
        self.endpoints: dict[str, Endpoint] = {}

    def on_event(self, generation: int, event: MonitorEvent) -> None:  # collector threads
        with self.lock:
            if generation == self.generation:  # not a late one from the collector a new config replaced
                self.events.append(event)

    def send(self, message: dict[str, Any]) -> None:
        self.out.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        self.out.flush()

    def configure(self, command: dict[str, Any]) -> None:
        """A ``config`` line: (re)start collection with these settings and every endpoint known so far.

        A second one (the user switched to or from a Prometheus server) replaces the collector.
        """
        generation = int(command.get("gen", 0))
        common: dict[str, Any] = {
            "interval": float(command["interval"]),
            "timeout": command.get("timeout"),
            "window": float(command["window"]),
            "retention": 1,  # the parent keeps the ring buffers; ours would only cost memory
            "policy": policy_from_wire(command["policy"]),
            "on_event": lambda event: self.on_event(generation, event),
        }
        collector: Collector | PrometheusCollector
        url = command.get("prometheus_url")
        if url:
            from modeldeck.core.monitor.prometheus import PrometheusCollector

            collector = PrometheusCollector([], url=str(url), backfill=float(command.get("backfill", 0.0)), **common)
        else:
            collector = Collector([], max_workers=int(command.get("max_workers", 64)), **common)
        for endpoint in self.endpoints.values():
            collector.add_endpoint(endpoint)
        collector.start()
        with self.lock:
            old, self.collector, self.generation = self.collector, collector, generation
            self.events = []
        if old is not None:
            old.stop(timeout=2.0)

    def read_commands(self, stdin: BinaryIO) -> None:
        """Stdin thread: apply commands until end of input (the parent closed the pipe or died)."""
        try:
            for line in stdin:
                command = json.loads(line)
                op = command.get("op")
                if op == "config":
                    self.configure(command)
                elif self.collector is None:
                    raise MonitorProcessError(f"command {op!r} before config")
                elif op == "add":
                    endpoint = self.endpoints[command["name"]] = Endpoint(command["name"], command["url"])
                    self.collector.add_endpoint(endpoint)
                elif op == "remove":
                    self.endpoints.pop(command["name"], None)
                    self.collector.remove_endpoint(command["name"])
                else:
                    raise MonitorProcessError(f"unknown command {op!r}")
        except (ValueError, KeyError, TypeError, ModelDeckError) as exc:
            log.error("monitor process: bad command from the parent: %s", exc)
        finally:
            self.stop.set()

    def run(self) -> None:
        self.send({"hello": PROTOCOL, "pid": os.getpid()})
        last_sent = time.monotonic()
        while not self.stop.wait(BATCH_S):
            with self.lock:  # what is drained and the generation it is labelled with change together
                collector, generation = self.collector, self.generation
                samples = collector.drain() if collector is not None else []
                drain_backfill = getattr(collector, "drain_backfill", None)  # a PrometheusCollector's history
                backfills: list[Backfill] = drain_backfill() if drain_backfill is not None else []
                events, self.events = self.events, []
            for backfill in backfills:  # before the samples that follow them; one line each (bounded size)
                self.send({"g": generation, "b": backfill_to_wire(backfill)})
            now = time.monotonic()
            if samples or events or now - last_sent >= HEARTBEAT_S:
                self.send(
                    {
                        "g": generation,
                        "s": [sample_to_wire(s) for s in samples],
                        "e": [event_to_wire(e) for e in events],
                    }
                )
                last_sent = now
        if self.collector is not None:
            self.collector.stop(timeout=2.0)


def _lower_priority(text: str) -> None:
    """Collection is background work: under CPU contention the GUI's UI thread should be scheduled first."""
    try:
        increment = int(text) if text else CHILD_NICE
        if increment > 0:
            os.nice(increment)
    except (ValueError, OSError) as exc:
        log.warning("cannot lower the monitor process's priority (%s=%r): %s", NICE_ENV, text, exc)


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="modeldeck monitor process: %(levelname)s %(message)s")
    _lower_priority(os.environ.get(NICE_ENV, ""))
    # The protocol owns the real stdout; anything else that prints (a library, a stray print) goes to stderr.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    worker = _Worker(out)
    threading.Thread(
        target=worker.read_commands, args=(sys.stdin.buffer,), name="monitor-commands", daemon=True
    ).start()
    try:
        worker.run()
    except BrokenPipeError:  # the parent went away while we were writing
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

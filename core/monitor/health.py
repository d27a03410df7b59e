"""Health from rules the user can edit: ``error_rate > 0.01 for 60s -> degraded``; unreachable -> down.

A rule fires once its condition has held continuously for ``for_seconds``; a
NaN value (no traffic, no data) never satisfies a condition and resets the clock.
The worst firing state wins and every firing rule is named in the reason.
"""

from __future__ import annotations

import enum
import math
import operator
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from modeldeck.core.errors import ConfigError
from modeldeck.core.monitor.derive import SERIES

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


class HealthState(enum.IntEnum):
    """Ordered by severity, so ``max`` picks the worst."""

    UNKNOWN = 0
    OK = 1
    DEGRADED = 2
    DOWN = 3

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class HealthRule:
    metric: str
    op: str
    threshold: float
    for_seconds: float = 0.0
    state: HealthState = HealthState.DEGRADED

    def __post_init__(self) -> None:
        if self.metric not in SERIES:
            raise ConfigError(f"unknown metric {self.metric!r} in a health rule", hint=f"one of {', '.join(SERIES)}")
        if self.op not in _OPS:
            raise ConfigError(f"unknown operator {self.op!r} in a health rule", hint="one of > >= < <=")
        if self.for_seconds < 0:
            raise ConfigError("a health rule's 'for' cannot be negative")

    def holds(self, value: float) -> bool:
        return not math.isnan(value) and _OPS[self.op](value, self.threshold)

    def describe(self, value: float) -> str:
        held = f" for {self.for_seconds:g}s" if self.for_seconds else ""
        return f"{self.metric} {value:.4g} {self.op} {self.threshold:g}{held}"


DEFAULT_RULES = (
    HealthRule("error_rate", ">", 0.01, 60.0),
    HealthRule("latency_p99", ">", 0.25, 30.0),
)


@dataclass(frozen=True)
class HealthPolicy:
    """The rules, plus how many consecutive failed scrapes make a target down (1: the first)."""

    rules: tuple[HealthRule, ...] = DEFAULT_RULES
    down_after_failures: int = 1


@dataclass(frozen=True)
class HealthStatus:
    state: HealthState
    reason: str = ""


def _seconds(value: object, where: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower()
        for suffix, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
            if text.endswith(suffix):
                try:
                    return float(text[: -len(suffix)]) * factor
                except ValueError:
                    break
    raise ConfigError(f"{where}: {value!r} is not a duration", hint='e.g. 30, "30s", "1m"')


def policy_from_dict(data: Mapping[str, object], *, where: str = "health rules") -> HealthPolicy:
    """Build a policy from a mapping shaped like the TOML file (see :func:`load_policy`)."""
    rules = []
    raw_rules = data.get("rule", [])
    if not isinstance(raw_rules, list):
        raise ConfigError(f"{where}: 'rule' must be an array of tables ([[rule]])")
    for i, raw in enumerate(raw_rules):
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: rule {i + 1} is not a table")
        try:
            state = HealthState[str(raw.get("state", "degraded")).upper()]
            rules.append(
                HealthRule(
                    metric=str(raw["metric"]),
                    op=str(raw.get("op", ">")),
                    threshold=float(raw["threshold"]),
                    for_seconds=_seconds(raw.get("for", 0), f"{where}: rule {i + 1}"),
                    state=state,
                )
            )
        except KeyError as exc:
            raise ConfigError(f"{where}: rule {i + 1} lacks {exc}", hint="needs metric and threshold") from exc
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: rule {i + 1}: {exc}") from exc
    down_after = data.get("down_after_failures", 1)
    if not isinstance(down_after, int) or down_after < 1:
        raise ConfigError(f"{where}: down_after_failures must be a positive integer")
    return HealthPolicy(tuple(rules), down_after)


def load_policy(path: Path) -> HealthPolicy:
    """Read rules from TOML::

    down_after_failures = 1
    [[rule]]
    metric = "error_rate"   # any name in derive.SERIES
    op = ">"
    threshold = 0.01
    for = "60s"
    state = "degraded"      # or "down"
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read health rules {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    return policy_from_dict(data, where=str(path))


def user_policy(config_dir: Path) -> HealthPolicy:
    """The user's ``health.toml`` in ModelDeck's config dir (``settings.config_dir``), else the default rules."""
    path = config_dir / "health.toml"
    return load_policy(path) if path.is_file() else HealthPolicy()


@dataclass
class HealthTracker:
    """Health of one endpoint over time; feed it every scrape outcome in order."""

    policy: HealthPolicy = field(default_factory=HealthPolicy)
    status: HealthStatus = field(default_factory=lambda: HealthStatus(HealthState.UNKNOWN, "not scraped yet"))
    _since: dict[int, float] = field(default_factory=dict)
    _failures: int = 0

    def observe(self, at: float, values: Mapping[str, float]) -> HealthStatus:
        """A successful scrape's derived values at time ``at`` (seconds, any monotonic clock)."""
        self._failures = 0
        firing: list[tuple[HealthState, str]] = []
        for i, rule in enumerate(self.policy.rules):
            value = values.get(rule.metric, math.nan)
            if rule.holds(value):
                since = self._since.setdefault(i, at)
                if at - since >= rule.for_seconds:
                    firing.append((rule.state, rule.describe(value)))
            else:
                self._since.pop(i, None)
        if firing:
            worst = max(state for state, _ in firing)
            self.status = HealthStatus(worst, "; ".join(r for s, r in firing if s == worst))
        else:
            self.status = HealthStatus(HealthState.OK, "")
        return self.status

    def unreachable(self, reason: str) -> HealthStatus:
        """A failed scrape: down after ``down_after_failures`` in a row (rule clocks restart afterwards)."""
        self._failures += 1
        self._since.clear()
        if self._failures >= self.policy.down_after_failures:
            self.status = HealthStatus(HealthState.DOWN, reason)
        return self.status


def worst(statuses: Sequence[HealthStatus]) -> HealthStatus:
    return max(statuses, key=lambda s: s.state, default=HealthStatus(HealthState.UNKNOWN, ""))

"""RuntimeConfig: the runtime.json contract with the deploy targets, validated at the edge."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from modeldeck.core.errors import ConfigError
from modeldeck.core.runtime import RUNTIME_REQUIREMENTS
from modeldeck.core.runtime.config import Bind, RuntimeConfig

ROOT = Path(__file__).resolve().parents[1]


def test_runtime_json_round_trips(tmp_path: Path) -> None:
    config = RuntimeConfig(
        deployment_name="iris-prod",
        binds=(Bind("127.0.0.1", 8080), Bind("::1", 0)),
        reuse_port=True,
        max_batch_size=32,
        max_batch_wait_ms=2.5,
        cors_origins=("https://app.example",),
        warmup_runs=5,
    )
    path = tmp_path / "runtime.json"
    path.write_text(json.dumps(config.to_dict()))
    assert RuntimeConfig.load(path) == config
    assert config.to_dict()["binds"] == ["127.0.0.1:8080", "[::1]:0"]


def test_defaults_listen_on_loopback_only() -> None:
    assert RuntimeConfig().binds == (Bind("127.0.0.1", 8080),)
    assert RuntimeConfig().cors_origins == ()


@pytest.mark.parametrize(
    ("text", "bind"),
    [("127.0.0.1:80", Bind("127.0.0.1", 80)), ("[::1]:9000", Bind("::1", 9000)), ("0.0.0.0:0", Bind("0.0.0.0", 0))],
)
def test_bind_addresses_parse(text: str, bind: Bind) -> None:
    assert Bind.parse(text) == bind


@pytest.mark.parametrize("text", ["8080", ":8080", "host:port", "127.0.0.1:70000"])
def test_bad_bind_addresses_are_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        Bind.parse(text)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"max_batch_size": 0}, "max_batch_size must be an integer >= 1"),
        ({"max_batch_size": "8"}, "max_batch_size must be an integer"),
        ({"max_batch_wait_ms": -1}, "max_batch_wait_ms must be a number in 0..1000"),
        ({"request_timeout_s": 0}, "request_timeout_s must be a number of seconds"),
        ({"reuse_port": "yes"}, "reuse_port must be true or false"),
        ({"binds": "127.0.0.1:80"}, "binds must be a list"),
        ({"binds": []}, "at least one bind address"),
        ({"cors_origins": ["ftp://x"]}, "invalid CORS origin"),
        ({"log_level": "loud"}, "unknown log_level"),
        ({"warmup": 3}, "unknown setting 'warmup'"),
    ],
)
def test_invalid_settings_name_the_field(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match="runtime config") as info:
        RuntimeConfig.from_dict(data)
    assert message in info.value.message


def test_unreadable_or_non_json_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read runtime config"):
        RuntimeConfig.load(tmp_path / "missing.json")
    bad = tmp_path / "runtime.json"
    bad.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        RuntimeConfig.load(bad)
    bad.write_text('{"max_batch_size": -3}')
    with pytest.raises(ConfigError, match=r"runtime config .*runtime\.json: max_batch_size"):
        RuntimeConfig.load(bad)


def test_runtime_requirements_match_the_declared_dependencies() -> None:
    """Targets install exactly RUNTIME_REQUIREMENTS; they must be the ranges pyproject.toml declares."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert set(RUNTIME_REQUIREMENTS) <= set(declared)
    names = {r.split(">")[0].split("<")[0].split("=")[0].split(";")[0].strip() for r in RUNTIME_REQUIREMENTS}
    assert names == {"numpy", "onnxruntime", "uvicorn", "httptools", "uvloop", "prometheus-client", "orjson"}

"""Settings: config file < environment < command-line flag; bad files are named; secrets never saved."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from modeldeck.core.errors import ConfigError
from modeldeck.core.settings import config_dir, load_settings, save_settings, with_tracking_uri


def _write_config(text: str) -> Path:
    path = config_dir() / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_no_configuration_means_the_embedded_registry() -> None:
    settings = load_settings()
    assert settings.tracking_uri is None
    assert settings.uses_embedded_registry
    assert settings.effective_tracking_uri == settings.embedded_tracking_uri
    assert settings.embedded_tracking_uri.startswith("sqlite:///")
    assert settings.embedded_registry_dir == Path(os.environ["MODELDECK_DATA_DIR"]) / "registry"


def test_config_file_is_overridden_by_environment_which_is_overridden_by_the_flag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _write_config('[registry]\ntracking_uri = "http://from-file:5000"\n')
    assert load_settings().tracking_uri == "http://from-file:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://from-env:5000")
    assert load_settings().tracking_uri == "http://from-env:5000"
    assert load_settings(tracking_uri="http://from-flag:5000").tracking_uri == "http://from-flag:5000"


def test_registry_uri_comes_from_file_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    _write_config('[registry]\nregistry_uri = "sqlite:////tmp/reg-file.db"\n')
    assert load_settings().registry_uri == "sqlite:////tmp/reg-file.db"
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "sqlite:////tmp/reg-env.db")
    assert load_settings().registry_uri == "sqlite:////tmp/reg-env.db"


@pytest.mark.parametrize(
    "text",
    [
        "[registry\ntracking_uri = 1",  # not TOML
        'registry = "a string"\n',  # wrong shape
        "[registry]\ntracking_uri = 42\n",  # wrong type
        '[registry]\nrecent_tracking_uris = "http://x"\n',  # not a list
    ],
)
def test_malformed_config_is_a_config_error_naming_the_file(text: str) -> None:
    path = _write_config(text)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(path) in info.value.message


def test_malformed_config_makes_the_cli_print_one_line_naming_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    cfg.mkdir()
    (cfg / "config.toml").write_text("[registry\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MODELDECK_CONFIG_DIR=str(cfg), MODELDECK_DATA_DIR=str(tmp_path / "data"))
    out = subprocess.run(
        [str(Path(sys.executable).with_name("modeldeck")), "registry", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot read settings file")
    assert str(cfg / "config.toml") in lines[0]


def test_saved_settings_load_back_and_keep_recent_uris() -> None:
    settings = with_tracking_uri(load_settings(), "http://127.0.0.1:5000")
    settings = with_tracking_uri(settings, "sqlite:////tmp/other.db")
    save_settings(settings)
    loaded = load_settings()
    assert loaded.tracking_uri == "sqlite:////tmp/other.db"
    assert loaded.recent_tracking_uris == ("sqlite:////tmp/other.db", "http://127.0.0.1:5000")


def test_switching_back_to_the_embedded_registry_is_saved() -> None:
    save_settings(with_tracking_uri(load_settings(), "http://127.0.0.1:5000"))
    save_settings(with_tracking_uri(load_settings(), None))
    loaded = load_settings()
    assert loaded.tracking_uri is None
    assert loaded.recent_tracking_uris == ("http://127.0.0.1:5000",)


def test_the_token_is_never_written_to_the_config_file(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "dapi-very-secret-token-123"
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", secret)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", secret + "-pw")
    settings = with_tracking_uri(load_settings(), "https://mlflow.example.com")
    save_settings(settings)
    text = settings.config_file.read_text(encoding="utf-8")
    assert "https://mlflow.example.com" in text
    assert secret not in text
    assert "token" not in text.lower() and "password" not in text.lower()


def test_recent_list_is_capped_and_deduplicated() -> None:
    settings = load_settings()
    for i in range(15):
        settings = with_tracking_uri(settings, f"http://127.0.0.1:{5000 + i}")
    settings = with_tracking_uri(settings, "http://127.0.0.1:5010")
    save_settings(settings)
    recent = load_settings().recent_tracking_uris
    assert len(recent) == 10 and len(set(recent)) == 10
    assert recent[0] == "http://127.0.0.1:5010"

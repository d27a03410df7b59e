"""``modeldeck gui --screenshot`` renders the loaded main window offscreen, as CI and the README use it."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.registry import free_port

pytestmark = [pytest.mark.gui, pytest.mark.slow]


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def _modeldeck(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["QT_QPA_PLATFORM"] = "offscreen"
    return subprocess.run(
        [sys.executable, "-m", "modeldeck.gui.launch", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_screenshot_of_the_demo_registry_is_a_png_of_the_requested_size(demo_tracking_uri: str, tmp_path: Path) -> None:
    out = tmp_path / "shot.png"
    result = _modeldeck("--tracking-uri", demo_tracking_uri, "gui", "--screenshot", str(out), "--size", "1200x800")
    assert result.returncode == 0, result.stderr
    assert out.is_file() and out.stat().st_size > 20_000
    assert _png_size(out) == (1200, 800)


def test_screenshot_of_an_unreachable_registry_fails_with_one_error_line(tmp_path: Path) -> None:
    out = tmp_path / "shot.png"
    url = f"http://127.0.0.1:{free_port()}"
    result = _modeldeck("--tracking-uri", url, "gui", "--screenshot", str(out))
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "127.0.0.1" in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_screenshot_opens_on_the_selected_version(demo_tracking_uri: str, tmp_path: Path) -> None:
    out = tmp_path / "shot.png"
    result = _modeldeck(
        "--tracking-uri", demo_tracking_uri, "gui", "--screenshot", str(out), "--select", "iris-classifier@champion"
    )
    assert result.returncode == 0, result.stderr
    assert _png_size(out) == (1400, 860)


def test_a_bad_select_ref_is_one_error_line_before_any_window(tmp_path: Path) -> None:
    out = tmp_path / "shot.png"
    result = _modeldeck("gui", "--screenshot", str(out), "--select", "iris-classifier/latest-ish")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "iris-classifier/latest-ish" in errors[0], result.stderr
    assert not out.exists()

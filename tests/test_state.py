"""Remembered selection and ``--select`` references (core, no Qt)."""

from __future__ import annotations

import pytest
from modeldeck.core.errors import ConfigError
from modeldeck.core.registry.types import SignatureColumn
from modeldeck.core.settings import load_settings
from modeldeck.core.state import Selection, load_last_selection, parse_selection, remember_selection, state_file


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("iris", Selection("iris")),
        ("iris/3", Selection("iris", version="3")),
        ("iris@champion", Selection("iris", alias="champion")),
        ("models:/iris@champion", Selection("iris", alias="champion")),
    ],
)
def test_select_refs_name_a_model_version_or_alias(ref: str, expected: Selection) -> None:
    assert parse_selection(ref) == expected


@pytest.mark.parametrize("ref", ["", "iris/latest-ish", "iris@", "@champion", "iris@bad alias"])
def test_a_bad_select_ref_is_a_one_line_error_with_a_hint(ref: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_selection(ref)
    assert "\n" not in str(info.value.message) and info.value.hint


def test_the_last_selection_is_remembered_per_registry_without_credentials() -> None:
    settings = load_settings()
    remember_selection(settings, "sqlite:////tmp/a.db", Selection("iris", "2"))
    remember_selection(settings, "https://bob:secret@mlflow.example.com", Selection("wine", "7"))
    assert load_last_selection(settings, "sqlite:////tmp/a.db") == Selection("iris", "2")
    assert load_last_selection(settings, "https://bob:secret@mlflow.example.com") == Selection("wine", "7")
    assert load_last_selection(settings, "sqlite:////tmp/other.db") is None
    assert "secret" not in state_file(settings).read_text()


def test_a_damaged_state_file_means_nothing_remembered() -> None:
    settings = load_settings()
    state_file(settings).parent.mkdir(parents=True, exist_ok=True)
    state_file(settings).write_text("{not json", encoding="utf-8")
    assert load_last_selection(settings, "sqlite:////tmp/a.db") is None
    remember_selection(settings, "sqlite:////tmp/a.db", Selection("iris", "1"))  # and it heals on the next write
    assert load_last_selection(settings, "sqlite:////tmp/a.db") == Selection("iris", "1")


def test_tensor_shapes_read_as_rows_by_features() -> None:
    pytest.importorskip("PySide6")
    from modeldeck.gui.registry.details import format_shape, signature_rows

    assert format_shape((-1,)) == "n"
    assert format_shape((-1, 4)) == "n × 4"
    assert format_shape((-1, -1)) == "n × any"
    assert format_shape(None) == ""
    unnamed = signature_rows((SignatureColumn(None, "int64", shape=(-1,)),), "output")
    assert unnamed == [("output", "int64", "no", "n")]
    named = signature_rows(
        (SignatureColumn("label", "long"), SignatureColumn("proba", "double", optional=True)), "output"
    )
    assert [r[0] for r in named] == ["label", "proba"] and named[1][2] == "yes"

"""Procfile parsing for the local platform."""

from __future__ import annotations

import pytest

from pgdyno.errors import ConfigError
from pgdyno.platform.procfile import load, parse


def test_parse_keeps_order_and_skips_comments():
    text = "# comment\nrelease: pgdyno migrate\n\njulia: pgdyno dispatcher --scale a=b\n"
    assert parse(text) == {"release": "pgdyno migrate", "julia": "pgdyno dispatcher --scale a=b"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("julia pgdyno dispatcher", "expected 'type: command'"),
        ("a: x\na: y", "defined twice"),
        ("# nothing\n", "defines no process types"),
    ],
)
def test_parse_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        parse(text)


def test_missing_procfile_says_how_to_point_at_one(tmp_path):
    with pytest.raises(ConfigError, match="--procfile"):
        load(tmp_path / "Procfile")

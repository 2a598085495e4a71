"""The demo prints commands a user can paste into a shell as they are."""

from __future__ import annotations

import subprocess

import pytest

from pgdyno.demo.__main__ import shell_quote


@pytest.mark.parametrize(
    "text",
    [
        "INSERT INTO pgdyno.jobs (queue, task, args) VALUES ('reports', 'report', "
        '\'{"name": "top_customers", "params": {"limit": 5}}\') RETURNING id',
        "SELECT '$HOME', `x`, 'a\\b', '!'",
    ],
)
def test_the_printed_sql_is_one_shell_word_that_round_trips(text):
    out = subprocess.run(
        ["bash", "-c", f"printf %s {shell_quote(text)}"], capture_output=True, text=True, check=True
    )
    assert out.stdout == text

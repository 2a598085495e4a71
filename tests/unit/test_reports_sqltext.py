"""Reading report SQL without a server: one statement, a read-only start, the placeholders."""

from __future__ import annotations

import pytest

from pgdyno.errors import InvalidReport
from pgdyno.reports import sqltext


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("SELECT 1", "SELECT 1"),
        ("SELECT 1;", "SELECT 1"),
        ("SELECT 1;  -- done\n", "SELECT 1"),
        ("select ';' as semi", "select ';' as semi"),
        ("SELECT E'\\';' AS quote", "SELECT E'\\';' AS quote"),
        ("SELECT 'it''s; fine'", "SELECT 'it''s; fine'"),
        ('SELECT 1 AS "a;b"', 'SELECT 1 AS "a;b"'),
        ("SELECT $$;$$, $tag$ ; $$ ; $tag$", "SELECT $$;$$, $tag$ ; $$ ; $tag$"),
        ("/* ; /* nested ; */ ; */ SELECT 1", "/* ; /* nested ; */ ; */ SELECT 1"),
        ("-- ;\nSELECT 1 -- ;", "-- ;\nSELECT 1 -- ;"),
        ("(SELECT 1) UNION (SELECT 2)", "(SELECT 1) UNION (SELECT 2)"),
        ("WITH a AS (SELECT 1) SELECT * FROM a", "WITH a AS (SELECT 1) SELECT * FROM a"),
        ("VALUES (1), (2)", "VALUES (1), (2)"),
        ("TABLE demo.orders", "TABLE demo.orders"),
        ("SELECT a$b FROM t", "SELECT a$b FROM t"),
    ],
)
def test_single_read_only_queries_are_accepted(text, expected):
    assert sqltext.single_query(text).text == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("SELECT 1; SELECT 2", "holds 2 statements (the first ends with the ';' on line 1)"),
        ("SELECT 1;\nCOMMIT;\nDROP TABLE x;", "holds 3 statements"),
        ("SELECT $$;$$; DROP TABLE x", "holds 2 statements"),
        ("DELETE FROM x", "starts with DELETE"),
        ("insert into x values (1)", "starts with INSERT"),
        ("COPY x TO '/tmp/x'", "starts with COPY"),
        ("SET ROLE admin", "starts with SET"),
        ("SELECT 1) TO PROGRAM 'rm -rf /' --", "unbalanced ')' at line 1"),
        ("SELECT (1", "unbalanced '('"),
        ("SELECT 'x", "unterminated quoted string"),
        ('SELECT "x', "unterminated quoted identifier"),
        ("SELECT $a$ x", "unterminated dollar-quoted string"),
        ("SELECT 1 /* x", "unterminated /* comment"),
        ("  ;  ", "holds no SQL statement"),
    ],
)
def test_anything_else_is_refused_with_the_reason(text, message):
    with pytest.raises(InvalidReport) as caught:
        sqltext.single_query(text)
    assert message in str(caught.value)


def test_placeholders_follow_psycopg_rules():
    assert sqltext.placeholders("SELECT %(a)s, %(b)s, %(a)s, 100 %% 7") == ["a", "b"]
    for bad, message in [
        ("SELECT %s", "stray '%s'"),
        ("SELECT 5 % 2", "stray '% '"),
        ("SELECT %(a)d", "bad parameter placeholder '%(a)d'"),
        ("SELECT %(a b)s", "bad parameter placeholder"),
    ]:
        with pytest.raises(InvalidReport) as caught:
            sqltext.placeholders(bad)
        assert message in str(caught.value)

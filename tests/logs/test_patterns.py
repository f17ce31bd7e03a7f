"""Filter patterns: what coldbrew matches as CloudWatch does, and what it refuses, saying so."""

from __future__ import annotations

import pytest

from coldbrew.logs.errors import InvalidParameterException
from coldbrew.logs.patterns import parse

LINES = [
    "ERROR 400 bad request",
    "ERROR Model failed to load: no weights",
    "WARN memory is low",
    "INFO heartbeat ERROR-free",
    "error in lower case",
]


def matching(pattern: str) -> list[str]:
    parsed = parse(pattern)
    return [line for line in LINES if parsed.matches(line)]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("", LINES),
        ('""', LINES),
        ("ERROR", [LINES[0], LINES[1], LINES[3]]),  # case-sensitive, anywhere in the message
        ("ERROR 400", [LINES[0]]),
        ('"failed to load"', [LINES[1]]),
        ('"Model failed" weights', [LINES[1]]),
        ("?WARN ?400", [LINES[0], LINES[2]]),
        ("ERROR -heartbeat", [LINES[0], LINES[1]]),
        ('-"ERROR"', [LINES[2], LINES[4]]),
        ('"say \\"hi\\""', []),
    ],
)
def test_terms_phrases_either_and_excluded(pattern: str, expected: list[str]) -> None:
    assert matching(pattern) == expected


def test_the_sql_condition_agrees_with_the_python_one() -> None:
    import sqlite3

    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (message TEXT)")
    conn.executemany("INSERT INTO t VALUES (?)", [(line,) for line in LINES])
    for pattern in ("ERROR", "ERROR 400", '"failed to load"', "?WARN ?400", "ERROR -heartbeat", ""):
        clause, params = parse(pattern).sql()
        rows = [r[0] for r in conn.execute(f"SELECT message FROM t WHERE {clause} ORDER BY rowid", params)]
        assert rows == matching(pattern), pattern


@pytest.mark.parametrize(
    ("pattern", "says"),
    [
        ('{ $.level = "error" }', "JSON filter patterns are not supported"),
        ("[ip, user, status=404]", "space-delimited filter patterns are not supported"),
        ("%ERROR [0-9]+%", "regular-expression filter patterns are not supported"),
        ("ERROR ?WARN", "cannot be combined with required terms"),
        ('"unclosed', "a double quote is not closed"),
        ('ab"c', "a double quote inside a term"),
        ("ERROR && WARN", "&& and || are not supported"),
    ],
)
def test_unsupported_patterns_are_refused_naming_what_is_supported(pattern: str, says: str) -> None:
    with pytest.raises(InvalidParameterException) as refused:
        parse(pattern)
    assert says in refused.value.message
    assert refused.value.message.startswith(f"Invalid filter pattern '{pattern}'")
    if "not supported" in says:
        assert "coldbrew supports term filter patterns" in refused.value.message

"""List paging over the store directly: every sort order pages through all rows exactly once, in
SageMaker's order, and each page is read off an index (no sort of the whole table per page)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from coldbrew.control.paging import SORT_COLUMNS, ListQuery, _encode_token, list_rows
from coldbrew.control.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "coldbrew.db")
    with store.transaction() as conn:
        for i in range(37):
            name = f"Endpoint-{(i * 7) % 37:02d}"
            conn.execute(
                "INSERT INTO endpoints (name_key, name, arn, created_at, modified_at, status, "
                "config_name, deployment) VALUES (?, ?, ?, ?, ?, ?, 'c', '{}')",
                # Creation times tie in threes: the name breaks the tie, in the sort's direction.
                [name.lower(), name, f"arn/{name}", float(i // 3), float(i), ["InService", "Failed"][i % 2]],
            )
    return store


def pages(store: Store, **request: object) -> list[str]:
    names: list[str] = []
    token = None
    while True:
        query = ListQuery.from_request("endpoints", {**request, "MaxResults": 5, "NextToken": token})
        if request.get("StatusEquals"):
            query.equals("status", request["StatusEquals"])
        rows, token = list_rows(store, query)
        names += [r["name"] for r in rows]
        if token is None:
            return names


@pytest.mark.parametrize("sort_by", sorted(SORT_COLUMNS))
@pytest.mark.parametrize("order", ["Ascending", "Descending"])
def test_every_sort_pages_through_every_row_once_in_order(store: Store, sort_by: str, order: str) -> None:
    rows = store.query("SELECT * FROM endpoints")
    column = SORT_COLUMNS[sort_by]
    expected = [
        r["name"]
        for r in sorted(rows, key=lambda r: (r[column], r["name_key"]), reverse=order == "Descending")
    ]
    assert pages(store, SortBy=sort_by, SortOrder=order) == expected
    assert pages(store, SortBy=sort_by, SortOrder=order, StatusEquals="InService") == [
        r["name"]
        for r in sorted(
            (r for r in rows if r["status"] == "InService"),
            key=lambda r: (r[column], r["name_key"]),
            reverse=order == "Descending",
        )
    ]


def page_sql(store: Store, query: ListQuery) -> tuple[str, list[object]]:
    """The statement and parameters ``list_rows`` runs for ``query``."""
    ran: list[tuple[str, list[object]]] = []

    class Recording(Store):
        def query(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
            ran.append((sql, list(params)))
            return []

    recording = Recording.__new__(Recording)
    list_rows(recording, query)
    return ran[0]


@pytest.mark.parametrize("table", ["models", "endpoint_configs", "endpoints"])
@pytest.mark.parametrize("sort_by", sorted(SORT_COLUMNS))
@pytest.mark.parametrize("later_page", [False, True])
def test_a_page_is_read_off_an_index(store: Store, table: str, sort_by: str, later_page: bool) -> None:
    if sort_by == "Status" and table != "endpoints":
        pytest.skip("only endpoints have a status")
    query = ListQuery(table=table, sort_by=sort_by, max_results=10)
    if later_page:  # a token for this query, as the first page would make it
        query.next_token = _encode_token(query, 1.0 if sort_by == "CreationTime" else "x", "x")
    sql, params = page_sql(store, query)
    plan = " ".join(r[3] for r in store.query(f"EXPLAIN QUERY PLAN {sql}", params))
    assert "TEMP B-TREE" not in plan, plan

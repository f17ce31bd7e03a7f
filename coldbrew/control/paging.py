"""List operations: filtering, sorting and NextToken paging over one resource table.

NextToken carries the sort key of the last item returned (keyset paging), so resources created or
deleted between pages neither repeat nor skip the ones already listed. It also names the table and
sort it was made for, so a token that was forged, garbled or made by another List operation is a
ValidationException, never a query with a value of the wrong type.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass, field
from typing import Any

from coldbrew.control.store import Store
from coldbrew.errors import ValidationException
from coldbrew.wire.constraints import shown, timestamp_seconds

DEFAULT_MAX_RESULTS = 10

SORT_COLUMNS = {"Name": "name_key", "CreationTime": "created_at", "Status": "status"}


@dataclass
class ListQuery:
    table: str
    sort_by: str = "CreationTime"
    sort_order: str = "Descending"
    name_contains: str | None = None
    max_results: int = DEFAULT_MAX_RESULTS
    next_token: str | None = None
    where: list[str] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)

    @classmethod
    def from_request(cls, table: str, request: dict[str, Any]) -> ListQuery:
        query = cls(
            table=table,
            sort_by=request.get("SortBy", "CreationTime"),
            sort_order=request.get("SortOrder", "Descending"),
            name_contains=request.get("NameContains"),
            max_results=request.get("MaxResults", DEFAULT_MAX_RESULTS),
            next_token=request.get("NextToken"),
        )
        query.time_filter("created_at", "<", request.get("CreationTimeBefore"))
        query.time_filter("created_at", ">", request.get("CreationTimeAfter"))
        return query

    def time_filter(self, column: str, op: str, value: Any) -> None:
        if value is None:
            return
        seconds = timestamp_seconds(value)
        if seconds is None:  # validation refuses these first; this keeps the query safe anyway
            raise ValidationException(f"Invalid timestamp '{shown(value)}'.")
        self.where.append(f"{column} {op} ?")
        self.params.append(seconds)

    def equals(self, column: str, value: Any) -> None:
        if value is not None:
            self.where.append(f"{column} = ?")
            self.params.append(value)


_TOKEN_VERSION = 1


def _encode_token(query: ListQuery, sort_value: Any, name_key: str) -> str:
    token = [_TOKEN_VERSION, query.table, query.sort_by, sort_value, name_key]
    return base64.urlsafe_b64encode(json.dumps(token).encode()).decode()


def _decode_token(query: ListQuery, token: str) -> tuple[Any, str]:
    invalid = ValidationException(
        f"Invalid NextToken '{shown(token, 64)}': pass the NextToken of the previous response of the "
        "same List operation, with the same SortBy."
    )
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError, binascii.Error, RecursionError):
        raise invalid from None
    if not isinstance(decoded, list) or len(decoded) != 5:
        raise invalid
    version, table, sort_by, sort_value, name_key = decoded
    if [version, table, sort_by] != [_TOKEN_VERSION, query.table, query.sort_by]:
        raise invalid
    if not isinstance(name_key, str) or not _sort_value_fits(sort_by, sort_value):
        raise invalid
    return sort_value, name_key


def _sort_value_fits(sort_by: str, value: Any) -> bool:
    """Whether ``value`` is what the sort column holds: SQLite would compare anything with
    anything, and refuses integers past 64 bits with an OverflowError."""
    if sort_by == "CreationTime":
        return (
            isinstance(value, float | int)
            and not isinstance(value, bool)
            and math.isfinite(value)
            and (abs(value) < 2**53)
        )
    return isinstance(value, str)


def list_rows(store: Store, query: ListQuery) -> tuple[list[Any], str | None]:
    """One page of rows and the token for the next page (None on the last page)."""
    column = SORT_COLUMNS[query.sort_by]
    descending = query.sort_order == "Descending"
    where, params = list(query.where), list(query.params)
    if query.name_contains:
        where.append("instr(name_key, ?) > 0")
        params.append(query.name_contains.lower())
    # Sorted by name, the tie-break is the sort itself: naming name_key twice would make SQLite
    # sort every row again after reading them off the primary key in order.
    keys = ["name_key"] if column == "name_key" else [column, "name_key"]
    if query.next_token:
        sort_value, name_key = _decode_token(query, query.next_token)
        after = [sort_value, name_key][-len(keys) :]
        where.append(f"({', '.join(keys)}) {'<' if descending else '>'} ({', '.join('?' for _ in keys)})")
        params += after
    direction = "DESC" if descending else "ASC"
    sql = f"SELECT * FROM {query.table}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY {', '.join(f'{k} {direction}' for k in keys)} LIMIT ?"
    rows = store.query(sql, [*params, query.max_results + 1])
    if len(rows) <= query.max_results:
        return rows, None
    page = rows[: query.max_results]
    last = page[-1]
    return page, _encode_token(query, last[column], last["name_key"])

"""Writing many rows of one table in one statement.

An executemany runs its statement once per row: on PostgreSQL each row is bound, planned and
executed on its own (a pipeline spares only the waits between them), which made a batch of
applied callbacks cost the server as much as the callbacks' own inserts. So on PostgreSQL an
update of many rows is one `UPDATE ... FROM json_to_recordset(<the rows>)` and an insert one
`INSERT ... SELECT ... FROM json_to_recordset(...)`: the same statement whatever the number of
rows, so the driver prepares it once (a multi-row VALUES list would be a new statement, parsed
anew, for every batch). The rows travel as one JSON document, which the standard library
writes in C: an array per column costs the driver a Python call and a regular expression per
value. SQLite runs in the process, where a row costs little: it keeps executemany.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, Text, bindparam, cast, column, func, insert, update
from sqlalchemy.dialects.postgresql import JSON
from sqlalchemy.engine import Connection
from sqlalchemy.types import TypeEngine


class RowsUpdate:
    """`UPDATE table SET <column> = :<parameter>, ... WHERE <key> = :<key parameter>` for
    many rows; `also` sets more columns to expressions of the row or of scalar parameters."""

    def __init__(
        self,
        table: Table,
        key: tuple[str, str],
        columns: Mapping[str, str],
        also: Mapping[str, Any] | None = None,
    ) -> None:
        (key_column, key_parameter), also = key, dict(also or {})
        self.each = (
            update(table)
            .where(table.c[key_column] == bindparam(key_parameter))
            .values({name: bindparam(parameter) for name, parameter in columns.items()})
            .values(also)
        )
        typed = {key_parameter: key_column, **{p: name for name, p in columns.items()}}
        rows = _recordset(table, typed)
        self.unnested = (
            update(table)
            .where(table.c[key_column] == rows.c[key_parameter])
            .values({name: rows.c[parameter] for name, parameter in columns.items()})
            .values(also)
        )
        self.parameters = tuple(typed)

    def execute(
        self, connection: Connection, rows: Sequence[Mapping[str, Any]], **scalars: Any
    ) -> None:
        """Update every row: each a mapping of the parameters; `scalars` are the same for all."""
        if not rows:
            return
        if connection.dialect.name == "postgresql":
            given = rows_document(rows, self.parameters)
            connection.execute(self.unnested, {ROWS: given, **scalars})
        else:
            connection.execute(self.each, [{**row, **scalars} for row in rows])


class RowsInsert:
    """`INSERT INTO table (<columns>) VALUES (...)` for many rows."""

    def __init__(self, table: Table, columns: Sequence[str]) -> None:
        self.each = insert(table)
        self.unnested = insert(table).from_select(
            list(columns), _recordset(table, {c: c for c in columns})
        )
        self.columns = tuple(columns)

    def execute(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert every row: each a mapping of the columns."""
        if not rows:
            return
        if connection.dialect.name == "postgresql":
            connection.execute(self.unnested, {ROWS: rows_document(rows, self.columns)})
        else:
            connection.execute(self.each, list(rows))


ROWS = "rows"  # the parameter that carries the rows


def given_rows(columns: Mapping[str, TypeEngine[Any]]) -> Any:
    """Rows given as one JSON document (`rows_document`), as a table named `given`:
    {name: type} of its columns. PostgreSQL only."""
    return (
        func.json_to_recordset(cast(bindparam(ROWS, type_=Text), JSON))
        .table_valued(*(column(name, type_) for name, type_ in columns.items()))
        .render_derived(name="given", with_types=True)
    )


def rows_document(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> str:
    """The value of `ROWS` for these rows: each a mapping holding at least `names`."""
    return json.dumps([{name: row[name] for name in names} for row in rows], default=_encoded)


def _recordset(table: Table, typed: Mapping[str, str]) -> Any:
    """`given_rows` for {parameter: the column of `table` it fills}."""
    return given_rows({p: table.c[name].type for p, name in typed.items()})


def _encoded(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} cannot be written in bulk")

"""Writing many rows of one table in one statement.

An executemany runs its statement once per row: on PostgreSQL each row is bound, planned and
executed on its own (a pipeline spares only the waits between them), which made a batch of
applied callbacks cost the server as much as the callbacks' own inserts. So on PostgreSQL an
update of many rows is one `UPDATE ... FROM unnest(<an array per column>)` and an insert one
`INSERT ... SELECT ... FROM unnest(...)`: the same statement whatever the number of rows, so
the driver prepares it once (a multi-row VALUES list would be a new statement, parsed anew,
for every batch). SQLite runs in the process, where a row costs little: it keeps executemany.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Table, bindparam, column, func, insert, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection


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
        rows = _unnest(table, typed)
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
            arrays = {p: [row[p] for row in rows] for p in self.parameters}
            connection.execute(self.unnested, {**arrays, **scalars})
        else:
            connection.execute(self.each, [{**row, **scalars} for row in rows])


class RowsInsert:
    """`INSERT INTO table (<columns>) VALUES (...)` for many rows."""

    def __init__(self, table: Table, columns: Sequence[str]) -> None:
        self.each = insert(table)
        self.unnested = insert(table).from_select(
            list(columns), _unnest(table, {c: c for c in columns})
        )
        self.columns = tuple(columns)

    def execute(self, connection: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert every row: each a mapping of the columns."""
        if not rows:
            return
        if connection.dialect.name == "postgresql":
            connection.execute(self.unnested, {c: [row[c] for row in rows] for c in self.columns})
        else:
            connection.execute(self.each, list(rows))


def _unnest(table: Table, typed: Mapping[str, str]) -> Any:
    """The rows given as one array parameter per column: {parameter: the column it fills}."""
    return (
        func.unnest(*(bindparam(p, type_=ARRAY(table.c[name].type)) for p, name in typed.items()))
        .table_valued(*(column(p, table.c[name].type) for p, name in typed.items()))
        .render_derived(name="given")
    )

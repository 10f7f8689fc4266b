"""A statement for the hottest path, run without SQLAlchemy's execution machinery.

The callback receiver runs one statement per request. Through a `Connection` that statement
costs about 0.35 ms of CPU more than the driver's own call: the execution context, result
and row objects SQLAlchemy builds for every execution. Here the Core statement is compiled
once for the engine's dialect; each call converts its parameters with the statement's own
types and hands them to a pooled DBAPI connection on which the statement commits itself.
The SQL, its types and the pool stay SQLAlchemy's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from sqlalchemy.engine import Engine
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler


class OneStatement:
    """A Core statement compiled for `engine`, whose connections commit each statement."""

    def __init__(self, engine: Engine, statement: ClauseElement) -> None:
        dialect = engine.dialect
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
        self.engine = engine
        self.sql = str(compiled)
        self._positional = bool(compiled.positional)
        binds = compiled.binds
        self._names = tuple(compiled.positiontup or ()) if self._positional else tuple(binds)
        # What the column types do to a value on its way to the driver (JSON, UTC times, ...).
        self._convert = {
            name: convert
            for name in self._names
            if (convert := binds[name].type.dialect_impl(dialect).bind_processor(dialect))
        }
        self.driver_errors: type[Exception] = dialect.loaded_dbapi.Error

    def first(self, values: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """Run the statement with `values` (committed when it returns); its first row."""
        converted = {
            name: convert(values[name]) if (convert := self._convert.get(name)) else values[name]
            for name in dict.fromkeys(self._names)
        }
        params = tuple(converted[name] for name in self._names) if self._positional else converted
        connection = self.engine.raw_connection()
        try:
            cursor = connection.cursor()
            cursor.execute(self.sql, params)
            row = cursor.fetchone()
            cursor.close()
        except self.driver_errors:
            # It may be the connection that failed: never hand it out again.
            connection.invalidate()
            raise
        finally:
            connection.close()
        return None if row is None else tuple(row)

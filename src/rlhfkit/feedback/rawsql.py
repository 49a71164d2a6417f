"""SQLAlchemy Core statements compiled once per dialect and run straight on a DBAPI cursor.

Why: on the hot routes (serve a task, store an answer) SQLAlchemy's per-execution machinery cost
25-160 us per statement on this machine, against ~10 us for the same SQL on the raw sqlite3 cursor.
The statement is still written in Core and compiled by SQLAlchemy for the backend (placeholders,
PostgreSQL casts), and values go through the columns' own bind/result processors, so rows written
here read back identically through the ORM (JSON, aware UTC datetimes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement

Processor = Optional[Callable[[Any], Any]]


class Statement:
    """One Core statement, compiled for ``dialect``; every bind parameter is passed by name or has a value."""

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
        self.positional = bool(compiled.positional)
        names: Sequence[str] = compiled.positiontup if self.positional else list(compiled.binds)  # type: ignore[assignment]
        self._binds: list[tuple[str, Processor, bool, Any]] = []
        for name in names:
            bind = compiled.binds[name]
            self._binds.append((name, bind.type._cached_bind_processor(dialect), bind.required, bind.value))
        self._dialect = dialect
        self._result_types = [c.type for c in getattr(statement, "exported_columns", ())]
        self._results: Optional[list[Processor]] = None
        self.many: Optional[Many] = None

    def params(self, values: dict[str, Any]) -> Any:
        """Driver parameters (tuple or dict) for named values, through the columns' bind processors."""
        out = []
        for name, processor, required, default in self._binds:
            if name in values:
                value = values[name]
            elif required:
                raise KeyError(f"statement parameter {name!r} not given: {self.sql}")
            else:
                value = default
            out.append(processor(value) if processor is not None and value is not None else value)
        if self.positional:
            return tuple(out)
        return {name: value for (name, *_), value in zip(self._binds, out)}

    def row(self, raw: Optional[Sequence[Any]], description: Any) -> Optional[tuple[Any, ...]]:
        """A fetched row with the result processors applied (None stays None).

        Processors are chosen once, from the driver's column type codes of the first result (as
        SQLAlchemy does: e.g. PostgreSQL floats need none, numerics need a conversion).
        """
        if raw is None:
            return None
        if self._results is None:
            codes = [d[1] for d in description] if description else [None] * len(self._result_types)
            self._results = [t._cached_result_processor(self._dialect, code) for t, code in zip(self._result_types, codes)]
        if not any(self._results):
            return tuple(raw)
        return tuple(p(v) if p is not None else v for p, v in zip(self._results, raw))

    def fetch(self, cursor: Any, rows: str) -> Any:
        """The executed statement's result on ``cursor``: its first row ("one") or every row ("all")."""
        raw = [cursor.fetchone()] if rows == "one" else cursor.fetchall()  # in pipeline mode this waits for it
        description = cursor.description if self._results is None else None  # psycopg builds it on each access
        processed = [self.row(r, description) for r in raw]
        return processed[0] if rows == "one" else processed


@dataclass(frozen=True)
class Many:
    """The array form of a statement: one execution for the same statement of several operations.

    ``statement`` takes one parameter, ``rows``: a list with one record per operation, its values
    under ``names`` (through ``encoders`` where given) and its 1-based position as ``n``. It returns
    rows whose first column says which operation they answer: ``n``, or where ``tag`` names a value,
    that value (e.g. the annotator id an INSERT returns). Operations that share a value of ``tag`` or
    of a name in ``distinct`` never share an execution: rows of one statement do not see each other's
    writes.
    """

    statement: Statement
    names: tuple[str, ...]
    tag: Optional[str] = None
    distinct: tuple[str, ...] = ()
    encoders: dict[str, Callable[[Any], Any]] = field(default_factory=dict)

    def params(self, values: Sequence[dict[str, Any]]) -> Any:
        """Driver parameters for the given operations' values, in their order."""
        rows = []
        for n, given in enumerate(values, 1):
            row = {name: given[name] for name in self.names}
            for name, encode in self.encoders.items():
                if row[name] is not None:
                    row[name] = encode(row[name])
            row["n"] = n
            rows.append(row)
        return self.statement.params({"rows": rows})

    def split(self, rows: list[tuple[Any, ...]], values: Sequence[dict[str, Any]]) -> list[list[tuple[Any, ...]]]:
        """The fetched rows of one execution, as each operation's own rows (in their order)."""
        by_tag: dict[Any, list[tuple[Any, ...]]] = {}
        for row in rows:
            by_tag.setdefault(row[0], []).append(row[1:])
        tags = range(1, len(values) + 1) if self.tag is None else [v[self.tag] for v in values]
        return [by_tag.get(t, []) for t in tags]


class RawConnection:
    """A DBAPI connection driven with explicit BEGIN/COMMIT and compiled :class:`Statement` objects.

    ``pipeline`` is set while a psycopg 3 pipeline is open: results are then read only when fetched,
    so a row count needs a sync first, and after a failed statement the pipeline must be synced
    before the transaction can go on (:meth:`clear_pipeline_error`).
    """

    def __init__(self, dbapi_connection: Any) -> None:
        self.dbapi_connection = dbapi_connection
        self.cursor = dbapi_connection.cursor()
        self.pipeline: Any = None

    def clear_pipeline_error(self) -> None:
        """After a failed statement in pipeline mode: sync, so the statements that follow are run again."""
        if self.pipeline is not None:
            try:
                self.pipeline.sync()
            except Exception:  # noqa: BLE001 - the error was already raised to the operation
                pass

    def execute(self, sql: str) -> None:
        """Run a parameterless statement (BEGIN, SAVEPOINT ...)."""
        self.cursor.execute(sql)

    def run(self, statement: Statement, **values: Any) -> int:
        """Execute; returns the number of rows changed (for UPDATE/INSERT without RETURNING)."""
        self.cursor.execute(statement.sql, statement.params(values))
        if self.pipeline is not None:
            self.pipeline.sync()
        return self.cursor.rowcount

    def fetch(self, statement: Statement, rows: str, **values: Any) -> Any:
        """Execute; the first row ("one", processed, or None) or every row ("all")."""
        self.cursor.execute(statement.sql, statement.params(values))
        return statement.fetch(self.cursor, rows)

    def one(self, statement: Statement, **values: Any) -> Optional[tuple[Any, ...]]:
        """The first row of a query (processed), or None."""
        return self.fetch(statement, "one", **values)  # type: ignore[no-any-return]

    def all(self, statement: Statement, **values: Any) -> list[tuple[Any, ...]]:
        """Every row of a query (processed)."""
        return self.fetch(statement, "all", **values)  # type: ignore[no-any-return]

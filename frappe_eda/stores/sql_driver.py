"""The SQL store's hot statements, rendered once and sent straight to the DB-API driver.

A worker writes one batch of records and reads one batch of inbox ids per prefetch window; through
SQLAlchemy Core each row costs its parameter processing (~40 µs for 20 columns) and each ``IN (...)``
list a fresh compilation. These statements are compiled once per store for the engine's dialect, and
their rows are converted with the columns' own bind processors (so SQLite stores times in exactly the
format SQLAlchemy reads back), then handed to the driver's ``executemany``.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Table
from sqlalchemy.sql import ClauseElement


class DriverInsert:
	"""An INSERT (or upsert) of whole rows, compiled once; ``execute`` sends many rows in one call."""

	def __init__(self, statement: ClauseElement, table: Table, engine: Engine, keys: Sequence[str]) -> None:
		dialect = engine.dialect
		compiled = statement.compile(dialect=dialect, column_keys=list(keys))
		self.sql = str(compiled)
		self.positional = bool(compiled.positional)
		order = list(compiled.positiontup or []) if self.positional else list(keys)
		if set(order) != set(keys):
			raise ValueError(f"statement binds {sorted(order)}, expected {sorted(keys)}")
		self._order = order
		self._values = operator.itemgetter(*order)
		self._processors = [
			(index, processor)
			for index, key in enumerate(order)
			if (processor := dialect.type_descriptor(table.c[key].type).bind_processor(dialect)) is not None
		]

	def parameters(self, rows: Iterable[Mapping[str, Any]]) -> list[tuple[Any, ...]] | list[dict[str, Any]]:
		"""Driver parameters for each row; a value shared by every row (the batch's ``updated_at``) is
		converted once."""
		converted: dict[tuple[int, int], Any] = {}
		params: list[tuple[Any, ...]] = []
		for row in rows:
			values = list(self._values(row))
			for index, processor in self._processors:
				value = values[index]
				key = (index, id(value))
				if key not in converted:
					converted[key] = (value, processor(value))
				values[index] = converted[key][1]
			params.append(tuple(values))
		if self.positional:
			return params
		return [dict(zip(self._order, values, strict=True)) for values in params]

	def execute(self, connection: Connection, rows: Iterable[Mapping[str, Any]]) -> None:
		connection.exec_driver_sql(self.sql, self.parameters(rows))  # type: ignore[arg-type]


class InboxLookup:
	"""``message_id IN (...)`` for one queue, with the id list rendered as plain placeholders.

	Status is read, not filtered: with it in the WHERE clause SQLite's planner picks the
	``(direction, status)`` index and scans every processed message of the table for each batch,
	instead of seeking the unique key.
	"""

	def __init__(self, table: Table, engine: Engine) -> None:
		dialect = engine.dialect
		self._mark = "?" if dialect.paramstyle == "qmark" else "%s"
		quote = dialect.identifier_preparer
		self._head = (
			f"SELECT {quote.quote('message_id')}, {quote.quote('status')} FROM {quote.format_table(table)} "
			f"WHERE {quote.quote('direction')} = {self._mark} AND {quote.quote('queue')} = {self._mark} "
			f"AND {quote.quote('message_id')} IN "
		)

	def sql(self, count: int) -> str:
		"""The statement for ``count`` ids; parameters: direction, queue, then the ids."""
		return self._head + "(" + ", ".join([self._mark] * count) + ")"

	def statuses(
		self, connection: Connection, direction: str, queue: str, message_ids: Sequence[str]
	) -> list[tuple[str, str]]:
		result = connection.exec_driver_sql(self.sql(len(message_ids)), (direction, queue, *message_ids))
		return [(message_id, status) for message_id, status in result]

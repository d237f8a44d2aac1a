"""The SQL store's hot statements, rendered once and sent straight to the DB-API driver.

A worker writes one batch of records and reads one batch of inbox ids per prefetch window; through
SQLAlchemy Core each row costs its parameter processing (~40 µs for 20 columns) and each ``IN (...)``
list a fresh compilation. These statements are compiled once per store for the engine's dialect, and
their rows are converted with the columns' own bind processors (so SQLite stores times in exactly the
format SQLAlchemy reads back), then handed to the driver's ``executemany`` (with pymysql, rendered into
one multi-row INSERT instead: see ``_PyMySqlValues``).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Table
from sqlalchemy.sql import ClauseElement

T = TypeVar("T")


class DriverInsert:
	"""An INSERT (or upsert) of whole rows, compiled once; ``execute`` sends many rows in one call."""

	def __init__(self, statement: ClauseElement, table: Table, engine: Engine, keys: Sequence[str]) -> None:
		dialect = engine.dialect
		compiled = statement.compile(dialect=dialect, column_keys=list(keys))
		self.sql = str(compiled)
		self.positional = bool(compiled.positional)
		self._rendered: _PyMySqlValues | _Psycopg2Values | None = None
		if dialect.driver == "pymysql":
			self._rendered = _PyMySqlValues.of(self.sql)
		elif dialect.driver == "psycopg2":
			self._rendered = _Psycopg2Values.of(self.sql)
		if self.positional:
			order = list(compiled.positiontup or [])
		elif self._rendered is not None:
			order = self._rendered.names
		else:
			order = list(keys)
		if sorted(order) != sorted(keys):
			raise ValueError(f"statement binds {sorted(order)}, expected {sorted(keys)}")
		self._order = order
		self._values = operator.itemgetter(*order)
		self._processors = [
			(index, processor)
			for index, key in enumerate(order)
			if (processor := dialect.type_descriptor(table.c[key].type).bind_processor(dialect)) is not None
		]

	def parameters(self, rows: Iterable[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
		"""Each row's values in the statement's order; a value shared by every row (the batch's
		``updated_at``) is converted once."""
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
		return params

	def render(self, dbapi_connection: Any, rows: Iterable[Mapping[str, Any]]) -> list[str] | None:
		"""The statements that write ``rows``, quoted by the driver of ``dbapi_connection``; ``None``
		for a driver whose rows go as parameters (SQLite)."""
		if self._rendered is None:
			return None
		return self._rendered.statements(dbapi_connection, self.parameters(rows))

	def execute(self, connection: Connection, rows: Iterable[Mapping[str, Any]]) -> None:
		params = self.parameters(rows)
		if not params:
			return
		if self._rendered is not None:
			dbapi_connection = connection.connection.dbapi_connection
			for statement in self._rendered.statements(dbapi_connection, params):
				# ``no_parameters``: the cursor gets the text alone and does not %-format it again.
				connection.exec_driver_sql(statement, execution_options={"no_parameters": True})
		elif self.positional:
			connection.exec_driver_sql(self.sql, params)  # type: ignore[arg-type]
		else:
			named = [dict(zip(self._order, values, strict=True)) for values in params]
			connection.exec_driver_sql(self.sql, named)  # type: ignore[arg-type]


FEW_ROWS = 4


class _PyMySqlValues:
	"""One multi-row INSERT rendered with the driver's own quoting, each distinct value of a column
	quoted once.

	pymysql's ``executemany`` builds the same multi-row statement, but quotes every value of every row
	through four Python calls; in a batch most columns repeat (direction, queue, status, handler, empty
	strings, the batch's ``updated_at``), and that quoting was the largest cost of a MariaDB batch.
	"""

	MAX_STATEMENT = 1_024_000  # pymysql's own limit per statement (MariaDB's max_allowed_packet is larger)

	def __init__(self, prefix: str, values: str, postfix: str) -> None:
		self.prefix, self.postfix = prefix, postfix
		self.names = re.findall(r"%\(([^)]+)\)s", values)

	@classmethod
	def of(cls, sql: str) -> _PyMySqlValues | None:
		import pymysql.cursors

		match = pymysql.cursors.RE_INSERT_VALUES.match(sql)
		if match is None or "%s" in match.group(2):
			return None
		return cls(*match.groups())

	def statements(self, dbapi_connection: Any, params: Sequence[tuple[Any, ...]]) -> list[str]:
		escape = dbapi_connection.escape
		if len(params) <= FEW_ROWS:
			# A publish()'s row or two: quoting each value costs less than finding the repeated ones.
			rows = ",".join("(" + ",".join(map(escape, values)) + ")" for values in params)
			if len(rows) + len(self.prefix) + len(self.postfix) <= self.MAX_STATEMENT:
				return [self.prefix + rows + self.postfix]
		columns = []
		for column in zip(*params, strict=True):
			quoted = {value: escape(value) for value in set(column)}
			columns.append([quoted[value] for value in column])
		statements: list[str] = []
		rows: list[str] = []
		size = len(self.prefix) + len(self.postfix)
		for values in zip(*columns, strict=True):
			row = "(" + ",".join(values) + ")"
			if rows and size + len(row) + 1 > self.MAX_STATEMENT:
				statements.append(self.prefix + ",".join(rows) + self.postfix)
				rows, size = [], len(self.prefix) + len(self.postfix)
			rows.append(row)
			size += len(row) + 1
		if rows:
			statements.append(self.prefix + ",".join(rows) + self.postfix)
		return statements


class _Psycopg2Values:
	"""One multi-row ``INSERT ... VALUES (...), (...) ON CONFLICT ...`` per page of rows.

	psycopg2's ``executemany`` sends a statement per row, and even ``execute_batch`` (SQLAlchemy's
	``values_plus_batch``) sends one INSERT per row, joined into one round trip: the server still plans
	and runs each, ~1.2 ms per 10 rows of the message table. One statement for the page costs a fifth of it.
	"""

	PAGE = 500

	def __init__(self, prefix: str, values: str, postfix: str) -> None:
		self.names = re.findall(r"%\(([^)]+)\)s", values)
		self.sql = prefix + "%s" + postfix
		self.template = re.sub(r"%\([^)]+\)s", "%s", values)

	@classmethod
	def of(cls, sql: str) -> _Psycopg2Values | None:
		"""Split ``INSERT INTO t (...) VALUES (...) <rest>`` at its one row of placeholders."""
		head, found, tail = sql.partition(" VALUES (")
		if not found or "%s" in sql:
			return None
		depth, end = 1, None
		for index, char in enumerate(tail):
			depth += {"(": 1, ")": -1}.get(char, 0)
			if depth == 0:
				end = index
				break
		if end is None:
			return None
		# SQLAlchemy adds ``RETURNING id`` for the primary key; nothing reads it.
		postfix = tail[end + 1 :].split(" RETURNING ")[0]
		return cls(head + " VALUES ", "(" + tail[: end + 1], postfix)

	def statements(self, dbapi_connection: Any, params: Sequence[tuple[Any, ...]]) -> list[str]:
		# Each row quoted by psycopg2 itself, as ``execute_values`` does.
		cursor = dbapi_connection.cursor()
		try:
			return [
				self.sql.replace(
					"%s",
					b",".join(
						cursor.mogrify(self.template, row) for row in params[i : i + self.PAGE]
					).decode(),
					1,
				)
				for i in range(0, len(params), self.PAGE)
			]
		finally:
			cursor.close()


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


class StatusUpdate:
	"""``UPDATE ... SET status, updated_at WHERE direction, queue, message_id IN (...)``, rendered once.

	The publisher marks what the broker confirmed after every call; through SQLAlchemy Core each such
	UPDATE was built, cache-keyed and compiled anew (~100 µs of Python for one id). ``updated_at`` goes
	through the column's own bind processor, so SQLite stores it in the format SQLAlchemy reads back.
	"""

	def __init__(self, table: Table, engine: Engine) -> None:
		dialect = engine.dialect
		self._mark = "?" if dialect.paramstyle == "qmark" else "%s"
		self._time = dialect.type_descriptor(table.c.updated_at.type).bind_processor(dialect)
		quote = dialect.identifier_preparer
		mark = self._mark
		self._head = (
			f"UPDATE {quote.format_table(table)} SET {quote.quote('status')} = {mark}, "
			f"{quote.quote('updated_at')} = {mark} WHERE {quote.quote('direction')} = {mark} "
			f"AND {quote.quote('queue')} = {mark} AND {quote.quote('message_id')} IN "
		)

	def sql(self, count: int) -> str:
		return self._head + "(" + ", ".join([self._mark] * count) + ")"

	def execute(
		self,
		connection: Connection,
		status: str,
		updated_at: Any,
		direction: str,
		queue: str,
		message_ids: Sequence[str],
	) -> None:
		sql = self.sql(len(message_ids))
		connection.exec_driver_sql(sql, self.parameters(status, updated_at, direction, queue, message_ids))

	def parameters(
		self, status: str, updated_at: Any, direction: str, queue: str, message_ids: Sequence[str]
	) -> tuple[Any, ...]:
		when = self._time(updated_at) if self._time is not None else updated_at
		return (status, when, direction, queue, *message_ids)


def chunks(items: Sequence[T], size: int) -> Iterator[list[T]]:
	"""``items`` in lists of at most ``size``: an ``IN (...)`` list, a statement's worth of locks."""
	for start in range(0, len(items), size):
		yield list(items[start : start + size])

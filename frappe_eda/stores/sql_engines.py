"""How the SQL store's engines are made: one per store for its transactions and, on MariaDB and
PostgreSQL, one more for writes that are a single statement (``autocommit_engine``).

- SQLite: pysqlite's own transaction handling is off (``isolation_level = None``) and the store issues
  ``BEGIN IMMEDIATE`` itself (``BEGIN DEFERRED`` for readers, ``DEFERRED``), in WAL mode.
- MariaDB: no ROLLBACK on the return of a connection whose transaction the store just committed
  (``mark_clean``); PostgreSQL: READ COMMITTED, which the inbox claim relies on.
- Both: a connection idle for over ``PING_AFTER_IDLE`` seconds is pinged before use, not every one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, DisconnectionError

DEFERRED = "eda_sqlite_deferred"


def autocommit_engine(url: Any) -> Engine:
	"""For a write that is one statement outside any transaction (a ``publish()``'s PENDING row): it
	commits by itself, one round trip instead of three (BEGIN is implicit, the statement, COMMIT). A
	pool of its own, set to autocommit once per connection: switching a pooled connection each time
	would cost the round trips saved."""
	engine = create_engine(url, isolation_level="AUTOCOMMIT", pool_reset_on_return=None, pool_recycle=3600)
	ping_when_idle(engine)
	return engine


def store_engine(url: str) -> Engine:
	"""The store's engine for ``url``, with the hooks each dialect needs (see the module docstring)."""
	if url.startswith("sqlite"):
		engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
		configure_sqlite(engine)
		return engine
	options: dict[str, Any] = {"pool_recycle": 3600}
	if url.startswith("postgresql"):
		# The store's batches are rendered into one statement (``sql_driver``); a statement that still
		# goes with many rows of parameters gets execute_batch's pages, not psycopg2's row by row.
		options.update(executemany_mode="values_plus_batch", executemany_batch_page_size=500)
		# The inbox claim relies on each statement seeing what other workers committed before it.
		options["isolation_level"] = "READ COMMITTED"
	if url.startswith(("mysql", "mariadb")):
		# pymysql sends ROLLBACK to the server for every connection returned to the pool, even one whose
		# transaction just committed: a round trip per transaction. ``_reset`` skips it for those.
		options["pool_reset_on_return"] = None
		engine = create_engine(url, **options)
		event.listen(engine, "reset", _reset)
	else:
		engine = create_engine(url, **options)
	ping_when_idle(engine)
	return engine


PING_AFTER_IDLE = 1.0  # seconds


def ping_when_idle(engine: Engine) -> None:
	"""SQLAlchemy's ``pool_pre_ping``, only for a connection idle longer than ``PING_AFTER_IDLE``.

	A ping on every checkout is a round trip per transaction: a fifth of a single ``publish()`` on
	MariaDB here. A connection in steady use was alive a moment ago; should the server have dropped it
	since (a restart, a KILL), its first statement fails, SQLAlchemy drops the pool's connections, and
	the caller's usual store-failure handling applies (the worker backs off and loses nothing; the
	publisher raises and leaves nothing half-recorded). A connection idle longer is pinged and, when
	dead, replaced before use (``DisconnectionError`` makes the pool take another)."""
	dialect = engine.dialect

	def fresh(_dbapi_connection: Any, record: Any) -> None:
		record.info[USED] = time.monotonic()

	def checkin(_dbapi_connection: Any, record: Any) -> None:
		if record is not None:
			record.info[USED] = time.monotonic()

	def checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
		if time.monotonic() - record.info.get(USED, 0.0) <= PING_AFTER_IDLE:
			return
		try:
			alive = dialect.do_ping(dbapi_connection)
		except Exception as e:
			raise DisconnectionError(f"the idle connection is gone ({type(e).__name__})") from e
		if alive is False:
			raise DisconnectionError("the idle connection is gone")

	event.listen(engine, "connect", fresh)
	event.listen(engine, "checkin", checkin)
	event.listen(engine, "checkout", checkout)


USED = "eda_last_used"


CLEAN = "eda_committed"


def mark_clean(connection: Connection) -> None:
	"""The store committed this connection's transaction; nothing is left to roll back on its return."""
	connection.connection.info[CLEAN] = True


def _reset(dbapi_connection: Any, record: Any, state: Any) -> None:
	"""The pool's rollback on return, except right after the store's own commit."""
	if record.info.pop(CLEAN, False) or state.terminate_only:
		return
	dbapi_connection.rollback()


def configure_sqlite(engine: Engine) -> None:
	if not event.contains(engine, "begin", _sqlite_begin):
		event.listen(engine, "connect", _sqlite_connect)
		event.listen(engine, "begin", _sqlite_begin)


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
	dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (savepoints need it)
	cursor = dbapi_connection.cursor()
	cursor.execute("PRAGMA journal_mode=WAL")
	cursor.execute("PRAGMA busy_timeout=30000")
	cursor.close()


def _sqlite_begin(connection: Connection) -> None:
	deferred = connection.get_execution_options().get(DEFERRED, False)
	connection.exec_driver_sql("BEGIN DEFERRED" if deferred else "BEGIN IMMEDIATE")


class SingleStatement:
	"""Runs a write that is one statement on a connection of ``autocommit_engine``: the statement is its
	own durable transaction. Errors come wrapped as SQLAlchemy's (``DBAPIError``), as through the store's
	transactions, and the connection that raised is dropped."""

	def __init__(self, engine: Engine) -> None:
		self.engine = engine

	def run(self, render: Callable[[Any], list[str] | None]) -> bool:
		"""Send what ``render(dbapi_connection)`` returns when it is one statement, and say so; False when
		it is none or several (those need a transaction of their own)."""
		fairy = self.engine.raw_connection()
		try:
			statements = render(fairy.dbapi_connection)
			if statements is None or len(statements) != 1:
				return False
			self._execute(fairy, statements[0], None)
			return True
		finally:
			fairy.close()

	def execute(self, sql: str, parameters: Sequence[Any]) -> None:
		fairy = self.engine.raw_connection()
		try:
			self._execute(fairy, sql, tuple(parameters))
		finally:
			fairy.close()

	def _execute(self, fairy: Any, sql: str, parameters: tuple[Any, ...] | None) -> None:
		dialect = self.engine.dialect
		try:
			cursor = fairy.dbapi_connection.cursor()
			try:
				# No parameters: the driver sends the rendered text as it is (no %-formatting).
				cursor.execute(sql) if parameters is None else cursor.execute(sql, parameters)
			finally:
				cursor.close()
		except dialect.loaded_dbapi.Error as e:
			fairy.invalidate(e)
			raise DBAPIError.instance(
				sql, parameters, e, dialect.loaded_dbapi.Error, connection_invalidated=True, dialect=dialect
			) from e

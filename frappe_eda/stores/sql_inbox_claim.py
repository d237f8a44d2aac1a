"""The SQL store's inbox claim: two workers on one queue never run one message twice.

Competing workers can hold copies of one id at once (a producer resent it after a lost confirm; a
worker whose broker node died is still finishing a batch the broker already gave to another one). Each
claims its batch's ids before it reads the inbox (``MessageStore.claim_inbox``), with a lock of the
database server named after the database, table, queue and id, so the second one waits until the first
one's transaction has ended and then reads the inbox as it left it:

- PostgreSQL: ``pg_advisory_xact_lock(key)``, 64-bit keys hashed from those names; the server frees
  them when the transaction ends, by itself.
- MariaDB/MySQL: ``GET_LOCK(name, timeout)``, a session lock (names are server-wide, hence the database
  in them); the store frees them right after the transaction's commit or rollback, and the server does
  should the worker die.

Why server locks and not rows: the claim used to be an INSERT and a DELETE of each id in a claim table,
which on MariaDB cost ~55 µs per message on the server (undo and redo of two row changes), a third of a
worker's time there; a named lock changes no table. Each batch takes its locks in one statement, in
sorted order (both servers evaluate a select list left to right), so two workers never wait on each
other crosswise; a deadlock the servers still detect is a transient error, tried again.

MariaDB takes the inbox's read view at its first read, after the locks were granted, so that read sees
the other worker's commit (PostgreSQL reads at READ COMMITTED, which the store's engines set).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import cached_property
from typing import Any

from sqlalchemy import Connection, Engine

from frappe_eda.messaging.errors import EdaError
from frappe_eda.stores.sql_driver import chunks

# Seconds a MariaDB worker waits for another one's batch holding the same id before giving up (the
# batch is tried again); PostgreSQL waits as for any lock (``lock_timeout``).
WAIT_SECONDS = 60
LOCKS_PER_STATEMENT = 100
PREFIX = "eda_in_"


class InboxClaimTimeout(EdaError):
	"""Another worker held a message of this batch longer than ``WAIT_SECONDS``; the batch is tried
	again (``SqlStore.is_transient``)."""


class InboxClaim:
	"""Takes (and on MariaDB frees) the inbox locks of one message table.

	Both statements go to the driver's own cursor: SQLAlchemy's result handling of a hundred-column row
	cost more than the locks themselves."""

	def __init__(self, engine: Engine, table: str) -> None:
		self.engine = engine
		self.dialect = engine.dialect.name
		self._scope = f"{engine.url.database or ''}\0{table}\0"

	@property
	def needed(self) -> bool:
		"""SQLite has one writer at a time (``BEGIN IMMEDIATE``): its transactions never overlap."""
		return self.dialect in ("postgresql", "mysql", "mariadb")

	def take(self, connection: Connection, queue: str, message_ids: Sequence[str]) -> list[str]:
		"""Lock ``queue``'s ids for the open transaction; returns what must be freed after it ends."""
		names = sorted({self._name(queue, message_id) for message_id in message_ids})
		if not names:
			return []
		cursor = _cursor(connection)
		try:
			if self.dialect == "postgresql":
				keys = sorted(_key(name) for name in names)
				# One statement, one result row; the locks are taken in the array's (sorted) order.
				cursor.execute(
					"SELECT count(*) FROM (SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) AS k) AS t",
					(keys,),
				)
				cursor.fetchall()
				return []
			if self._json_table:
				cursor.execute(_TAKE_JSON, (WAIT_SECONDS, json.dumps(names)))
				granted = sum(int(ok or 0) for (ok,) in cursor.fetchall()) == len(names)
			else:
				granted = True
				for chunk in chunks(names, LOCKS_PER_STATEMENT):
					cursor.execute(
						"SELECT " + ", ".join(["GET_LOCK(%s, %s)"] * len(chunk)),
						tuple(value for name in chunk for value in (name, WAIT_SECONDS)),
					)
					granted = granted and all(ok == 1 for ok in cursor.fetchone())
					if not granted:
						break
			if not granted:
				self.release(connection, names)
				raise InboxClaimTimeout(
					f"another worker held a message of queue {queue!r} for over {WAIT_SECONDS}s; "
					"the batch is tried again"
				)
		finally:
			cursor.close()
		return names

	def release(self, connection: Connection, names: Sequence[str]) -> None:
		"""Free MariaDB session locks once their transaction has ended (through SQLAlchemy the statement
		would begin a transaction that closing then rolls back: a round trip more). A connection that
		cannot free them is dropped, and the server frees them with its session."""
		if not names:
			return
		try:
			cursor = _cursor(connection)
			try:
				if self._json_table:
					# Every named lock of the session: the store's connections hold no others (the relay
					# claim has a connection of its own).
					cursor.execute("SELECT RELEASE_ALL_LOCKS()")
				else:
					for chunk in chunks(names, LOCKS_PER_STATEMENT):
						cursor.execute("SELECT " + ", ".join(["RELEASE_LOCK(%s)"] * len(chunk)), tuple(chunk))
				cursor.fetchall()
			finally:
				cursor.close()
		except Exception:
			connection.invalidate()

	@cached_property
	def _json_table(self) -> bool:
		"""MariaDB 10.6+ and MySQL 8.0+ have JSON_TABLE (and RELEASE_ALL_LOCKS): a batch's locks in one
		short statement; older servers get a select list of GET_LOCK calls."""
		dialect = self.engine.dialect
		if dialect.server_version_info is None:
			with self.engine.connect():
				pass
		version = tuple(dialect.server_version_info or ())
		return version >= ((10, 6) if getattr(dialect, "is_mariadb", False) else (8, 0))

	def _name(self, queue: str, message_id: str) -> str:
		# 64 characters at most for GET_LOCK; a collision only makes two ids wait for each other.
		return PREFIX + hashlib.sha1(f"{self._scope}{queue}\0{message_id}".encode()).hexdigest()


# Rows come out of JSON_TABLE in the array's (sorted) order, each lock taken as its row is read.
_TAKE_JSON = "SELECT GET_LOCK(t.n, %s) FROM JSON_TABLE(%s, '$[*]' COLUMNS (n VARCHAR(64) PATH '$')) AS t"


def _cursor(connection: Connection) -> Any:
	return connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]


def _key(name: str) -> int:
	return int.from_bytes(bytes.fromhex(name[len(PREFIX) :][:16]), "big", signed=True)

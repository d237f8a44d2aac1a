"""The SQL store's relay claim: one relay at a time per outbox, freed when its holder dies.

Why a lock over the outbox and not claims on rows: ``SELECT ... FOR UPDATE SKIP LOCKED`` would let two
relays take two batches and send them at the same time, so a later message could reach the broker
before an earlier one; a relay is bound by the broker's confirms, not by the database, so a second one
sending at once buys little. One holder at a time keeps every message once and in order.

Each dialect uses a lock its server frees when the holder's session ends, so a relay killed mid-batch
never blocks the others and no lease needs tuning:

- MariaDB/MySQL: ``GET_LOCK(name, 0)``, named after the database and table (the names are server-wide).
- PostgreSQL: ``pg_try_advisory_lock(key)``, a 64-bit key hashed from the table (the space is per
  database).
- SQLite: ``flock`` on a file beside the database (``<file>.<table>.relay-lock``), which the kernel frees
  when the process ends; SQLite's own write lock would stall every publisher for the whole batch. An
  in-memory database lives in one process, so a thread lock does.

The lock is taken on a connection of its own in autocommit mode, so it never holds a transaction open.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, text

from frappe_eda.messaging.errors import EdaError


class RelayClaim:
	"""Takes and frees the relay claim of one table; see the module docstring for how per dialect."""

	def __init__(self, engine: Engine, table: str) -> None:
		self.engine = engine
		self.table = table
		self.dialect = engine.dialect.name
		database = engine.url.database or ""
		self.name = "eda_relay_" + hashlib.sha1(f"{database}\0{table}".encode()).hexdigest()  # 50 chars
		self.key = int.from_bytes(hashlib.sha1(table.encode()).digest()[:8], "big", signed=True)
		self._thread_lock = threading.Lock()  # in-memory SQLite only

	@contextmanager
	def hold(self) -> Iterator[bool]:
		if self.dialect == "sqlite":
			with self._sqlite() as held:
				yield held
			return
		if self.dialect in ("mysql", "mariadb"):
			take, free = "SELECT GET_LOCK(:name, 0)", "SELECT RELEASE_LOCK(:name)"
		elif self.dialect == "postgresql":
			take, free = "SELECT pg_try_advisory_lock(:key)", "SELECT pg_advisory_unlock(:key)"
		else:
			raise EdaError(f"no relay claim for {self.dialect}; use SQLite, MariaDB/MySQL or PostgreSQL")
		params = {"name": self.name, "key": self.key}
		with self.engine.connect() as connection:
			connection = connection.execution_options(isolation_level="AUTOCOMMIT")
			if not connection.execute(text(take), params).scalar():
				yield False
				return
			try:
				yield True
			finally:
				_free(connection, free, params)

	@contextmanager
	def _sqlite(self) -> Iterator[bool]:
		path = self.engine.url.database
		if not path or path == ":memory:" or path.startswith("file::memory:"):
			if not self._thread_lock.acquire(blocking=False):
				yield False
				return
			try:
				yield True
			finally:
				self._thread_lock.release()
			return
		import fcntl  # POSIX; Frappe and the services this serves run on Linux

		fd = os.open(f"{path}.{self.table}.relay-lock", os.O_RDWR | os.O_CREAT, 0o644)
		try:
			try:
				fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
			except BlockingIOError:
				yield False
				return
			try:
				yield True
			finally:
				fcntl.flock(fd, fcntl.LOCK_UN)
		finally:
			os.close(fd)


def _free(connection: Connection, statement: str, params: dict[str, Any]) -> None:
	"""Unlock; if that fails the session must end, or the pooled connection would keep the lock."""
	try:
		connection.execute(text(statement), params)
	except Exception:
		connection.invalidate()
		raise

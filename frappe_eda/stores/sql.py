"""The SQL store for services outside Frappe: SQLite by default, MariaDB/MySQL and PostgreSQL by URL.

SQLite gets WAL, a busy timeout and ``BEGIN IMMEDIATE`` for transactions (so two processes sharing the
file queue for the write lock instead of failing on a lock upgrade), while reads outside a transaction
begin DEFERRED and so never wait for a writer. pysqlite's own transaction handling is turned off so that
SAVEPOINT really nests inside BEGIN.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, TypeVar

from sqlalchemy import (
	Connection,
	Engine,
	NestedTransaction,
	and_,
	delete,
	event,
	func,
	select,
	update,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite

from frappe_eda.messaging.callsite import call_site
from frappe_eda.messaging.envelope import utcnow
from frappe_eda.messaging.errors import EdaError, HandlerCommitted, HandlerEndedTransaction, TransactionLost
from frappe_eda.messaging.routing import topic_matches
from frappe_eda.messaging.store import (
	Direction,
	ErrorRecord,
	MessageFilter,
	MessageRecord,
	MessageStore,
	Status,
)
from frappe_eda.stores.sql_claim import RelayClaim
from frappe_eda.stores.sql_driver import DriverInsert, InboxLookup, StatusUpdate, chunks
from frappe_eda.stores.sql_engines import (
	DEFERRED,
	SingleStatement,
	autocommit_engine,
	configure_sqlite,
	mark_clean,
	store_engine,
)
from frappe_eda.stores.sql_inbox_claim import InboxClaim, InboxClaimTimeout
from frappe_eda.stores.sql_schema import (
	MESSAGE_FIELDS,
	build_tables,
	error_record,
	error_row,
	message_record,
	message_row,
	naive_utc,
	store_limits,
)

T = TypeVar("T")
FINISHED = (Status.PROCESSED.value, Status.PUBLISHED.value)
KEY = ("message_id", "direction", "queue")
UPDATABLE = tuple(name for name in MESSAGE_FIELDS if name not in KEY)
CHUNK = 500


class SqlStore(MessageStore):
	"""Messages and errors in two tables (``<prefix>message``, ``<prefix>error``) of any SQLAlchemy URL.

	Transactions are per thread: the outermost ``transaction()`` takes a connection and begins, nested
	levels are SAVEPOINTs. A handler whose own data lives in the same database gets exactly-once effects
	by writing through ``store.connection`` (inside a handler: ``current_context().store.connection``):
	its rows then commit with the batch that records the message as processed, and roll back with the
	handler's savepoint when it fails.

	The relay claim is a lock the database server (or, for SQLite, the kernel) frees when its holder
	ends; see ``sql_claim``.
	"""

	relay_claim_exclusive = True
	_alone: SingleStatement | None

	def __init__(self, url: str, *, create_tables: bool = True, table_prefix: str = "eda_") -> None:
		self._setup(store_engine(url), create_tables, table_prefix)
		if self.engine.dialect.name != "sqlite":
			self._alone = SingleStatement(autocommit_engine(self.engine.url))

	@classmethod
	def from_engine(
		cls, engine: Engine, *, create_tables: bool = True, table_prefix: str = "eda_"
	) -> SqlStore:
		"""For an engine the application configured itself (pool sizes, TLS). SQLite gets the store's hooks.
		Every write goes through this engine, in a transaction (no autocommit pool for single statements,
		whose connections the store could not make the application's way); on PostgreSQL keep READ
		COMMITTED, the default, which the inbox claim of competing workers relies on."""
		if engine.dialect.name == "sqlite":
			configure_sqlite(engine)
		store = cls.__new__(cls)
		store._setup(engine, create_tables, table_prefix)
		return store

	def _setup(self, engine: Engine, create_tables: bool, table_prefix: str) -> None:
		self.engine = engine
		self.metadata, self.messages, self.error_table = build_tables(table_prefix)
		self.limits = store_limits(self.messages, self.error_table, engine.dialect.name)
		self._byte_fields = frozenset(self.limits.text_chars)
		self._local = threading.local()
		# Writes that are one statement outside a transaction commit by themselves (``SingleStatement``):
		# only for a store made from a URL (``from_engine`` cannot copy how the application connects).
		self._alone = None
		self._relay_claim = RelayClaim(engine, self.messages.name)
		self._inbox_claim = InboxClaim(engine, self.messages.name)
		event.listen(engine, "commit", lambda connection: self._transaction_ended(connection, "commit"))
		event.listen(engine, "rollback", lambda connection: self._transaction_ended(connection, "rollback"))
		if create_tables:
			self.metadata.create_all(self.engine)

	def stored_length(self, field: str, value: str) -> int:
		"""MariaDB's TEXT columns are limited in bytes; every other column in characters."""
		return len(value.encode("utf-8")) if field in self._byte_fields else len(value)

	@property
	def engines(self) -> list[Engine]:
		"""The engine of its transactions, then the one for writes that go alone (MariaDB, PostgreSQL)."""
		return [self.engine] + ([self._alone.engine] if self._alone is not None else [])

	def __repr__(self) -> str:
		return f"SqlStore({self.engine.url.render_as_string(hide_password=True)!r})"

	# --- transactions -----------------------------------------------------------------------------

	@property
	def connection(self) -> Connection:
		"""The connection of this thread's open transaction (for a handler's own writes)."""
		state = self._state()
		if state.connection is None:
			raise EdaError("no transaction is open on this thread; use it inside store.transaction()")
		self._open_savepoints(state)
		state.wrote = True  # a handler may write through it
		return state.connection

	@contextmanager
	def transaction(self) -> Iterator[None]:
		"""Outermost: a connection and BEGIN. Nested: a SAVEPOINT, emitted only once the level writes.

		Most handlers never touch this database; a savepoint per message would cost them two round
		trips each for nothing, so a nested level becomes a real SAVEPOINT lazily, on first use.

		A handler that commits or rolls back ``store.connection`` itself ends the whole transaction and
		its savepoint with it; the level then raises ``HandlerCommitted`` (its writes so far are durable:
		the message is dead, never retried) or ``HandlerEndedTransaction`` (rolled back: retried), and
		the rest of the batch goes on in a new transaction. A rollback that also took earlier messages'
		writes makes the batch fail with ``TransactionLost``, so it is run again.
		"""
		state = self._state()
		if state.connection is not None:
			level = _Level(wrote_before=state.wrote)
			state.levels.append(level)
			try:
				yield
			except BaseException as e:
				if level.ended:
					_after_end(state, level, e)
				if level.savepoint is not None:
					level.savepoint.rollback()
				raise
			else:
				if level.ended:
					_after_end(state, level, None)
				if level.savepoint is not None:
					level.savepoint.commit()
			finally:
				state.levels.pop()
			return
		with self.engine.connect() as connection:
			connection.begin()
			state.connection, state.wrote, state.lost = connection, False, False
			try:
				yield
			except BaseException:
				if connection.in_transaction():
					connection.rollback()
				raise
			else:
				if state.lost:
					connection.rollback()
					raise TransactionLost(
						"a handler rolled back the store's transaction, and with it what other messages of "
						"the batch had written; nothing of the batch was recorded, run it again"
					)
				if connection.in_transaction():
					connection.commit()
					mark_clean(connection)
			finally:
				if state.claims:
					self._inbox_claim.release(connection, state.claims)
					state.claims = []
				state.connection = None

	def checkpoint(self) -> None:
		"""Commit the open transaction between two messages of a batch and begin the next one."""
		state = self._state()
		connection = state.connection
		if connection is None or state.levels or state.lost:
			return
		if connection.in_transaction():
			connection.commit()
		connection.begin()
		state.wrote = False

	def _transaction_ended(self, connection: Connection, action: str) -> None:
		"""SQLAlchemy's commit/rollback event: while a nested level is open, code inside it (a handler)
		ended the whole transaction; the store's own commits and rollbacks happen with none open."""
		state = self._state()
		if state.connection is not connection or not state.levels or state.levels[-1].ended:
			return
		handler, where = call_site(_is_machinery)
		for level in state.levels:
			level.ended, level.handler, level.where, level.savepoint = action, handler, where, None

	def relay_claim(self) -> AbstractContextManager[bool]:
		return self._relay_claim.hold()

	def _state(self) -> _ThreadState:
		state = getattr(self._local, "state", None)
		if state is None:
			state = self._local.state = _ThreadState()
		return state

	@staticmethod
	def _open_savepoints(state: _ThreadState) -> None:
		assert state.connection is not None
		for level in state.levels:
			if level.savepoint is None:
				level.savepoint = state.connection.begin_nested()

	def _run(self, work: Callable[[Connection], T]) -> T:
		state = self._state()
		if state.connection is not None:
			self._open_savepoints(state)
			state.wrote = True
			return work(state.connection)
		with self.transaction():
			return work(self._state().connection)  # type: ignore[arg-type]

	def _read(self, work: Callable[[Connection], T]) -> T:
		"""Inside a transaction, read its own writes; outside, a reader that never queues for a lock."""
		connection = self._state().connection
		if connection is not None:
			return work(connection)
		with self.engine.connect() as connection:
			connection.execution_options(**{DEFERRED: True})
			with connection.begin():
				return work(connection)

	# --- writes -----------------------------------------------------------------------------------

	def save(self, records: Sequence[MessageRecord]) -> None:
		"""A key twice in one batch keeps its last record, as two consecutive saves would."""
		if not records:
			return
		now = naive_utc(utcnow())
		rows = [message_row(r, now) for r in {r.key: r for r in records}.values()]
		# Sent as one batch: on MariaDB and PostgreSQL one rendered multi-row INSERT (per page), which
		# outside a transaction commits by itself when it is one; SQLite is in-process.
		if self._alone is not None and self._state().connection is None:
			if self._alone.run(lambda dbapi_connection: self._upsert.render(dbapi_connection, rows)):
				return
		self._run(lambda c: self._upsert.execute(c, rows))

	@cached_property
	def _upsert(self) -> DriverInsert:
		return DriverInsert(self._upsert_statement(), self.messages, self.engine, MESSAGE_FIELDS)

	@cached_property
	def _status_update(self) -> StatusUpdate:
		return StatusUpdate(self.messages, self.engine)

	@cached_property
	def _inbox(self) -> InboxLookup:
		return InboxLookup(self.messages, self.engine)

	def _upsert_statement(self) -> Any:
		dialect = self.engine.dialect.name
		if dialect == "sqlite":
			statement = sqlite.insert(self.messages)
			return statement.on_conflict_do_update(
				index_elements=KEY, set_={c: statement.excluded[c] for c in UPDATABLE}
			)
		if dialect == "postgresql":
			pg = postgresql.insert(self.messages)
			return pg.on_conflict_do_update(index_elements=KEY, set_={c: pg.excluded[c] for c in UPDATABLE})
		if dialect in ("mysql", "mariadb"):
			my = mysql.insert(self.messages)
			return my.on_duplicate_key_update({c: my.inserted[c] for c in UPDATABLE})
		raise EdaError(f"the SQL store supports SQLite, MariaDB/MySQL and PostgreSQL, not {dialect}")

	def set_status(
		self,
		direction: Direction,
		message_ids: Sequence[str],
		status: Status,
		queue: str = "",
		last_error: str | None = None,
	) -> None:
		if not message_ids:
			return
		now = naive_utc(utcnow())
		if last_error is None:
			ids = list(message_ids)
			if self._alone is not None and self._state().connection is None and len(ids) <= CHUNK:
				status_update = self._status_update
				self._alone.execute(
					status_update.sql(len(ids)),
					status_update.parameters(status.value, now, direction.value, queue, ids),
				)
				return

			def work(c: Connection) -> None:
				for chunk in chunks(ids, CHUNK):
					self._status_update.execute(c, status.value, now, direction.value, queue, chunk)

			self._run(work)
			return
		values: dict[str, Any] = {"status": status.value, "updated_at": now}
		if last_error is not None:
			values["last_error"] = last_error
		t = self.messages
		statement = (
			update(t)
			.where(
				t.c.direction == direction.value, t.c.queue == queue, t.c.message_id.in_(list(message_ids))
			)
			.values(**values)
		)
		self._run(lambda c: c.execute(statement))

	def resolve(self, direction: Direction, queue: str, message_ids: Sequence[str]) -> None:
		ids = list(dict.fromkeys(message_ids))
		if not ids:
			return
		t, e = self.messages, self.error_table
		now = naive_utc(utcnow())

		def work(c: Connection) -> None:
			for chunk in chunks(ids, CHUNK):
				c.execute(
					update(t)
					.where(t.c.direction == direction.value, t.c.queue == queue, t.c.message_id.in_(chunk))
					.values(resolved=True, updated_at=now)
				)
				c.execute(
					update(e)
					.where(e.c.direction == direction.value, e.c.queue == queue, e.c.message_id.in_(chunk))
					.values(resolved=True)
				)

		self._run(work)

	def add_error(self, error: ErrorRecord) -> None:
		row = error_row(error)
		self._run(lambda c: c.execute(self.error_table.insert().values(row)))

	def delete_finished(self, before: datetime) -> int:
		t, e = self.messages, self.error_table

		def work(c: Connection) -> int:
			doomed = c.execute(
				select(t.c.message_id, t.c.direction, t.c.queue).where(
					t.c.status.in_(FINISHED), t.c.updated_at < naive_utc(before)
				)
			).all()
			groups: dict[tuple[str, str], list[str]] = {}
			for message_id, direction, queue in doomed:
				groups.setdefault((direction, queue), []).append(message_id)
			for (direction, queue), ids in groups.items():
				for chunk in chunks(ids, CHUNK):
					for table in (e, t):
						c.execute(
							delete(table).where(
								table.c.direction == direction,
								table.c.queue == queue,
								table.c.message_id.in_(chunk),
							)
						)
			return len(doomed)

		return self._run(work)

	# --- reads ------------------------------------------------------------------------------------

	def get(self, message_id: str, direction: Direction, queue: str = "") -> MessageRecord | None:
		t = self.messages
		statement = select(t).where(
			t.c.message_id == message_id, t.c.direction == direction.value, t.c.queue == queue
		)
		row = self._read(lambda c: c.execute(statement).mappings().first())
		return message_record(row) if row else None

	def find(self, query: MessageFilter) -> list[MessageRecord]:
		"""A topic pattern is matched in Python, so the SQL narrows by the pattern's literal first and last
		words and reads only (id, routing_key) until ``limit`` rows matched: bodies may be megabytes."""
		t = self.messages
		conditions = []
		if query.direction is not None:
			conditions.append(t.c.direction == query.direction.value)
		if query.statuses:
			conditions.append(t.c.status.in_([s.value for s in query.statuses]))
		if query.queue is not None:
			conditions.append(t.c.queue == query.queue)
		if query.message_ids:
			conditions.append(t.c.message_id.in_(list(query.message_ids)))
		if query.since is not None:
			conditions.append(t.c.created_at >= naive_utc(query.since))
		if query.until is not None:
			conditions.append(t.c.created_at <= naive_utc(query.until))
		pattern = query.routing_key
		order = (t.c.created_at, t.c.id)
		if pattern is None or not ("*" in pattern or "#" in pattern):
			if pattern is not None:
				conditions.append(t.c.routing_key == pattern)
			statement = select(t).where(and_(True, *conditions)).order_by(*order).limit(query.limit)
			return self._read(lambda c: [message_record(r) for r in c.execute(statement).mappings()])
		head, tail = _literal_ends(pattern)
		if head:
			conditions.append(t.c.routing_key.startswith(head, autoescape=True))
		if tail:
			conditions.append(t.c.routing_key.endswith(tail, autoescape=True))
		candidates = select(t.c.id, t.c.routing_key).where(and_(True, *conditions)).order_by(*order)

		def work(c: Connection) -> list[MessageRecord]:
			ids: list[int] = []
			with c.execute(candidates) as result:
				for row_id, routing_key in result:
					if len(ids) >= query.limit:
						break
					if topic_matches(pattern, routing_key):
						ids.append(row_id)
			found: list[MessageRecord] = []
			for chunk in chunks(ids, CHUNK):
				rows = c.execute(select(t).where(t.c.id.in_(chunk)).order_by(*order)).mappings()
				found.extend(message_record(r) for r in rows)
			return found

		return self._read(work)

	def failed_with(
		self, exception_type: str, *, updated_before: datetime, limit: int = 500
	) -> list[MessageRecord]:
		"""One query on the status index; ``last_error`` is compared by its start."""
		t = self.messages
		statement = (
			select(t)
			.where(
				t.c.direction == Direction.OUTGOING.value,
				t.c.status == Status.FAILED.value,
				t.c.resolved.is_(False),
				t.c.updated_at < naive_utc(updated_before),
				t.c.last_error.startswith(f"{exception_type}: ", autoescape=True),
			)
			.order_by(t.c.created_at, t.c.id)
			.limit(limit)
		)
		return self._read(lambda c: [message_record(r) for r in c.execute(statement).mappings()])

	def processed_ids(self, queue: str, message_ids: Iterable[str]) -> set[str]:
		return self._inbox_ids(queue, message_ids, Status.PROCESSED)

	def dead_ids(self, queue: str, message_ids: Iterable[str]) -> set[str]:
		return self._inbox_ids(queue, message_ids, Status.DEAD)

	def _inbox_ids(self, queue: str, message_ids: Iterable[str], status: Status) -> set[str]:
		ids = list(message_ids)
		if not ids:
			return set()
		incoming = Direction.INCOMING.value
		processed = status.value

		def work(c: Connection) -> set[str]:
			found: set[str] = set()
			for chunk in chunks(ids, CHUNK):
				rows = self._inbox.statuses(c, incoming, queue, chunk)
				found.update(message_id for message_id, status in rows if status == processed)
			return found

		return self._read(work)

	def is_transient(self, error: BaseException) -> bool:
		"""MariaDB's deadlock (1213) and lock wait timeout (1205), PostgreSQL's serialization failure and
		deadlock (40001, 40P01), SQLite's "database is locked"; wrapped by SQLAlchemy or not."""
		if isinstance(error, InboxClaimTimeout):
			return True
		original = getattr(error, "orig", None) or error
		args = getattr(original, "args", ())
		if args and args[0] in (1205, 1213):
			return True
		if getattr(original, "pgcode", None) in ("40001", "40P01") or getattr(
			getattr(original, "diag", None), "sqlstate", None
		) in ("40001", "40P01"):
			return True
		return "database is locked" in str(original)

	def claim_inbox(self, queue: str, message_ids: Iterable[str]) -> None:
		"""Lock the ids on the database server until the transaction ends (see ``sql_inbox_claim``);
		SQLite needs none (one writer), nor does work outside a transaction."""
		state = self._state()
		if state.connection is None or not self._inbox_claim.needed:
			return
		state.claims.extend(self._inbox_claim.take(state.connection, queue, list(message_ids)))

	def errors(self, message_id: str, queue: str | None = None) -> list[ErrorRecord]:
		e = self.error_table
		statement = select(e).where(e.c.message_id == message_id)
		if queue is not None:
			statement = statement.where(e.c.queue == queue)
		rows = self._read(lambda c: c.execute(statement.order_by(e.c.occurred_at, e.c.id)).mappings().all())
		return [error_record(row) for row in rows]

	def counts(self) -> dict[tuple[Direction, Status], int]:
		t = self.messages
		statement = select(t.c.direction, t.c.status, func.count()).group_by(t.c.direction, t.c.status)
		rows = self._read(lambda c: c.execute(statement).all())
		return {(Direction(d), Status(s)): n for d, s, n in rows}

	def close(self) -> None:
		for engine in self.engines:
			engine.dispose()


@dataclass
class _Level:
	savepoint: NestedTransaction | None = None
	wrote_before: bool = False  # the transaction held writes when this level began
	ended: str = ""  # "commit" or "rollback": code inside the level ended the whole transaction
	handler: str = ""
	where: str = ""


@dataclass
class _ThreadState:
	connection: Connection | None = None
	levels: list[_Level] = field(default_factory=list)
	wrote: bool = False  # something was written in the open transaction
	lost: bool = False  # a handler's rollback took writes of earlier messages with it
	claims: list[str] = field(default_factory=list)  # MariaDB inbox locks to free when it ends


def _after_end(state: _ThreadState, level: _Level, error: BaseException | None) -> None:
	"""A handler committed or rolled back inside ``level``: its savepoint is gone. Whatever ran since in
	the transaction SQLAlchemy began by itself belongs to the handler: kept if it committed and returned,
	rolled back otherwise. Then a fresh transaction for the rest of the batch, and the error."""
	if isinstance(error, HandlerEndedTransaction):
		raise error  # an inner level already reported it
	connection = state.connection
	assert connection is not None
	committed = level.ended == "commit"
	if connection.in_transaction() and (error is not None or not committed):
		connection.rollback()
	if not connection.in_transaction():
		connection.begin()
	if not committed and level.wrote_before:
		# Stop the batch here: going on would record the messages after it while those before it lost
		# their writes, and a commit further on could make that half durable.
		state.lost = True
		raise TransactionLost(
			f"a handler called connection.rollback() at {level.where} and rolled back what other messages "
			f"of the batch had written; nothing of the batch was recorded, run it again"
		) from error
	kind = HandlerCommitted if committed else HandlerEndedTransaction
	raise kind(f"connection.{level.ended}()", level.where, level.handler) from error


def _is_machinery(filename: str) -> bool:
	return filename == __file__ or f"{os.sep}sqlalchemy{os.sep}" in filename


def _literal_ends(pattern: str) -> tuple[str, str]:
	"""The words before the first and after the last wildcard: every key the pattern matches starts and
	ends with them (a superset, since ``#`` may match no word)."""
	words = pattern.split(".")
	wild = [i for i, word in enumerate(words) if word in ("*", "#")] or [len(words)]
	return ".".join(words[: wild[0]]), ".".join(words[wild[-1] + 1 :])

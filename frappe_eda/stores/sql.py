"""The SQL store for services outside Frappe: SQLite by default, MariaDB/MySQL and PostgreSQL by URL.

Handlers that keep their own data in the same database get exactly-once effects by writing through
the store's open transaction: inside a handler, ``current_context().store.connection`` is the
SQLAlchemy connection whose commit also records the message as processed.

Transactions are per thread: the outermost ``transaction()`` takes a connection and begins, nested ones
are SAVEPOINTs. SQLite gets WAL, a busy timeout and ``BEGIN IMMEDIATE`` (so two processes sharing the
file queue for the write lock instead of failing), and pysqlite's own transaction handling is turned
off so that SAVEPOINT really works.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from typing import Any, TypeVar

from sqlalchemy import (
	Connection,
	Engine,
	NestedTransaction,
	and_,
	create_engine,
	delete,
	event,
	func,
	select,
	update,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite

from frappe_eda.messaging.envelope import utcnow
from frappe_eda.messaging.errors import EdaError
from frappe_eda.messaging.routing import topic_matches
from frappe_eda.messaging.store import (
	Direction,
	ErrorRecord,
	MessageFilter,
	MessageRecord,
	MessageStore,
	Status,
)
from frappe_eda.stores.sql_schema import build_tables

T = TypeVar("T")
FINISHED = (Status.PROCESSED.value, Status.PUBLISHED.value)
UPDATABLE = (
	"status",
	"routing_key",
	"exchange",
	"handler",
	"message_type",
	"body",
	"headers",
	"attempts",
	"last_error",
	"replay_count",
	"replay_of",
	"resolved",
	"reference_doctype",
	"reference_name",
	"created_at",
	"updated_at",
)


class SqlStore(MessageStore):
	def __init__(self, url: str, *, create_tables: bool = True, table_prefix: str = "eda_") -> None:
		self.engine = _engine(url)
		self.metadata, self.messages, self.error_table = build_tables(table_prefix)
		self._local = threading.local()
		if create_tables:
			self.metadata.create_all(self.engine)

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
		return state.connection

	@contextmanager
	def transaction(self) -> Iterator[None]:
		"""Outermost: a connection and BEGIN. Nested: a SAVEPOINT, emitted only once the level writes.

		Most handlers never touch this database; a savepoint per message would cost them two round
		trips each for nothing, so a nested level becomes a real SAVEPOINT lazily, on first use.
		"""
		state = self._state()
		if state.connection is not None:
			level = _Level()
			state.levels.append(level)
			try:
				yield
			except BaseException:
				if level.savepoint is not None:
					level.savepoint.rollback()
				raise
			else:
				if level.savepoint is not None:
					level.savepoint.commit()
			finally:
				state.levels.pop()
			return
		with self.engine.connect() as connection:
			outer = connection.begin()
			state.connection = connection
			try:
				yield
			except BaseException:
				outer.rollback()
				raise
			else:
				outer.commit()
			finally:
				state.connection = None

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
			return work(state.connection)
		with self.transaction():
			return work(self._state().connection)  # type: ignore[arg-type]

	# --- writes -----------------------------------------------------------------------------------

	def save(self, records: Sequence[MessageRecord]) -> None:
		if not records:
			return
		now = _naive(utcnow())
		rows = [_message_row(r, now) for r in records]
		# One statement, many parameter sets: compiled once, sent as batched VALUES by the driver.
		self._run(lambda c: c.execute(self._upsert, rows))

	@cached_property
	def _upsert(self) -> Any:
		dialect = self.engine.dialect.name
		key = ["message_id", "direction", "queue"]
		if dialect == "sqlite":
			statement = sqlite.insert(self.messages)
			return statement.on_conflict_do_update(
				index_elements=key, set_={c: statement.excluded[c] for c in UPDATABLE}
			)
		if dialect == "postgresql":
			pg = postgresql.insert(self.messages)
			return pg.on_conflict_do_update(index_elements=key, set_={c: pg.excluded[c] for c in UPDATABLE})
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
		values: dict[str, Any] = {"status": status.value, "updated_at": _naive(utcnow())}
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

	def add_error(self, error: ErrorRecord) -> None:
		row = {
			"message_id": error.message_id,
			"direction": error.direction.value,
			"queue": error.queue,
			"handler": error.handler,
			"exception_type": error.exception_type,
			"error": error.error,
			"traceback": error.traceback,
			"fingerprint": error.fingerprint,
			"attempt": error.attempt,
			"occurred_at": _naive(error.occurred_at),
			"resolved": error.resolved,
		}
		self._run(lambda c: c.execute(self.error_table.insert().values(row)))

	def delete_finished(self, before: datetime) -> int:
		t, e = self.messages, self.error_table

		def work(c: Connection) -> int:
			doomed = c.execute(
				select(t.c.message_id, t.c.direction, t.c.queue).where(
					t.c.status.in_(FINISHED), t.c.updated_at < _naive(before)
				)
			).all()
			groups: dict[tuple[str, str], list[str]] = {}
			for message_id, direction, queue in doomed:
				groups.setdefault((direction, queue), []).append(message_id)
			for (direction, queue), ids in groups.items():
				for chunk in _chunks(ids, 500):
					c.execute(
						delete(e).where(
							e.c.direction == direction, e.c.queue == queue, e.c.message_id.in_(chunk)
						)
					)
					c.execute(
						delete(t).where(
							t.c.direction == direction, t.c.queue == queue, t.c.message_id.in_(chunk)
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
		row = self._run(lambda c: c.execute(statement).mappings().first())
		return _message_record(row) if row else None

	def find(self, query: MessageFilter) -> list[MessageRecord]:
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
			conditions.append(t.c.created_at >= _naive(query.since))
		if query.until is not None:
			conditions.append(t.c.created_at <= _naive(query.until))
		pattern = query.routing_key
		wildcard = pattern is not None and ("*" in pattern or "#" in pattern)
		if pattern is not None and not wildcard:
			conditions.append(t.c.routing_key == pattern)
		statement = select(t).where(and_(True, *conditions)).order_by(t.c.created_at, t.c.id)
		if not wildcard:
			statement = statement.limit(query.limit)

		def work(c: Connection) -> list[MessageRecord]:
			found: list[MessageRecord] = []
			for row in c.execute(statement).mappings():
				if wildcard and not topic_matches(pattern or "", row["routing_key"]):
					continue
				found.append(_message_record(row))
				if len(found) >= query.limit:
					break
			return found

		return self._run(work)

	def processed_ids(self, queue: str, message_ids: Iterable[str]) -> set[str]:
		ids = list(message_ids)
		if not ids:
			return set()
		t = self.messages

		def work(c: Connection) -> set[str]:
			found: set[str] = set()
			for chunk in _chunks(ids, 500):
				statement = select(t.c.message_id).where(
					t.c.direction == Direction.INCOMING.value,
					t.c.queue == queue,
					t.c.status == Status.PROCESSED.value,
					t.c.message_id.in_(chunk),
				)
				found.update(c.execute(statement).scalars())
			return found

		return self._run(work)

	def errors(self, message_id: str, queue: str | None = None) -> list[ErrorRecord]:
		e = self.error_table
		statement = select(e).where(e.c.message_id == message_id)
		if queue is not None:
			statement = statement.where(e.c.queue == queue)
		rows = self._run(lambda c: c.execute(statement.order_by(e.c.occurred_at, e.c.id)).mappings().all())
		return [_error_record(row) for row in rows]

	def counts(self) -> dict[tuple[Direction, Status], int]:
		t = self.messages
		statement = select(t.c.direction, t.c.status, func.count()).group_by(t.c.direction, t.c.status)
		rows = self._run(lambda c: c.execute(statement).all())
		return {(Direction(d), Status(s)): n for d, s, n in rows}

	def close(self) -> None:
		self.engine.dispose()


@dataclass
class _Level:
	savepoint: NestedTransaction | None = None


@dataclass
class _ThreadState:
	connection: Connection | None = None
	levels: list[_Level] = field(default_factory=list)


def _engine(url: str) -> Engine:
	if url.startswith("sqlite"):
		engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

		@event.listens_for(engine, "connect")
		def _on_connect(dbapi_connection: Any, _record: Any) -> None:
			dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (savepoints need it)
			cursor = dbapi_connection.cursor()
			cursor.execute("PRAGMA journal_mode=WAL")
			cursor.execute("PRAGMA busy_timeout=30000")
			cursor.close()

		@event.listens_for(engine, "begin")
		def _on_begin(connection: Connection) -> None:
			connection.exec_driver_sql("BEGIN IMMEDIATE")

		return engine
	return create_engine(url, pool_pre_ping=True, pool_recycle=3600)


def _naive(value: datetime) -> datetime:
	if value.tzinfo is None:
		return value
	return value.astimezone(timezone.utc).replace(tzinfo=None)


def _aware(value: datetime) -> datetime:
	return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
	for start in range(0, len(items), size):
		yield items[start : start + size]


def _message_row(record: MessageRecord, now: datetime) -> dict[str, Any]:
	return {
		"message_id": record.message_id,
		"direction": record.direction.value,
		"queue": record.queue,
		"status": record.status.value,
		"routing_key": record.routing_key,
		"exchange": record.exchange,
		"handler": record.handler,
		"message_type": record.message_type,
		"body": record.body,
		"headers": json.dumps(record.headers, default=str) if record.headers else "{}",
		"attempts": record.attempts,
		"last_error": record.last_error,
		"replay_count": record.replay_count,
		"replay_of": record.replay_of,
		"resolved": record.resolved,
		"reference_doctype": record.reference_doctype,
		"reference_name": record.reference_name,
		"created_at": _naive(record.created_at),
		"updated_at": now,
	}


def _message_record(row: Any) -> MessageRecord:
	return MessageRecord(
		message_id=row["message_id"],
		direction=Direction(row["direction"]),
		status=Status(row["status"]),
		routing_key=row["routing_key"],
		body=row["body"],
		exchange=row["exchange"],
		queue=row["queue"],
		handler=row["handler"],
		message_type=row["message_type"],
		headers=json.loads(row["headers"] or "{}"),
		attempts=row["attempts"],
		last_error=row["last_error"],
		replay_count=row["replay_count"],
		replay_of=row["replay_of"],
		resolved=bool(row["resolved"]),
		reference_doctype=row["reference_doctype"],
		reference_name=row["reference_name"],
		created_at=_aware(row["created_at"]),
		updated_at=_aware(row["updated_at"]),
	)


def _error_record(row: Any) -> ErrorRecord:
	return ErrorRecord(
		message_id=row["message_id"],
		direction=Direction(row["direction"]),
		exception_type=row["exception_type"],
		error=row["error"],
		fingerprint=row["fingerprint"],
		attempt=row["attempt"],
		queue=row["queue"],
		handler=row["handler"],
		traceback=row["traceback"],
		occurred_at=_aware(row["occurred_at"]),
		resolved=bool(row["resolved"]),
	)

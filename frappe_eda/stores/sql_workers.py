"""Worker heartbeats in the SQL store's database: one row per worker run in ``<prefix>workers``.

``SqlWorkerTable.record`` is a ``Worker(on_heartbeat=...)`` callback: it upserts the beat by worker id
(portable across SQLite, MariaDB/MySQL and PostgreSQL, as the store's own upsert). ``frappe-eda status``
reads the rows back and tells alive, stale (no beat for a while: the process died or hangs) and stopped
workers apart. Each run is a row of its own (the id carries host, pid and a random part), so rows of
past runs stay, stopped or stale, until ``prune`` removes them.

Counters are BIGINT: a busy worker passes 2**31 deliveries within days.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import (
	BigInteger,
	Boolean,
	Column,
	Engine,
	Float,
	Index,
	Integer,
	MetaData,
	String,
	Table,
	Text,
	delete,
	select,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite

from frappe_eda.messaging.errors import EdaError
from frappe_eda.messaging.heartbeat import COUNTERS, WorkerBeat
from frappe_eda.stores.sql_engines import DEFERRED
from frappe_eda.stores.sql_schema import KEY_LENGTH, MYSQL_OPTIONS, Timestamp, aware_utc, naive_utc

# Rows of runs last seen longer ago than this go at the next ``prune``.
DEFAULT_KEEP = timedelta(days=7)


def build_workers_table(metadata: MetaData, prefix: str = "eda_") -> Table:
	return Table(
		f"{prefix}workers",
		metadata,
		Column("worker_id", String(KEY_LENGTH), primary_key=True),
		Column("host", String(KEY_LENGTH), nullable=False, default=""),
		Column("pid", Integer, nullable=False, default=0),
		Column("queues", Text, nullable=False),  # a JSON list: queue names may hold any character
		Column("started_at", Timestamp, nullable=False),
		Column("last_seen", Timestamp, nullable=False),
		*(Column(name, BigInteger, nullable=False, default=0) for name in COUNTERS),
		Column("heartbeat_every", Float, nullable=False),
		Column("stopped", Boolean, nullable=False, default=False),
		Index(f"{prefix}workers_last_seen", "last_seen"),
		**MYSQL_OPTIONS,
	)


class SqlWorkerTable:
	"""The heartbeats of workers, in the database of an engine (usually the SQL store's)."""

	def __init__(self, engine: Engine, *, create_table: bool = True, table_prefix: str = "eda_") -> None:
		self.engine = engine
		self.metadata = MetaData()
		self.table = build_workers_table(self.metadata, table_prefix)
		if create_table:
			self.metadata.create_all(engine, tables=[self.table])

	def __repr__(self) -> str:
		return (
			f"SqlWorkerTable({self.engine.url.render_as_string(hide_password=True)!r}, {self.table.name!r})"
		)

	def record(self, beat: WorkerBeat) -> None:
		"""Insert or update the row of ``beat.worker_id``; usable as ``Worker(on_heartbeat=...)``."""
		with self.engine.begin() as connection:
			connection.execute(self._upsert(), [_row(beat)])

	def workers(self, limit: int | None = None) -> list[WorkerBeat]:
		"""Workers, the most recently seen first."""
		query = select(self.table).order_by(self.table.c.last_seen.desc(), self.table.c.worker_id)
		if limit is not None:
			query = query.limit(limit)
		# A read never waits for a writer: on SQLite it begins DEFERRED, as the store's reads do.
		with self.engine.connect().execution_options(**{DEFERRED: True}) as connection:
			return [_beat(row) for row in connection.execute(query).mappings()]

	def prune(self, keep: timedelta = DEFAULT_KEEP, now: datetime | None = None) -> int:
		"""Forget workers last seen more than ``keep`` ago (stopped or dead); returns how many."""
		before = naive_utc((now or datetime.now(timezone.utc)) - keep)
		with self.engine.begin() as connection:
			return connection.execute(delete(self.table).where(self.table.c.last_seen < before)).rowcount

	def _upsert(self) -> Any:
		# Everything but the key and the start is updated; a beat carries the whole row.
		updated = [c.name for c in self.table.columns if c.name not in ("worker_id", "started_at")]
		dialect = self.engine.dialect.name
		if dialect == "sqlite":
			lite = sqlite.insert(self.table)
			return lite.on_conflict_do_update(
				index_elements=["worker_id"], set_={c: lite.excluded[c] for c in updated}
			)
		if dialect == "postgresql":
			pg = postgresql.insert(self.table)
			return pg.on_conflict_do_update(
				index_elements=["worker_id"], set_={c: pg.excluded[c] for c in updated}
			)
		if dialect in ("mysql", "mariadb"):
			my = mysql.insert(self.table)
			return my.on_duplicate_key_update({c: my.inserted[c] for c in updated})
		raise EdaError(f"worker heartbeats support SQLite, MariaDB/MySQL and PostgreSQL, not {dialect}")


def _row(beat: WorkerBeat) -> dict[str, Any]:
	return {
		"worker_id": beat.worker_id,
		"host": beat.host,
		"pid": beat.pid,
		"queues": json.dumps(list(beat.queues)),
		"started_at": naive_utc(beat.started_at),
		"last_seen": naive_utc(beat.last_seen),
		**{name: getattr(beat, name) for name in COUNTERS},
		"heartbeat_every": beat.heartbeat_every,
		"stopped": beat.stopped,
	}


def _beat(row: Any) -> WorkerBeat:
	return WorkerBeat(
		worker_id=row["worker_id"],
		host=row["host"],
		pid=row["pid"],
		queues=tuple(_queues(row["queues"])),
		started_at=aware_utc(row["started_at"]),
		last_seen=aware_utc(row["last_seen"]),
		**{name: int(row[name]) for name in COUNTERS},
		heartbeat_every=float(row["heartbeat_every"]),
		stopped=bool(row["stopped"]),
	)


def _queues(text: str) -> Iterable[str]:
	try:
		value = json.loads(text or "[]")
	except ValueError:
		return [text]
	return [str(q) for q in value] if isinstance(value, list) else [str(value)]

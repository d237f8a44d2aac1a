"""The bench worker's heartbeats as EDA Worker rows: one row per run, so a dead worker shows as such.

``SiteHeartbeats`` is the ``Worker(on_heartbeat=...)`` callback of ``build_worker``. The worker calls it
on its loop thread (the thread of ``bench eda worker``, or of whoever called ``Worker.run``): at start,
every ``heartbeat_every`` seconds, and once at stop (``stopped``). That thread also relays the outbox on
the site's connection, and the handlers run on the handler thread with a connection of their own; a
heartbeat uses neither. It writes on a database connection of its own and commits it at once, so a
beat never commits (or rolls back, or waits on the locks of) anyone else's work, and nothing pending
on the loop thread's connection is affected. The first beat of a run also forgets rows last seen more
than ``DEFAULT_KEEP`` ago, as ``SqlWorkerTable.prune`` does for the standalone worker.

The rows are written with frappe.qb, not ``doc.insert()``: a beat every 15 seconds must not run the
app's document hooks (event rules) or fill the version log. Times are naive UTC, as every EDA
datetime (``created_at``, ``occurred_at``); the desk converts them. Host, worker id and queues are
stored HTML-escaped, as the DocType store stores producer text (``doctype_columns.escape``). The
beat's ``last_seen`` is the column ``last_heartbeat``: Frappe's list queries drop any field whose name
holds ``_seen`` (its optional ``_seen`` column) from a DocType without that column.

A failed write (the database is away) raises: the worker logs it and goes on; the connection is
dropped and the next beat connects again.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from typing import Any

import frappe
from frappe.utils import get_datetime, now_datetime

from frappe_eda.messaging.heartbeat import COUNTERS, DEFAULT_HEARTBEAT_EVERY, WorkerBeat
from frappe_eda.stores.doctype_columns import escape, unescape

WORKER = "EDA Worker"
# Rows of runs last seen longer ago than this go at the next worker start.
DEFAULT_KEEP = timedelta(days=7)
NAME_CHARS = 140  # a row's name, worker_id and host (Data fields)
# A beat runs on the loop thread, which also services the broker connection: never wait long on a lock.
LOCK_WAIT_SECONDS = 5


class SiteHeartbeats:
	"""Records a worker's beats as EDA Worker rows, on a database connection of its own."""

	def __init__(self, keep: timedelta = DEFAULT_KEEP) -> None:
		self.keep = keep
		self._db: Any = None
		self._pruned = False

	def __call__(self, beat: WorkerBeat) -> None:
		db = self._connection()
		try:
			with _using(db):
				if not self._pruned:
					prune(self.keep)
				record(beat)
			db.commit()
		except Exception:
			self.close()
			raise
		self._pruned = True
		if beat.stopped:
			self.close()  # the run's last beat: a later run connects again

	def close(self) -> None:
		db, self._db = self._db, None
		if db is not None:
			try:
				db.rollback()
				db.close()
			except Exception:
				pass

	def _connection(self) -> Any:
		if self._db is None:
			from frappe.database import get_db

			conf = frappe.local.conf
			db = get_db(
				socket=conf.db_socket,
				host=conf.db_host,
				port=conf.db_port,
				user=conf.get("db_user") or conf.db_name,
				password=conf.db_password,
				cur_db_name=conf.db_name,
			)
			if conf.db_type == "postgres":
				db.sql(f"set lock_timeout = '{LOCK_WAIT_SECONDS}s'")
			else:
				db.sql(f"set session innodb_lock_wait_timeout = {LOCK_WAIT_SECONDS}")
			self._db = db
		return self._db


class _using:
	"""Run frappe.qb queries on ``db`` (``.run()`` goes through ``frappe.db``) on this thread, then put
	the thread's own connection back."""

	def __init__(self, db: Any) -> None:
		self.db = db

	def __enter__(self) -> None:
		self.saved = getattr(frappe.local, "db", None)
		frappe.local.db = self.db

	def __exit__(self, *exc: object) -> None:
		frappe.local.db = self.saved


def record(beat: WorkerBeat) -> None:
	"""Insert or update the row of ``beat.worker_id`` on ``frappe.db`` (the caller commits)."""
	t = frappe.qb.DocType(WORKER)
	name = row_name(beat.worker_id)
	now = now_datetime()  # creation/modified: Frappe's own, in the system time zone
	values: dict[str, Any] = {
		"host": escape(beat.host)[:NAME_CHARS],  # shown only; the full host is in the worker id's digest
		"pid": beat.pid,
		"queues": escape("\n".join(beat.queues)),
		"last_heartbeat": naive_utc(beat.last_seen),
		"heartbeat_every": beat.heartbeat_every,
		"stopped": int(beat.stopped),
		**{counter: int(getattr(beat, counter)) for counter in COUNTERS},
		"modified": now,
		"modified_by": "Administrator",
	}
	if frappe.qb.from_(t).select(t.name).where(t.name == name).run():
		update = frappe.qb.update(t).where(t.name == name)
		for column, value in values.items():
			update = update.set(column, value)
		update.run()
		return
	row = {
		"name": name,
		"worker_id": name,
		"started_at": naive_utc(beat.started_at),
		"creation": now,
		"owner": "Administrator",
		"docstatus": 0,
		"idx": 0,
		**values,
	}
	frappe.qb.into(t).columns(*row).insert(*row.values()).run()


def row_name(worker_id: str) -> str:
	"""The row's name: the worker id as stored (escaped), or, when a long host name makes that longer
	than a name holds (140), its start and a digest of the whole, so every beat still finds its row."""
	name = escape(worker_id)
	if len(name) <= NAME_CHARS:
		return name
	digest = hashlib.sha1(worker_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
	return f"{name[: NAME_CHARS - 17]}~{digest}"


def prune(keep: timedelta = DEFAULT_KEEP, now: datetime | None = None) -> None:
	"""Forget workers last seen more than ``keep`` ago, stopped or dead (the caller commits)."""
	t = frappe.qb.DocType(WORKER)
	before = naive_utc((now or datetime.now(timezone.utc)) - keep)
	frappe.qb.from_(t).delete().where(t.last_heartbeat < before).run()


def worker_beat(row: Any) -> WorkerBeat:
	"""An EDA Worker row (a dict of its fields) as the beat it records, to ask its ``state()``."""
	return WorkerBeat(
		worker_id=unescape(row.get("worker_id") or row.get("name") or ""),
		host=unescape(row.get("host") or ""),
		pid=int(row.get("pid") or 0),
		queues=tuple(q for q in unescape(row.get("queues") or "").split("\n") if q),
		started_at=aware_utc(row.get("started_at")),
		last_seen=aware_utc(row.get("last_heartbeat")),
		**{counter: int(row.get(counter) or 0) for counter in COUNTERS},
		heartbeat_every=float(row.get("heartbeat_every") or 0) or DEFAULT_HEARTBEAT_EVERY,
		stopped=bool(row.get("stopped")),
	)


def naive_utc(value: datetime) -> datetime:
	if value.tzinfo is not None:
		value = value.astimezone(timezone.utc).replace(tzinfo=None)
	return value


def aware_utc(value: Any) -> datetime:
	if not value:
		return datetime.fromtimestamp(0, timezone.utc)
	if isinstance(value, str):
		value = get_datetime(value)
	return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)

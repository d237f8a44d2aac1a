"""The Frappe store: messages as EDA Message records, errors as EDA Error, in the site's database.

Transactions follow who owns the database transaction. In the worker and the relay the store owns it
(``commit=True``): the outermost ``transaction()`` commits, or rolls back on error. In a web request
the request owns it (``commit=False``): the outbox record is written inside the request's transaction
and commits or rolls back with the document. Nested levels are savepoints in both cases.

Times in the EDA fields are UTC (the core's clock), whatever the site's time zone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import frappe
from frappe.query_builder.functions import Count

from frappe_eda.messaging.envelope import utcnow
from frappe_eda.messaging.routing import topic_matches
from frappe_eda.messaging.store import (
	Direction,
	ErrorRecord,
	MessageFilter,
	MessageRecord,
	MessageStore,
	Status,
)

MESSAGE = "EDA Message"
ERROR = "EDA Error"
DIRECTION_LABELS = {Direction.OUTGOING: "Outgoing", Direction.INCOMING: "Incoming"}
STATUS_LABELS = {status: status.value.title() for status in Status}
DIRECTIONS = {label: direction for direction, label in DIRECTION_LABELS.items()}
STATUSES = {label: status for status, label in STATUS_LABELS.items()}
FINISHED = ("Processed", "Published")
MESSAGE_COLUMNS = (
	"name",
	"message_id",
	"direction",
	"status",
	"routing_key",
	"payload",
	"exchange",
	"queue",
	"handler",
	"message_type",
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


class DocTypeStore(MessageStore):
	def __init__(self, commit: bool = True) -> None:
		self.commit = commit

	@contextmanager
	def transaction(self) -> Iterator[None]:
		depth = getattr(frappe.local, "eda_transaction_depth", 0)
		frappe.local.eda_transaction_depth = depth + 1
		owns_commit = depth == 0 and self.commit
		savepoint = None if owns_commit else f"eda_sp_{depth}_{frappe.generate_hash(length=6)}"
		try:
			if savepoint:
				frappe.db.savepoint(savepoint)
			try:
				yield
			except BaseException:
				if savepoint:
					frappe.db.rollback(save_point=savepoint)
				else:
					frappe.db.rollback()
				raise
			if savepoint:
				frappe.db.release_savepoint(savepoint)
			else:
				frappe.db.commit()
		finally:
			frappe.local.eda_transaction_depth = depth

	def _write(self) -> Any:
		"""Writes outside a transaction() get one of their own."""
		return self.transaction()

	# --- writes -----------------------------------------------------------------------------------

	def save(self, records: Sequence[MessageRecord]) -> None:
		if not records:
			return
		with self._write():
			existing = self._names([r.key for r in records])
			now = _naive(utcnow())
			for record in records:
				values = _message_values(record, now)
				name = existing.get(record.key)
				if name:
					frappe.db.set_value(MESSAGE, name, values, update_modified=True)
				else:
					doc = frappe.get_doc({"doctype": MESSAGE, **values})
					doc.db_insert()
					existing[record.key] = doc.name

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
		m = frappe.qb.DocType(MESSAGE)
		query = (
			frappe.qb.update(m)
			.set(m.status, STATUS_LABELS[status])
			.set(m.updated_at, _naive(utcnow()))
			.set(m.modified, frappe.utils.now_datetime())
			.where(
				(m.direction == DIRECTION_LABELS[direction])
				& (m.queue == queue)
				& m.message_id.isin(list(message_ids))
			)
		)
		if last_error is not None:
			query = query.set(m.last_error, last_error)
		with self._write():
			query.run()

	def add_error(self, error: ErrorRecord) -> None:
		with self._write():
			message = self._names([(error.message_id, error.direction, error.queue)])
			doc = frappe.get_doc(
				{
					"doctype": ERROR,
					"eda_message": message.get((error.message_id, error.direction, error.queue)),
					"message_id": error.message_id,
					"direction": DIRECTION_LABELS[error.direction],
					"queue": error.queue,
					"handler": error.handler,
					"exception_type": error.exception_type,
					"fingerprint": error.fingerprint,
					"attempt": error.attempt,
					"occurred_at": _naive(error.occurred_at),
					"resolved": int(error.resolved),
					"error": error.error,
					"traceback": error.traceback,
				}
			)
			doc.db_insert()

	def delete_finished(self, before: datetime) -> int:
		m, e = frappe.qb.DocType(MESSAGE), frappe.qb.DocType(ERROR)
		with self._write():
			doomed = (
				frappe.qb.from_(m)
				.select(m.name, m.message_id, m.direction, m.queue)
				.where(m.status.isin(FINISHED) & (m.updated_at < _naive(before)))
				.run(as_dict=True)
			)
			for row in doomed:
				frappe.qb.from_(e).delete().where(
					(e.message_id == row.message_id) & (e.direction == row.direction) & (e.queue == row.queue)
				).run()
			names = [row.name for row in doomed]
			for start in range(0, len(names), 500):
				frappe.qb.from_(m).delete().where(m.name.isin(names[start : start + 500])).run()
		return len(doomed)

	# --- reads ------------------------------------------------------------------------------------

	def get(self, message_id: str, direction: Direction, queue: str = "") -> MessageRecord | None:
		m = frappe.qb.DocType(MESSAGE)
		rows = (
			frappe.qb.from_(m)
			.select(*MESSAGE_COLUMNS)
			.where(
				(m.message_id == message_id)
				& (m.direction == DIRECTION_LABELS[direction])
				& (m.queue == queue)
			)
			.run(as_dict=True)
		)
		return _message_record(rows[0]) if rows else None

	def find(self, query: MessageFilter) -> list[MessageRecord]:
		m = frappe.qb.DocType(MESSAGE)
		q = frappe.qb.from_(m).select(*MESSAGE_COLUMNS).orderby(m.created_at).orderby(m.creation)
		if query.direction is not None:
			q = q.where(m.direction == DIRECTION_LABELS[query.direction])
		if query.statuses:
			q = q.where(m.status.isin([STATUS_LABELS[s] for s in query.statuses]))
		if query.queue is not None:
			q = q.where(m.queue == query.queue)
		if query.message_ids:
			q = q.where(m.message_id.isin(list(query.message_ids)))
		if query.since is not None:
			q = q.where(m.created_at >= _naive(query.since))
		if query.until is not None:
			q = q.where(m.created_at <= _naive(query.until))
		pattern = query.routing_key
		wildcard = pattern is not None and ("*" in pattern or "#" in pattern)
		if pattern is not None and not wildcard:
			q = q.where(m.routing_key == pattern)
		if not wildcard:
			q = q.limit(query.limit)
		found = []
		for row in q.run(as_dict=True):
			if wildcard and not topic_matches(pattern or "", row.routing_key or ""):
				continue
			found.append(_message_record(row))
			if len(found) >= query.limit:
				break
		return found

	def processed_ids(self, queue: str, message_ids: Iterable[str]) -> set[str]:
		ids = list(message_ids)
		if not ids:
			return set()
		m = frappe.qb.DocType(MESSAGE)
		found: set[str] = set()
		for start in range(0, len(ids), 500):
			rows = (
				frappe.qb.from_(m)
				.select(m.message_id)
				.where(
					(m.direction == "Incoming")
					& (m.queue == queue)
					& (m.status == "Processed")
					& m.message_id.isin(ids[start : start + 500])
				)
				.run(pluck=True)
			)
			found.update(rows)
		return found

	def errors(self, message_id: str, queue: str | None = None) -> list[ErrorRecord]:
		e = frappe.qb.DocType(ERROR)
		q = (
			frappe.qb.from_(e)
			.select("*")
			.where(e.message_id == message_id)
			.orderby(e.occurred_at)
			.orderby(e.creation)
		)
		if queue is not None:
			q = q.where(e.queue == queue)
		return [_error_record(row) for row in q.run(as_dict=True)]

	def counts(self) -> dict[tuple[Direction, Status], int]:
		m = frappe.qb.DocType(MESSAGE)
		rows = (
			frappe.qb.from_(m)
			.select(m.direction, m.status, Count("*").as_("n"))
			.groupby(m.direction, m.status)
			.run(as_dict=True)
		)
		return {(DIRECTIONS[r.direction], STATUSES[r.status]): r.n for r in rows}

	def _names(self, keys: list[tuple[str, Direction, str]]) -> dict[tuple[str, Direction, str], str]:
		m = frappe.qb.DocType(MESSAGE)
		ids = list({k[0] for k in keys})
		rows = (
			frappe.qb.from_(m)
			.select(m.name, m.message_id, m.direction, m.queue)
			.where(m.message_id.isin(ids))
			.run(as_dict=True)
		)
		return {(r.message_id, DIRECTIONS[r.direction], r.queue or ""): r.name for r in rows}


def _message_values(record: MessageRecord, now: datetime) -> dict[str, Any]:
	return {
		"message_id": record.message_id,
		"direction": DIRECTION_LABELS[record.direction],
		"status": STATUS_LABELS[record.status],
		"routing_key": record.routing_key,
		"payload": record.body,
		"exchange": record.exchange,
		"queue": record.queue,
		"handler": record.handler,
		"message_type": record.message_type,
		"headers": json.dumps(record.headers, default=str, indent=1, sort_keys=True),
		"attempts": record.attempts,
		"last_error": record.last_error,
		"replay_count": record.replay_count,
		"replay_of": record.replay_of,
		"resolved": int(record.resolved),
		"reference_doctype": record.reference_doctype or None,
		"reference_name": record.reference_name or None,
		"created_at": _naive(record.created_at),
		"updated_at": now,
	}


def _message_record(row: Any) -> MessageRecord:
	return MessageRecord(
		message_id=row.message_id,
		direction=DIRECTIONS[row.direction],
		status=STATUSES[row.status],
		routing_key=row.routing_key or "",
		body=row.payload or "",
		exchange=row.exchange or "",
		queue=row.queue or "",
		handler=row.handler or "",
		message_type=row.message_type or "",
		headers=json.loads(row.headers or "{}"),
		attempts=row.attempts or 0,
		last_error=row.last_error or "",
		replay_count=row.replay_count or 0,
		replay_of=row.replay_of or "",
		resolved=bool(row.resolved),
		reference_doctype=row.reference_doctype or "",
		reference_name=row.reference_name or "",
		created_at=_aware(row.created_at),
		updated_at=_aware(row.updated_at),
	)


def _error_record(row: Any) -> ErrorRecord:
	return ErrorRecord(
		message_id=row.message_id,
		direction=DIRECTIONS[row.direction],
		exception_type=row.exception_type or "",
		error=row.error or "",
		fingerprint=row.fingerprint or "",
		attempt=row.attempt or 0,
		queue=row.queue or "",
		handler=row.handler or "",
		traceback=row.traceback or "",
		occurred_at=_aware(row.occurred_at),
		resolved=bool(row.resolved),
	)


def _naive(value: datetime) -> datetime:
	return value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo else value


def _aware(value: Any) -> datetime:
	if isinstance(value, str):
		value = frappe.utils.get_datetime(value)
	if value is None:
		return utcnow()
	return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value

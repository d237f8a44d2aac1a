"""The Frappe store: messages as EDA Message records, errors as EDA Error, in the site's database.

Transactions follow who owns the database transaction. In the worker and the relay the store owns it
(``commit=True``): the outermost ``transaction()`` commits, or rolls back on error. In a web request
the request owns it (``commit=False``): the outbox record is written inside the request's transaction
and commits or rolls back with the document. Nested levels are savepoints in both cases.

Rows are written with ``frappe.qb`` (new ones by an INSERT built once), not ``doc.insert()``: the store is system code
(no permissions, no hooks, no version log), and the worker writes a record for every message.

Times in the EDA fields (``created_at``, ``updated_at``, ``occurred_at``) are naive UTC with
microseconds, whatever the site's time zone; ``creation``/``modified`` stay in the site's time zone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from typing import Any

import frappe
from frappe.model.naming import make_autoname
from frappe.query_builder import Order
from frappe.query_builder.functions import Count, IfNull
from pypika.terms import Criterion, Parameter, Tuple

from frappe_eda.messaging.envelope import utcnow
from frappe_eda.messaging.routing import topic_matches
from frappe_eda.messaging.storable import check_error, check_message
from frappe_eda.messaging.store import (
	Direction,
	ErrorRecord,
	MessageFilter,
	MessageRecord,
	MessageStore,
	Status,
	StoreLimits,
)
from frappe_eda.messaging.trust.senders import SENDER
from frappe_eda.stores import doctype_inbox_claim as inbox_claim
from frappe_eda.stores.doctype_claim import site_relay_claim
from frappe_eda.stores.doctype_columns import (
	aware_time_range,
	display_value,
	from_column,
	headers_value,
	key_chars,
	naive_utc,
	text_chars,
	to_column,
)
from frappe_eda.stores.doctype_columns import stored_length as _stored_length
from frappe_eda.stores.doctype_transaction import checkpoint, in_site_transaction, site_transaction

log = logging.getLogger(__name__)


MESSAGE = "EDA Message"
INSERT_CHUNK = 100
INT_MAX = 2**31 - 1  # Int fields (attempts, replay_count) are INT(11)
ERROR = "EDA Error"
DIRECTION_LABELS = {Direction.OUTGOING: "Outgoing", Direction.INCOMING: "Incoming"}
STATUS_LABELS = {status: status.value.title() for status in Status}
DIRECTIONS = {label: direction for direction, label in DIRECTION_LABELS.items()}
STATUSES = {label: status for status, label in STATUS_LABELS.items()}
FINISHED = (STATUS_LABELS[Status.PROCESSED], STATUS_LABELS[Status.PUBLISHED])
VALUE_COLUMNS = (
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
	"correlation_id",
	"causation_id",
	"created_at",
	"updated_at",
	"verified_sender",
)
# The envelope's correlation and causation ids, kept in indexed columns so a form finds what caused a
# message and what it caused without reading bodies; longer than this (escaped), not kept.
CHAIN_ID_CHARS = 255
STANDARD_COLUMNS = ("name", "owner", "creation", "modified", "modified_by", "docstatus", "idx")
# Topic patterns are matched in Python over keys read in pages of this size (names and keys only).
PATTERN_PAGE = 5000
# Retention deletes (and, with commit=True, commits) this many messages at a time.
DELETE_CHUNK = 1000


class DocTypeStore(MessageStore):
	def __init__(self, commit: bool = True) -> None:
		self.commit = commit

	# --- transactions -----------------------------------------------------------------------------

	def transaction(self) -> AbstractContextManager[None]:
		"""Savepoint levels on the site's transaction; the outermost commits when the store owns it
		(``commit=True``). See ``doctype_transaction``."""
		return self._transaction()

	@contextlib.contextmanager
	def _transaction(self) -> Iterator[None]:
		outermost = not in_site_transaction()
		try:
			with site_transaction(self.commit):
				yield
		finally:
			if outermost:
				inbox_claim.release()  # the inbox claims of a worker's batch end with its transaction

	def is_transient(self, error: BaseException) -> bool:
		"""A deadlock or lock wait timeout (Frappe's own classes, or the driver's error they wrap)."""
		if isinstance(error, frappe.QueryDeadlockError | frappe.QueryTimeoutError):
			return True
		try:
			return bool(frappe.db.is_deadlocked(error) or frappe.db.is_timedout(error))
		except Exception:
			return False

	def claim_inbox(self, queue: str, message_ids: Iterable[str]) -> None:
		"""See ``doctype_inbox_claim``: a database lock per id, held until the transaction ends."""
		inbox_claim.claim(to_column("queue", queue), message_ids)

	def checkpoint(self) -> None:
		checkpoint()

	def _write(self) -> Any:
		"""Writes outside a transaction() get one of their own."""
		return self.transaction()

	# --- what it can hold -------------------------------------------------------------------------

	@property
	def limits(self) -> StoreLimits:
		"""The EDA Message / EDA Error columns as this site's database holds them (read from the
		DocTypes' field types and lengths), for the core's check before a handler runs. Read once per
		site and process: the core asks for every delivery, and the columns change only on migrate."""
		return _site_limits(frappe.local.site)

	def stored_length(self, field: str, value: str) -> int:
		"""The length of ``value`` as written: producer text is stored HTML-escaped (see doctype_columns)."""
		return _stored_length(field, value)

	def check_storable(self, record: MessageRecord | ErrorRecord) -> None:
		"""Raise ``UnstorableMessage`` naming the first identifier field or time the columns cannot
		hold. Display text is never a reason: the store truncates it to fit."""
		_check_storable(record)

	# --- writes -----------------------------------------------------------------------------------

	def save(self, records: Sequence[MessageRecord]) -> None:
		"""One SELECT for the keys, one INSERT for the new records, one UPDATE per existing record."""
		if not records:
			return
		latest = {record.key: record for record in _with_written_reference(records)}
		now, stamp, user = _naive(utcnow()), frappe.utils.now_datetime(), _user()
		with self._write():
			existing = self._names(list(latest))
			new_rows = []
			for key, record in latest.items():
				values = _message_values(record, now)
				if name := existing.get(key):
					m = frappe.qb.DocType(MESSAGE)
					query = frappe.qb.update(m).set(m.modified, stamp).set(m.modified_by, user)
					for column, value in values.items():
						query = query.set(m[column], value)
					query.where(m.name == name).run()
				else:
					new_rows.append(_new_row(values, stamp, user))
			_insert_rows(new_rows)

	def insert_new(self, records: Sequence[MessageRecord]) -> None:
		"""The outbox's fast path inside a document save: records with fresh ids, which cannot exist yet,
		in one INSERT (atomic on its own: no savepoint, no lookup). A clash raises, never overwrites."""
		now, stamp, user = _naive(utcnow()), frappe.utils.now_datetime(), _user()
		_insert_rows([_new_row(_message_values(record, now), stamp, user) for record in records])

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
				& (m.queue == to_column("queue", queue))
				& m.message_id.isin(_column_values("message_id", message_ids))
			)
		)
		if last_error is not None:
			query = query.set(m.last_error, display_value("last_error", last_error))
		with self._write():
			query.run()

	def resolve(self, direction: Direction, queue: str, message_ids: Sequence[str]) -> None:
		"""As the desk's Mark Resolved: the EDA Messages and their own EDA Errors (same id, direction and
		queue; an error's empty queue may be NULL)."""
		ids = _column_values("message_id", dict.fromkeys(message_ids))
		if not ids:
			return
		m, e = frappe.qb.DocType(MESSAGE), frappe.qb.DocType(ERROR)
		label, column = DIRECTION_LABELS[direction], to_column("queue", queue)
		with self._write():
			for start in range(0, len(ids), DELETE_CHUNK):
				chunk = ids[start : start + DELETE_CHUNK]
				(
					frappe.qb.update(m)
					.set(m.resolved, 1)
					.set(m.updated_at, _naive(utcnow()))
					.set(m.modified, frappe.utils.now_datetime())
					.where((m.direction == label) & (m.queue == column) & m.message_id.isin(chunk))
					.run()
				)
				(
					frappe.qb.update(e)
					.set(e.resolved, 1)
					.where(
						(e.direction == label) & (IfNull(e.queue, "") == column) & e.message_id.isin(chunk)
					)
					.run()
				)

	def add_error(self, error: ErrorRecord) -> None:
		"""Identifiers as ``check_storable`` allows them; the error text and traceback cut to fit."""
		_check_storable(error)
		key = (error.message_id, error.direction, error.queue)
		with self._write():
			message = self._names([key]).get(key)
			doc = frappe.get_doc(
				{
					"doctype": ERROR,
					"eda_message": message,
					"message_id": to_column("message_id", error.message_id),
					"direction": DIRECTION_LABELS[error.direction],
					"queue": to_column("queue", error.queue),
					"handler": to_column("handler", error.handler),
					"exception_type": to_column("exception_type", error.exception_type),
					"fingerprint": to_column("fingerprint", error.fingerprint),
					"attempt": error.attempt,
					"occurred_at": _naive(error.occurred_at),
					"resolved": int(error.resolved),
					"error": display_value("error", error.error),
					"traceback": display_value("traceback", error.traceback),
				}
			)
			doc.db_insert()
			if message:  # the message's list shows, filters and groups by its latest failure
				m = frappe.qb.DocType(MESSAGE)
				(
					frappe.qb.update(m)
					.set(m.exception_type, doc.exception_type)
					.set(m.fingerprint, doc.fingerprint)
					.where(m.name == message)
					.run()
				)

	def delete_finished(self, before: datetime) -> int:
		"""In chunks, each its own transaction: a first run on a big table neither locks it for long nor
		builds one huge undo log."""
		m, e = frappe.qb.DocType(MESSAGE), frappe.qb.DocType(ERROR)
		deleted = 0
		while True:
			with self._write():
				doomed = (
					frappe.qb.from_(m)
					.select(m.name, m.message_id, m.direction, m.queue)
					.where(m.status.isin(FINISHED) & (m.updated_at < _naive(before)))
					.limit(DELETE_CHUNK)
					.run(as_dict=True)
				)
				if doomed:
					keys = [Tuple(r.message_id, r.direction, r.queue or "") for r in doomed]
					frappe.qb.from_(e).delete().where(
						Tuple(e.message_id, e.direction, e.queue).isin(keys)
					).run()
					frappe.qb.from_(m).delete().where(m.name.isin([r.name for r in doomed])).run()
			deleted += len(doomed)
			if len(doomed) < DELETE_CHUNK:
				return deleted

	# --- reads ------------------------------------------------------------------------------------

	def get(self, message_id: str, direction: Direction, queue: str = "") -> MessageRecord | None:
		m = frappe.qb.DocType(MESSAGE)
		rows = (
			frappe.qb.from_(m)
			.select(*VALUE_COLUMNS)
			.where(
				(m.message_id == to_column("message_id", message_id))
				& (m.direction == DIRECTION_LABELS[direction])
				& (m.queue == to_column("queue", queue))
			)
			.run(as_dict=True)
		)
		return _message_record(rows[0]) if rows else None

	def find(self, query: MessageFilter) -> list[MessageRecord]:
		"""An exact routing key is a WHERE; a topic pattern is narrowed by LIKE on its literal ends, then
		matched word by word, reading names and keys only until ``limit`` records match."""
		m = frappe.qb.DocType(MESSAGE)
		criteria = _criteria(m, query)
		pattern = query.routing_key
		if pattern is not None and not _is_pattern(pattern):
			criteria.append(m.routing_key == to_column("routing_key", pattern))
			pattern = None
		elif pattern is not None:
			criteria.extend(_like_prefilter(m, pattern))
		if query.limit <= 0:
			return []
		where = Criterion.all(criteria)
		if pattern is None:
			rows = _ordered(frappe.qb.from_(m).select(*VALUE_COLUMNS).where(where), m)
			return [_message_record(row) for row in rows.limit(query.limit).run(as_dict=True)]
		names: list[str] = []
		offset = 0
		while len(names) < query.limit:
			page = (
				_ordered(frappe.qb.from_(m).select(m.name, m.routing_key).where(where), m)
				.limit(PATTERN_PAGE)
				.offset(offset)
				.run()
			)
			names.extend(
				name for name, key in page if topic_matches(pattern, from_column("routing_key", key))
			)
			if len(page) < PATTERN_PAGE:
				break
			offset += PATTERN_PAGE
		names = names[: query.limit]
		if not names:
			return []
		rows = _ordered(frappe.qb.from_(m).select(*VALUE_COLUMNS).where(m.name.isin(names)), m)
		return [_message_record(row) for row in rows.run(as_dict=True)]

	def failed_with(
		self, exception_type: str, *, updated_before: datetime, limit: int = 500
	) -> list[MessageRecord]:
		"""One query on the status index (``OutboxRelay`` asks on its turns). ``last_error`` is narrowed
		by LIKE on its start (a class name has nothing the store escapes; LIKE's ``_`` matches itself and
		more), then compared exactly."""
		m = frappe.qb.DocType(MESSAGE)
		prefix = f"{exception_type}: "
		rows = _ordered(
			frappe.qb.from_(m)
			.select(*VALUE_COLUMNS)
			.where(
				(m.direction == DIRECTION_LABELS[Direction.OUTGOING])
				& (m.status == STATUS_LABELS[Status.FAILED])
				& (m.resolved == 0)
				& (m.updated_at < _naive(updated_before))
				& m.last_error.like(f"{to_column('last_error', prefix)}%")
			),
			m,
		)
		records = [_message_record(row) for row in rows.limit(limit).run(as_dict=True)]
		return [r for r in records if r.last_error.startswith(prefix)]

	def processed_ids(self, queue: str, message_ids: Iterable[str]) -> set[str]:
		return self._inbox_ids(queue, message_ids, Status.PROCESSED)

	def dead_ids(self, queue: str, message_ids: Iterable[str]) -> set[str]:
		return self._inbox_ids(queue, message_ids, Status.DEAD)

	def _inbox_ids(self, queue: str, message_ids: Iterable[str], status: Status) -> set[str]:
		ids = list(dict.fromkeys(message_ids))
		if not ids:
			return set()
		m = frappe.qb.DocType(MESSAGE)
		rows = (
			frappe.qb.from_(m)
			.select(m.message_id)
			.where(
				(m.direction == DIRECTION_LABELS[Direction.INCOMING])
				& (m.queue == to_column("queue", queue))
				& (m.status == STATUS_LABELS[status])
				& m.message_id.isin(_column_values("message_id", ids))
			)
		)
		if inbox_claim.claimed():
			# A locking read: the latest commit, which another worker's may be (a plain read of MariaDB's
			# repeatable-read snapshot could predate it).
			rows = rows.for_update()
		rows = rows.run(pluck=True)
		return {from_column("message_id", row) for row in rows}

	def errors(self, message_id: str, queue: str | None = None) -> list[ErrorRecord]:
		e = frappe.qb.DocType(ERROR)
		q = (
			frappe.qb.from_(e)
			.select("*")
			.where(e.message_id == to_column("message_id", message_id))
			.orderby(e.occurred_at)
			.orderby(e.creation)
			.orderby(e.name)
		)
		if queue is not None:
			q = q.where(e.queue == to_column("queue", queue))
		return [_error_record(row) for row in q.run(as_dict=True)]

	# --- relaying the outbox ----------------------------------------------------------------------

	relay_claim_exclusive = True

	def relay_claim(self) -> AbstractContextManager[bool]:
		"""One relay per site at a time (a database session lock); see ``doctype_claim``."""
		return site_relay_claim()

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
		rows = (
			frappe.qb.from_(m)
			.select(m.name, m.message_id, m.direction, m.queue)
			.where(m.message_id.isin(_column_values("message_id", {key[0] for key in keys})))
			.run(as_dict=True)
		)
		return {
			(
				from_column("message_id", r.message_id),
				DIRECTIONS[r.direction],
				from_column("queue", r.queue),
			): r.name
			for r in rows
		}


def _criteria(m: Any, query: MessageFilter) -> list[Any]:
	criteria = []
	if query.direction is not None:
		criteria.append(m.direction == DIRECTION_LABELS[query.direction])
	if query.statuses:
		criteria.append(m.status.isin([STATUS_LABELS[s] for s in query.statuses]))
	if query.queue is not None:
		criteria.append(m.queue == to_column("queue", query.queue))
	if query.message_ids:
		criteria.append(m.message_id.isin(_column_values("message_id", query.message_ids)))
	if query.since is not None:
		criteria.append(m.created_at >= _naive(query.since))
	if query.until is not None:
		criteria.append(m.created_at <= _naive(query.until))
	return criteria


def _ordered(query: Any, m: Any) -> Any:
	"""Oldest first by the message's own clock; ties by when the row was written, then by name, so
	the order is the same on every read."""
	return query.orderby(m.created_at, order=Order.asc).orderby(m.creation).orderby(m.name)


def _is_pattern(routing_key: str) -> bool:
	return "*" in routing_key or "#" in routing_key


def _like_prefilter(m: Any, pattern: str) -> list[Any]:
	"""LIKE on the literal words before the first and after the last wildcard: a superset of the
	matches (``#`` may match no word at all), so Python's exact check decides."""
	words = pattern.split(".")
	wild = [i for i, word in enumerate(words) if word in ("*", "#")]
	if not wild:
		return [m.routing_key == to_column("routing_key", pattern)]
	head, tail = ".".join(words[: wild[0]]), ".".join(words[wild[-1] + 1 :])
	criteria = []
	if head:
		criteria.append(m.routing_key.like(_escape_like(head) + "%"))
	if tail:
		criteria.append(m.routing_key.like("%" + _escape_like(tail)))
	return criteria


def _escape_like(text: str) -> str:
	"""A literal part of a routing key as LIKE text over the stored (HTML-escaped) keys."""
	text = to_column("routing_key", text)
	return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@functools.lru_cache(maxsize=8)
def _site_limits(site: str) -> StoreLimits:
	low, high = aware_time_range()
	return StoreLimits(
		key_chars=key_chars(), text_chars=text_chars(), min_time=low, max_time=high, max_int=INT_MAX
	)


def _check_storable(record: MessageRecord | ErrorRecord) -> None:
	"""The core's check against this store's limits, run again on every write: a caller that skipped
	it (the outbox, a replay) gets ``UnstorableMessage`` instead of the database's error."""
	if isinstance(record, ErrorRecord):
		check_error(record, DocTypeStore())
	else:
		check_message(record, DocTypeStore())


def _column_values(field: str, values: Iterable[str]) -> list[str]:
	"""Lookup arguments as the column holds them."""
	return [to_column(field, value) for value in values]


def _insert_rows(rows: Sequence[tuple[Any, ...]]) -> None:
	"""New EDA Message rows, up to ``INSERT_CHUNK`` per statement."""
	for start in range(0, len(rows), INSERT_CHUNK):
		chunk = rows[start : start + INSERT_CHUNK]
		statement = _insert_statement(frappe.conf.db_type or "mariadb", len(chunk))
		frappe.db.sql(statement, [value for row in chunk for value in row])


@functools.lru_cache(maxsize=16)
def _insert_statement(db_type: str, rows: int) -> str:
	"""Built with frappe.qb once per database type and row count, then reused with fresh parameters:
	rendering the 26-column INSERT on every call took about 1.3 ms of each document save."""
	columns = [*STANDARD_COLUMNS, *VALUE_COLUMNS]
	query = frappe.qb.into(frappe.qb.DocType(MESSAGE)).columns(*columns)
	for _ in range(rows):
		query = query.insert(*[Parameter("%s")] * len(columns))
	return query.get_sql()


def _user() -> str:
	return getattr(frappe.session, "user", None) or "Administrator"


def _new_row(values: dict[str, Any], stamp: datetime, user: str) -> tuple[Any, ...]:
	standard = (make_autoname("hash", MESSAGE), user, stamp, stamp, user, 0, 0)
	return (*standard, *(values[column] for column in VALUE_COLUMNS))


def chain_ids(body: str) -> dict[str, str | None]:
	"""``correlation_id`` and ``causation_id`` of an envelope as the columns hold them (escaped), or None
	where the body is not an envelope, has none, or one that is not a short string."""
	try:
		envelope = json.loads(body) if body else None
	except (ValueError, RecursionError):
		envelope = None
	ids: dict[str, str | None] = {"correlation_id": None, "causation_id": None}
	if isinstance(envelope, dict):
		for key in ids:
			value = envelope.get(key)
			if isinstance(value, str) and value and value.isprintable():
				stored = to_column("message_id", value)  # as message ids are stored, to match them
				ids[key] = stored if len(stored) <= CHAIN_ID_CHARS and _encodable(stored) else None
	return ids


def _encodable(text: str) -> bool:
	try:
		text.encode("utf-8")
	except UnicodeEncodeError:  # a lone surrogate: the database would refuse the whole row
		return False
	return True


def _message_values(record: MessageRecord, now: datetime) -> dict[str, Any]:
	"""The row of a record: producer text HTML-escaped (shown by the desk as text, not markup), display
	text cut to fit; an identifier the columns cannot hold raises ``UnstorableMessage``."""
	_check_storable(record)
	return {
		"message_id": to_column("message_id", record.message_id),
		"direction": DIRECTION_LABELS[record.direction],
		"status": STATUS_LABELS[record.status],
		"routing_key": to_column("routing_key", record.routing_key),
		"payload": record.body,
		"exchange": to_column("exchange", record.exchange),
		"queue": to_column("queue", record.queue),
		"handler": to_column("handler", record.handler),
		"message_type": to_column("message_type", record.message_type),
		"headers": headers_value(json.dumps(record.headers, default=str, indent=1, sort_keys=True)),
		"attempts": record.attempts,
		"last_error": display_value("last_error", record.last_error),
		"replay_count": record.replay_count,
		"replay_of": to_column("replay_of", record.replay_of),
		"resolved": int(record.resolved),
		"reference_doctype": record.reference_doctype or None,
		"reference_name": record.reference_name or None,
		# Shown in the list and filterable: the broker-proven sender the worker recorded in the headers.
		"verified_sender": display_value("verified_sender", _sender(record.headers)),
		**chain_ids(record.body),
		"created_at": _naive(record.created_at),
		"updated_at": now,
	}


def _with_written_reference(records: Sequence[MessageRecord]) -> Sequence[MessageRecord]:
	"""A Processed incoming record with no reference names the document its handler wrote first
	(``frappe_eda.consumer.written``): the Frappe worker keeps that per message id, so messages sharing a
	transaction never lend each other a document. Without that map (a handler run outside the worker's
	wrapper) only a record that is the one such record saved gets ``first_written()``."""
	from frappe_eda.consumer.written import first_written

	candidates = [
		i
		for i, r in enumerate(records)
		if r.direction is Direction.INCOMING and r.status is Status.PROCESSED and not r.reference_doctype
	]
	if not candidates:
		return records
	by_id = getattr(frappe.local, "eda_written_by_id", None)
	if by_id is None:
		written = first_written() if len(candidates) == 1 else None
		by_id = {records[candidates[0]].message_id: written} if written else {}
	records = list(records)
	for i in candidates:
		written = by_id.get(records[i].message_id)
		if written:
			records[i] = dataclasses.replace(
				records[i], reference_doctype=written[0], reference_name=written[1]
			)
	return records


def _message_record(row: Any) -> MessageRecord:
	return MessageRecord(
		message_id=from_column("message_id", row.message_id),
		direction=DIRECTIONS[row.direction],
		status=STATUSES[row.status],
		routing_key=from_column("routing_key", row.routing_key),
		body=row.payload or "",
		exchange=from_column("exchange", row.exchange),
		queue=from_column("queue", row.queue),
		handler=from_column("handler", row.handler),
		message_type=from_column("message_type", row.message_type),
		headers=json.loads(row.headers or "{}"),
		attempts=row.attempts or 0,
		last_error=from_column("last_error", row.last_error),
		replay_count=row.replay_count or 0,
		replay_of=from_column("replay_of", row.replay_of),
		resolved=bool(row.resolved),
		reference_doctype=row.reference_doctype or "",
		reference_name=row.reference_name or "",
		created_at=_aware(row.created_at),
		updated_at=_aware(row.updated_at),
	)


def _error_record(row: Any) -> ErrorRecord:
	return ErrorRecord(
		message_id=from_column("message_id", row.message_id),
		direction=DIRECTIONS[row.direction],
		exception_type=from_column("exception_type", row.exception_type),
		error=from_column("error", row.error),
		fingerprint=from_column("fingerprint", row.fingerprint),
		attempt=row.attempt or 0,
		queue=from_column("queue", row.queue),
		handler=from_column("handler", row.handler),
		traceback=row.traceback or "",
		occurred_at=_aware(row.occurred_at),
		resolved=bool(row.resolved),
	)


def _naive(value: datetime) -> datetime:
	"""Aware times become naive UTC; naive ones are taken to be UTC already (the core's clock). Times
	the columns cannot hold are clamped to their range (``check_storable`` refuses such a message)."""
	return naive_utc(value)


def _aware(value: Any) -> datetime:
	if isinstance(value, str):
		value = frappe.utils.get_datetime(value)
	if value is None:
		return utcnow()
	return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def _sender(headers: dict[str, Any]) -> str:
	value = headers.get(SENDER)
	return value if isinstance(value, str) else ""

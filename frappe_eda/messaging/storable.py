"""Whether a store can hold a record, and making display fields fit: checked before a handler runs.

A delivery whose record the store cannot hold (an id longer than its column, a lone surrogate, a NUL, a
time that cannot be converted to UTC) would otherwise pass screening, run its handler, and fail only when
the batch is recorded. ``check_message`` refuses it up front with ``UnstorableMessage`` naming the field,
its length and the limit; ``storable_record`` then builds the closest record that does fit, so the
dead letter is recorded. Display fields (error texts, tracebacks, headers) are never a reason to refuse:
``fit_message`` and ``fit_error`` make them printable and truncate them with a visible marker.

Lengths are measured by the store (``MessageStore.stored_length``) against its ``StoreLimits``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from frappe_eda.messaging.envelope import utcnow
from frappe_eda.messaging.errors import UnstorableMessage
from frappe_eda.messaging.store import ErrorRecord, MessageRecord, MessageStore

MESSAGE_KEYS = (
	"message_id",
	"queue",
	"routing_key",
	"exchange",
	"handler",
	"message_type",
	"replay_of",
	"reference_doctype",
	"reference_name",
)
ERROR_KEYS = ("message_id", "queue", "handler", "exception_type", "fingerprint")
COUNTERS = ("attempts", "replay_count")
MARKER = " [...{count} chars cut by frappe_eda]"
HEADERS_CUT = "x-eda-headers-truncated"


def check_message(record: MessageRecord, store: MessageStore) -> None:
	"""Raise ``UnstorableMessage`` for the first field of ``record`` that ``store`` cannot hold.

	Runs for every delivery: plain ASCII text within its limit, the common case, is settled inline."""
	key_chars = store.limits.key_chars
	measure = store.stored_length
	fields = record.__dict__
	for name in MESSAGE_KEYS:
		value = fields[name]
		if value.__class__ is str and value.isascii() and "\x00" not in value:
			limit = key_chars.get(name)
			if limit is None or measure(name, value) <= limit:
				continue
		check_key(name, value, store)
	_check_time("created_at", record.created_at, store)
	for name in COUNTERS:
		_check_int(name, getattr(record, name), store)


def check_error(error: ErrorRecord, store: MessageStore) -> None:
	for name in ERROR_KEYS:
		check_key(name, getattr(error, name), store)
	_check_time("occurred_at", error.occurred_at, store)
	_check_int("attempt", error.attempt, store)


def fit_message(record: MessageRecord, store: MessageStore) -> MessageRecord:
	"""``record`` with its display fields printable and cut to the store's limits."""
	return replace(
		record,
		last_error=fit_text("last_error", record.last_error, store),
		headers=fit_headers(record.headers, store),
	)


def fit_error(error: ErrorRecord, store: MessageStore) -> ErrorRecord:
	"""``error`` with its texts cut to fit; its type is the core's own text, so it is cut too, not refused."""
	return replace(
		error,
		exception_type=_fit_key("exception_type", error.exception_type, store),
		error=fit_text("error", error.error, store),
		traceback=fit_text("traceback", error.traceback, store),
	)


def storable_record(record: MessageRecord, store: MessageStore, fallback_id: str) -> MessageRecord:
	"""The closest record to ``record`` that ``store`` can hold: display fields fitted, an unstorable id
	replaced by ``fallback_id``, an unstorable time by now, other unstorable identifiers emptied (the body,
	kept whole, still says what they were). Raises ``UnstorableMessage`` if not even that fits."""
	fitted = fit_message(record, store)
	for _ in range(len(MESSAGE_KEYS) + len(COUNTERS) + 1):
		try:
			check_message(fitted, store)
			return fitted
		except UnstorableMessage as e:
			if e.field == "message_id" and fitted.message_id == fallback_id:
				raise
			fitted = replace(fitted, **{e.field: _stand_in(e.field, fallback_id)})
	check_message(fitted, store)
	return fitted


def fit_text(name: str, value: str, store: MessageStore) -> str:
	return _fit(name, value, store.limits.text_chars.get(name), store)


def fit_headers(headers: dict[str, Any], store: MessageStore) -> dict[str, Any]:
	"""Headers whose serialized form fits; too long, they are replaced by one header holding the start
	of that serialized form, so a reader sees what was there and that it was cut."""
	limit = store.limits.text_chars.get("headers")
	if not headers or limit is None:
		return headers
	serialized = serialized_headers(headers)
	if store.stored_length("headers", serialized) <= limit:
		return headers

	def fits(candidate: str) -> bool:
		return store.stored_length("headers", serialized_headers({HEADERS_CUT: candidate})) <= limit

	return {HEADERS_CUT: _cut(printable(serialized), fits)}


def serialized_headers(headers: dict[str, Any]) -> str:
	"""Headers as the SQL store writes them (and as a limit on ``headers`` is meant)."""
	return json.dumps(headers, default=str)


def printable(value: str) -> str:
	"""Text every store can write: a lone surrogate becomes its escape, NUL becomes ``\\x00``."""
	try:
		value.encode("utf-8")
	except UnicodeEncodeError:
		value = value.encode("utf-8", "backslashreplace").decode("utf-8")
	return value.replace("\x00", "\\x00") if "\x00" in value else value


def check_key(name: str, value: Any, store: MessageStore) -> None:
	"""Raise ``UnstorableMessage`` unless the identifier field ``name`` can hold ``value``."""
	if not isinstance(value, str):
		raise UnstorableMessage(name, f"is a {type(value).__name__}, not text")
	if "\x00" in value:
		raise UnstorableMessage(name, f"contains a NUL character at position {value.index(chr(0))}")
	if not value.isascii():
		try:
			value.encode("utf-8")
		except UnicodeEncodeError as e:
			raise UnstorableMessage(name, f"is not valid Unicode (a lone surrogate at position {e.start})")
	limit = store.limits.key_chars.get(name)
	if limit is not None:
		length = store.stored_length(name, value)
		if length > limit:
			written = "" if length == len(value) else f" as the store writes it ({len(value)} as sent)"
			raise UnstorableMessage(
				name, f"is {length} characters{written}, over the store's limit of {limit}"
			)


def _check_time(name: str, value: datetime, store: MessageStore) -> None:
	try:
		utc = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
	except (OverflowError, ValueError) as e:
		raise UnstorableMessage(name, f"is {value.isoformat()}, which has no UTC equivalent ({e})")
	limits = store.limits
	if not limits.min_time <= utc <= limits.max_time:
		raise UnstorableMessage(
			name,
			f"is {value.isoformat()}, outside what the store holds "
			f"({limits.min_time.isoformat()} to {limits.max_time.isoformat()})",
		)


def _check_int(name: str, value: int, store: MessageStore) -> None:
	limit = store.limits.max_int
	if limit is not None and not -limit - 1 <= value <= limit:
		raise UnstorableMessage(name, f"is {value}, over the store's limit of {limit}")


def _fit_key(name: str, value: str, store: MessageStore) -> str:
	return _fit(name, value, store.limits.key_chars.get(name), store)


def _fit(name: str, value: str, limit: int | None, store: MessageStore) -> str:
	"""``value`` made printable and cut (with the marker) to ``limit`` as the store measures ``name``."""
	text = printable(value)
	if limit is None or store.stored_length(name, text) <= limit:
		return text
	return _cut(text, lambda candidate: store.stored_length(name, candidate) <= limit)


def _stand_in(name: str, fallback_id: str) -> Any:
	if name == "message_id":
		return fallback_id
	if name == "created_at":
		return utcnow()
	if name in COUNTERS:
		return 0
	return ""


def _cut(text: str, fits: Callable[[str], bool]) -> str:
	"""The longest prefix of ``text`` that fits with the marker saying how much was cut (binary search:
	a store may measure escaped or encoded length, which grows unevenly with the text); a limit too small
	for the marker gets the bare prefix."""
	for marked in (True, False):
		low, high, best = 0, len(text), None
		while low <= high:
			middle = (low + high) // 2
			candidate = text[:middle] + (MARKER.format(count=len(text) - middle) if marked else "")
			if fits(candidate):
				best, low = candidate, middle + 1
			else:
				high = middle - 1
		if best is not None:
			return best
	return ""

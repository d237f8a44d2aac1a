"""How the DocType store writes producer text into EDA Message / EDA Error, and what the columns hold.

Producer-controlled text (ids, routing keys, a key name quoted in a ``DuplicateKey`` error, a handler's
exception text quoting the payload) reaches Data, Small Text and Text fields, and Frappe v15 renders
those as raw HTML in the form, the list and report views, the group-by sidebar and script reports. The
store writes with raw INSERTs, which skip the sanitizing ``doc.insert()`` would do. So these fields are
written HTML-escaped (the five characters of ``frappe.utils.escape_html``) and read back unescaped:
every desk path shows inert text, and the core reads exactly what it wrote.

Escaping is a map of single characters, and every ``&`` in stored text starts one of its five
entities, so it is lossless, equal stored values mean equal originals (lookups by id, queue or routing
key escape their arguments and match), and an escaped prefix is a prefix of the escaped text (the
routing-key LIKE pre-filter escapes its literal ends). The body (``payload``), ``headers`` and
``traceback`` are Code fields, which Frappe escapes when it shows them: they are stored unchanged.

Lengths are the column's: a varchar counts characters, MariaDB's TEXT and LONGTEXT count bytes, so
the limits reported to the core count a TEXT column as 4 bytes a character (utf8mb4's worst case).
Identifier fields over their column are refused (the core's ``storable`` check against ``limits``);
display text is truncated to fit
with a visible marker (``display_value``), so a long error never makes a record unstorable.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any

import frappe

MESSAGE = "EDA Message"
ERROR = "EDA Error"

# Record fields written HTML-escaped (the same column name in EDA Message and EDA Error).
ESCAPED = frozenset(
	{
		"message_id",
		"routing_key",
		"exchange",
		"queue",
		"handler",
		"message_type",
		"replay_of",
		"last_error",
		"exception_type",
		"fingerprint",
		"error",
		"verified_sender",
	}
)
# Identifier fields of MessageRecord / ErrorRecord and the columns that hold them: too long is refused.
KEY_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
	"message_id": ((MESSAGE, "message_id"), (ERROR, "message_id")),
	"routing_key": ((MESSAGE, "routing_key"),),
	"exchange": ((MESSAGE, "exchange"),),
	"queue": ((MESSAGE, "queue"), (ERROR, "queue")),
	"handler": ((MESSAGE, "handler"), (ERROR, "handler")),
	"message_type": ((MESSAGE, "message_type"),),
	"replay_of": ((MESSAGE, "replay_of"),),
	"reference_doctype": ((MESSAGE, "reference_doctype"),),
	"reference_name": ((MESSAGE, "reference_name"),),
	"exception_type": ((ERROR, "exception_type"),),
	"fingerprint": ((ERROR, "fingerprint"),),
}
# Display-only fields: too long is truncated, never refused.
TEXT_COLUMNS: dict[str, tuple[str, str]] = {
	"last_error": (MESSAGE, "last_error"),
	"error": (ERROR, "error"),
	"traceback": (ERROR, "traceback"),
	"headers": (MESSAGE, "headers"),
	"verified_sender": (MESSAGE, "verified_sender"),
}
TRUNCATED = " … [truncated by frappe_eda to fit the column]"
# What stands in for headers whose JSON does not fit: an object, so the record still reads back.
TRUNCATED_HEADERS = "x-eda-truncated-headers"

# Bytes a text column of each database type holds (PostgreSQL: 1 GB for any text value).
TEXT_BYTES = {"text": 65_535, "mediumtext": 16_777_215, "longtext": 4_294_967_295}
POSTGRES_TEXT_BYTES = 1_073_741_823
# What a display text column (a traceback, headers) is given at most, whatever LONGTEXT could hold: one
# statement must stay under the server's max_allowed_packet (16 MiB by default on MariaDB), and nobody
# reads a traceback of four million characters.
DISPLAY_TEXT_BYTES = 4 * 1024 * 1024
UTF8MB4_MAX_BYTES = 4
# DATETIME(6) on MariaDB; PostgreSQL's timestamp holds every time Python can.
MARIADB_TIMES = (datetime(1000, 1, 1), datetime(9999, 12, 31, 23, 59, 59, 999999))
PYTHON_TIMES = (datetime.min, datetime.max)

_ESCAPES = str.maketrans({"&": "&amp;", '"': "&quot;", "'": "&apos;", ">": "&gt;", "<": "&lt;"})
_ENTITY = re.compile(r"&(amp|quot|apos|gt|lt);")
_UNESCAPES = {"amp": "&", "quot": '"', "apos": "'", "gt": ">", "lt": "<"}
_SURROGATE = re.compile("[\ud800-\udfff]")


def escape(text: str) -> str:
	"""``frappe.utils.escape_html``, as one ``str.translate``: the store escapes every record it writes."""
	return text.translate(_ESCAPES)


def unescape(text: str) -> str:
	"""The exact inverse of ``escape`` (not ``html.unescape``, which would also decode other entities)."""
	return _ENTITY.sub(lambda m: _UNESCAPES[m.group(1)], text) if "&" in text else text


def to_column(field: str, value: str) -> str:
	"""What the store writes (and looks up) for ``value`` of record field ``field``."""
	return escape(value) if field in ESCAPED and value else value


def from_column(field: str, value: str | None) -> str:
	"""The value the core wrote, from what the column holds."""
	if not value:
		return ""
	return unescape(value) if field in ESCAPED else value


def shown(value: Any) -> Any:
	"""HTML for a stored value in our own templates (emails, subjects): the stored text is already
	escaped; unescaping first keeps rows written before escaping inert and nothing double-escaped."""
	return escape(unescape(value)) if isinstance(value, str) else value


def stored_length(field: str, value: str) -> int:
	"""The length ``value`` has in its column: the HTML-escaped text for escaped fields."""
	return len(to_column(field, value))


# --- what the columns hold --------------------------------------------------------------------------


def capacity(doctype: str, column: str) -> tuple[int, bool]:
	"""(size, in_bytes) of a column, read from the DocType's field type and length the way Frappe's
	``type_map`` turns them into SQL: varchar(length or 140) in characters, TEXT/LONGTEXT in bytes."""
	key = (frappe.local.site, frappe.db.db_type, doctype, column)
	if key not in _capacities:
		df = frappe.get_meta(doctype).get_field(column)
		sql_type = frappe.db.type_map[df.fieldtype][0]
		if sql_type == "varchar":
			_capacities[key] = (int(df.length or frappe.db.VARCHAR_LEN), False)
		elif frappe.db.db_type == "postgres":
			_capacities[key] = (min(POSTGRES_TEXT_BYTES, DISPLAY_TEXT_BYTES), True)
		else:
			_capacities[key] = (min(TEXT_BYTES[sql_type], DISPLAY_TEXT_BYTES), True)
	return _capacities[key]


_capacities: dict[tuple[Any, ...], tuple[int, bool]] = {}


def chars(doctype: str, column: str) -> int:
	"""Characters any text of that length fits in: a byte-counted column at 4 bytes a character."""
	size, in_bytes = capacity(doctype, column)
	return size // UTF8MB4_MAX_BYTES if in_bytes else size


def key_chars() -> dict[str, int]:
	return {field: min(chars(*column) for column in columns) for field, columns in KEY_COLUMNS.items()}


def text_chars() -> dict[str, int]:
	return {field: chars(*column) for field, column in TEXT_COLUMNS.items()}


def time_range() -> tuple[datetime, datetime]:
	"""Naive UTC bounds of the database's datetime columns."""
	return PYTHON_TIMES if frappe.db.db_type == "postgres" else MARIADB_TIMES


def aware_time_range() -> tuple[datetime, datetime]:
	low, high = time_range()
	return low.replace(tzinfo=timezone.utc), high.replace(tzinfo=timezone.utc)


def _fits(value: str, size: int, in_bytes: bool) -> bool:
	return len(value.encode("utf-8") if in_bytes else value) <= size


# --- writing values ---------------------------------------------------------------------------------


def display_value(field: str, text: str | None) -> str:
	"""The column value of display text: encodable, escaped where shown as HTML, and cut to fit with
	a visible marker when it is too long, so it never makes the record unstorable."""
	if not text:
		return ""
	text = _SURROGATE.sub("\ufffd", text)
	if frappe.db.db_type == "postgres":
		text = text.replace("\x00", "\ufffd")
	return fitted(field, text, *TEXT_COLUMNS[field])


def fitted(field: str, text: str, doctype: str, column: str) -> str:
	"""The column value of ``text``, cut (before escaping, so never inside an entity) to the longest
	prefix that fits with the ``TRUNCATED`` marker when the whole does not."""
	size, in_bytes = capacity(doctype, column)
	value = to_column(field, text)
	if _fits(value, size, in_bytes):
		return value
	keep, drop = 0, len(text)  # bisection over the prefix length
	while keep < drop:
		middle = (keep + drop + 1) // 2
		if _fits(to_column(field, text[:middle] + TRUNCATED), size, in_bytes):
			keep = middle
		else:
			drop = middle - 1
	return to_column(field, text[:keep] + TRUNCATED)


def headers_value(serialized: str) -> str:
	"""Headers JSON as written; when it does not fit, a JSON object holding its truncated text."""
	size, in_bytes = capacity(*TEXT_COLUMNS["headers"])
	if _fits(serialized, size, in_bytes):
		return serialized
	room = size // UTF8MB4_MAX_BYTES - len(TRUNCATED_HEADERS) - len(TRUNCATED) - 16
	return json.dumps({TRUNCATED_HEADERS: serialized[: max(room // 6, 0)] + TRUNCATED})


def naive_utc(value: datetime) -> datetime:
	"""A time as the datetime columns hold it: naive UTC, clamped into the database's range (year 1
	at +14:00 has no UTC representation in Python; MariaDB's DATETIME starts at year 1000)."""
	if value.tzinfo is not None:
		try:
			value = value.astimezone(timezone.utc).replace(tzinfo=None)
		except OverflowError:
			value = datetime.min if value.year == datetime.min.year else datetime.max
	low, high = time_range()
	return min(max(value, low), high)

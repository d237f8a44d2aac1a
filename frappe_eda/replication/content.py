"""A hash of what a document's message carries, the same on the source and in reconciliation.

Reconciliation must notice a change that bypassed every hook (``frappe.db.sql("update ...")`` leaves
``modified`` alone), so it compares content, not timestamps. Both sides use the source's hash: the
source puts ``_eda_hash`` in each document's payload, read back from its own row in the same transaction
(``row_hashes``), the subscriber keeps it on the EDA Replica, and the source's digests are built from its
rows the same way. Only top-level columns the payload may carry are hashed (no secrets, no fields above
permlevel 0 unless the rule names them, no bookkeeping such as ``modified``); child rows are not (a raw
change to a child row alone is not found).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import frappe

from frappe_eda.messaging.replication.mapping import NEVER_COPIED
from frappe_eda.outbox.payload import sensitive_fields
from frappe_eda.outbox.permlevels import restricted_fields

HASH_KEY = "_eda_hash"
CHUNK = 1000


def hashed_columns(doctype: str, fields: Sequence[str] = ()) -> list[str]:
	"""The columns whose values make the hash, sorted."""
	meta = frappe.get_meta(doctype)
	wanted = set(fields)
	hidden = sensitive_fields(doctype) | (restricted_fields(doctype) - wanted)
	columns = {
		df.fieldname
		for df in meta.fields
		if df.fieldtype not in frappe.model.no_value_fields and df.fieldtype not in frappe.model.table_fields
	}
	if wanted:
		columns &= wanted
	return sorted(c for c in columns - hidden - NEVER_COPIED if not c.startswith("_"))


def content_hash(values: dict[str, Any], columns: Sequence[str]) -> str:
	normalized = [_normal(values.get(column)) for column in columns]
	text = json.dumps([list(columns), normalized], separators=(",", ":"), ensure_ascii=False)
	return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


def _normal(value: Any) -> Any:
	value = json.loads(frappe.as_json(value)) if value is not None else None
	if value is None:
		return ""
	if isinstance(value, float) and value.is_integer():
		return int(value)
	return value


def row_hashes(
	doctype: str, columns: Sequence[str], names: Iterable[str] | None = None, filters: Any = None
) -> Iterator[tuple[str, str, dict[str, Any]]]:
	"""``(name, hash, row)`` of the rows of ``doctype`` (those ``names``, or all matching ``filters``),
	read in chunks of ``CHUNK`` in name order."""
	fields = ["name", *columns]
	if names is not None:
		wanted = list(names)
		for start in range(0, len(wanted), CHUNK):
			for row in frappe.get_all(
				doctype, filters={"name": ["in", wanted[start : start + CHUNK]]}, fields=fields
			):
				yield row.name, content_hash(row, columns), row
		return
	last = None
	while True:
		page_filters = [*(_as_list(filters)), *([["name", ">", last]] if last is not None else [])]
		rows = frappe.get_all(
			doctype, filters=page_filters, fields=fields, order_by="name asc", limit_page_length=CHUNK
		)
		for row in rows:
			yield row.name, content_hash(row, columns), row
		if len(rows) < CHUNK:
			return
		last = rows[-1].name


def _as_list(filters: Any) -> list[Any]:
	if not filters:
		return []
	if isinstance(filters, dict):
		return [
			[key, "=", value] if not isinstance(value, list | tuple) else [key, *value]
			for key, value in filters.items()
		]
	return list(filters)


def document_hash(doctype: str, name: str, fields: Sequence[str] = ()) -> str:
	"""The hash of the row as this transaction sees it (called by the outbox after the save wrote it)."""
	for _name, digest, _row in row_hashes(doctype, hashed_columns(doctype, fields), names=[name]):
		return digest
	return ""

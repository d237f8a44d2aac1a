"""Escape the producer text that EDA Message / EDA Error rows hold from before the store escaped it.

Rows written before then hold ``<img src=x onerror=...>`` as it came, and Frappe renders those fields
as HTML (report view, list columns, Small Text and Text in the form). The store now writes them
HTML-escaped and reads them back unescaped (``frappe_eda.stores.doctype_columns``); this brings old
rows to the same form. A value that already reads as escaped text (no ``< > " '`` and every ``&``
starting one of the five entities) is left as it is, so running it twice changes nothing. An escaped
identifier longer than its column is cut with a visible marker: such a row stays readable and inert,
though lookups by its (hostile, over-long once escaped) id no longer match it.
"""

from __future__ import annotations

import frappe
from pypika.terms import Criterion

from frappe_eda.stores.doctype_columns import ERROR, ESCAPED, MESSAGE, escape, fitted, unescape

SPECIAL = ("<", ">", '"', "'", "&")


def execute() -> None:
	for doctype in (MESSAGE, ERROR):
		fields = [f for f in sorted(ESCAPED) if frappe.get_meta(doctype).has_field(f)]
		table = frappe.qb.DocType(doctype)
		suspect = Criterion.any([table[f].like(f"%{c}%") for f in fields for c in SPECIAL])
		rows = frappe.qb.from_(table).select(table.name, *fields).where(suspect).run(as_dict=True)
		for row in rows:
			values = {f: fitted(f, row[f], doctype, f) for f in fields if row[f] and not is_escaped(row[f])}
			if values:
				frappe.db.set_value(doctype, row.name, values, update_modified=False)


def is_escaped(value: str) -> bool:
	"""Already in the store's form: escaping what it stands for gives it back."""
	return escape(unescape(value)) == value

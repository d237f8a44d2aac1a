"""What of a document goes into a message: never a Password field, never a field marked sensitive.

Sensitive fields are declared by apps in their hooks (``eda_sensitive_fields = {"Employee":
["bank_ac_no"], "*": ["api_secret"]}``); Password fields are dropped whatever the hooks say, in child
tables too. Values go through Frappe's JSON encoder, so dates and decimals arrive as strings.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

import frappe

from frappe_eda.outbox.permlevels import restricted_fields

log = logging.getLogger(__name__)

ALWAYS_SENT = ("doctype", "name", "docstatus", "modified", "owner")


def sensitive_fields(doctype: str) -> set[str]:
	"""Password fields, plus what the installed apps' ``eda_sensitive_fields`` name for ``doctype``."""
	hidden = hidden_by_hooks(frappe.get_hooks("eda_sensitive_fields"), doctype)
	meta = frappe.get_meta(doctype)
	hidden.update(df.fieldname for df in meta.fields if df.fieldtype == "Password")
	return hidden


def hidden_by_hooks(declared: Any, doctype: str) -> set[str]:
	"""The fields ``declared`` (the hook as Frappe merged it) names for ``doctype`` or for "*".

	Frappe merges the dict hooks of all apps into one (``{"ToDo": ["description"], "*": [...]}``, the
	lists of every app concatenated, a bare string made a list of one); an entry that is not a field
	name is logged and ignored.
	"""
	if not declared:
		return set()
	if not isinstance(declared, dict):
		log.error(
			"eda_sensitive_fields is a %s, not a dict of DocType -> field names", type(declared).__name__
		)
		return set()
	hidden: set[str] = set()
	for key in (doctype, "*"):
		values = declared.get(key) or []
		values = values if isinstance(values, list | tuple) else [values]
		names = [v for v in values if isinstance(v, str)]
		if len(names) != len(values):
			log.error("eda_sensitive_fields[%r] holds entries that are not field names: %r", key, values)
		hidden.update(names)
	return hidden


def document_payload(doc: Any, fields: Iterable[str] | None = None) -> dict[str, Any]:
	"""A JSON-ready dict of ``doc``: the listed ``fields`` (or all) minus anything secret, and minus the
	fields above permlevel 0 that ``fields`` does not name (``permlevels``; in child rows too, unless the
	table field itself is named)."""
	wanted = [f.strip() for f in fields or [] if f and f.strip()]
	data = doc.as_dict(no_default_fields=False, convert_dates_to_str=True)
	hidden = sensitive_fields(doc.doctype) | (restricted_fields(doc.doctype) - set(wanted))
	if wanted:
		data = {k: v for k, v in data.items() if k in wanted or k in ALWAYS_SENT}
	payload = {k: v for k, v in data.items() if k not in hidden and not k.startswith("__")}
	for df in frappe.get_meta(doc.doctype).get_table_fields():
		if df.fieldname in payload and isinstance(payload[df.fieldname], list):
			child_hidden = sensitive_fields(df.options)
			if df.fieldname not in wanted:
				child_hidden |= restricted_fields(df.options)
			payload[df.fieldname] = [
				{k: v for k, v in row.items() if k not in child_hidden and not k.startswith("__")}
				for row in payload[df.fieldname]
			]
	return json.loads(frappe.as_json(payload))

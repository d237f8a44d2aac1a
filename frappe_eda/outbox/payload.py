"""What of a document goes into a message: never a Password field, never a field marked sensitive.

Sensitive fields are declared by apps in their hooks (``eda_sensitive_fields = {"Employee":
["bank_ac_no"], "*": ["api_secret"]}``); Password fields are dropped whatever the hooks say, in child
tables too. Values go through Frappe's JSON encoder, so dates and decimals arrive as strings.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import frappe

ALWAYS_SENT = ("doctype", "name", "docstatus", "modified", "owner")


def sensitive_fields(doctype: str) -> set[str]:
	hidden: set[str] = set()
	for mapping in frappe.get_hooks("eda_sensitive_fields") or []:
		if isinstance(mapping, dict):
			for key in (doctype, "*"):
				hidden.update(mapping.get(key) or [])
	meta = frappe.get_meta(doctype)
	hidden.update(df.fieldname for df in meta.fields if df.fieldtype == "Password")
	return hidden


def document_payload(doc: Any, fields: Iterable[str] | None = None) -> dict[str, Any]:
	"""A JSON-ready dict of ``doc``: the listed ``fields`` (or all) minus anything secret."""
	wanted = [f.strip() for f in fields or [] if f and f.strip()]
	data = doc.as_dict(no_default_fields=False, convert_dates_to_str=True)
	hidden = sensitive_fields(doc.doctype)
	if wanted:
		data = {k: v for k, v in data.items() if k in wanted or k in ALWAYS_SENT}
	payload = {k: v for k, v in data.items() if k not in hidden and not k.startswith("__")}
	for df in frappe.get_meta(doc.doctype).get_table_fields():
		if df.fieldname in payload and isinstance(payload[df.fieldname], list):
			child_hidden = sensitive_fields(df.options)
			payload[df.fieldname] = [
				{k: v for k, v in row.items() if k not in child_hidden and not k.startswith("__")}
				for row in payload[df.fieldname]
			]
	return json.loads(frappe.as_json(payload))

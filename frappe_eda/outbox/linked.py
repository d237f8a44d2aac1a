"""The documents a message's document links to, sent along for subscribers that lack them.

A rule with *Send Linked Documents* adds ``_eda_links`` to the payload: each document a Link field of
the document (or of its child rows) names, as ``document_payload`` gives it (never a secret field), so a
subscription with *Create From Sent Documents* can create, say, the Item Group a new Item needs. One
level deep, at most ``MAX_LINKED`` documents, and never DocTypes that belong to the site's set-up (users,
roles, DocTypes), which every server has of its own.
"""

from __future__ import annotations

from typing import Any

import frappe

from frappe_eda.outbox.payload import document_payload

MAX_LINKED = 50
NEVER_SENT = frozenset({"User", "Role", "DocType", "Module Def", "Currency", "Country", "Language"})


def linked_documents(doc: Any) -> list[dict[str, Any]]:
	seen: set[tuple[str, str]] = set()
	found: list[tuple[str, str]] = []
	rows = [doc, *[row for table in doc.meta.get_table_fields() for row in doc.get(table.fieldname) or []]]
	for row in rows:
		for df in row.meta.fields:
			value = row.get(df.fieldname)
			if df.fieldtype != "Link" or not value or df.options in NEVER_SENT:
				continue
			key = (df.options, str(value))
			if key not in seen:
				seen.add(key)
				found.append(key)
	sent = []
	for doctype, name in found[:MAX_LINKED]:
		if frappe.get_meta(doctype).issingle or not frappe.db.exists(doctype, name):
			continue
		sent.append(document_payload(frappe.get_doc(doctype, name)))
	return sent

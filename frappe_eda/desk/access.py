"""Who may read an EDA Message or EDA Error: its payload is a copy of a document.

``EDA Manager`` and ``System Manager`` (and Administrator) read every record, as their role permissions
say. Anyone else (``EDA User``) reads a message only if it references a document (``reference_doctype``
and ``reference_name``) that they may read themselves, checked with Frappe's own permissions (roles,
User Permissions, sharing, the DocType's permission hooks); an error only if they may read a message
with its ``message_id``. Messages without a reference (sent by code without one), messages whose
document was deleted, and every received message are for managers only: a received message's reference
is the document its handler wrote (``consumer.written``), often a small part of a larger remote
payload, so reading that document does not grant reading what another site sent.

Wired through the ``has_permission`` hook (forms, ``frappe.get_doc(...).check_permission``, print,
export of one document) and ``permission_query_conditions`` (lists, reports, export, counts).
Controllers can only deny, so these never grant what the role permissions do not.
"""

from __future__ import annotations

from typing import Any

import frappe

from frappe_eda import compat

MANAGER_ROLES = frozenset({"EDA Manager", "System Manager"})
MESSAGE = "EDA Message"
OUTGOING = "Outgoing"


def is_manager(user: str | None = None) -> bool:
	user = user or frappe.session.user
	return user == "Administrator" or bool(MANAGER_ROLES.intersection(frappe.get_roles(user)))


def message_has_permission(doc: Any, ptype: str = "read", user: str | None = None, **_: Any) -> bool | None:
	"""No objection (role permissions decide) for managers; otherwise read access to the referenced
	document."""
	if is_manager(user):
		return compat.NO_OBJECTION
	if doc.get("direction") != OUTGOING:
		return False
	return _may_read_reference(doc.get("reference_doctype"), doc.get("reference_name"), user)


def error_has_permission(doc: Any, ptype: str = "read", user: str | None = None, **_: Any) -> bool | None:
	if is_manager(user):
		return compat.NO_OBJECTION
	references = frappe.get_all(
		MESSAGE,
		filters={
			"message_id": doc.get("message_id") or "",
			"direction": OUTGOING,
			"reference_name": ["is", "set"],
		},
		fields=["reference_doctype", "reference_name"],
		limit=20,
	)
	return any(_may_read_reference(r.reference_doctype, r.reference_name, user) for r in references)


def message_query_conditions(user: str | None = None, doctype: str | None = None) -> str:
	"""SQL restricting lists of EDA Message to the documents ``user`` may read ("" for managers)."""
	user = user or frappe.session.user
	if is_manager(user):
		return ""
	table = f"`tab{MESSAGE}`"
	conditions = []
	for reference_doctype in _referenced_doctypes():
		readable = _readable_names_query(reference_doctype, user)
		if readable:
			conditions.append(
				f"({table}.`reference_doctype` = {frappe.db.escape(reference_doctype)}"
				f" and {table}.`reference_name` in ({readable}))"
			)
	if not conditions:
		return "(1 = 0)"
	return f"({table}.`direction` = {frappe.db.escape(OUTGOING)} and (" + " or ".join(conditions) + "))"


def error_query_conditions(user: str | None = None, doctype: str | None = None) -> str:
	user = user or frappe.session.user
	if is_manager(user):
		return ""
	messages = message_query_conditions(user)
	return f"`tabEDA Error`.`message_id` in (select `message_id` from `tab{MESSAGE}` where {messages})"


def _may_read_reference(reference_doctype: str | None, reference_name: str | None, user: str | None) -> bool:
	if not (reference_doctype and reference_name) or not _listable(reference_doctype):
		return False
	if not frappe.db.exists(reference_doctype, reference_name):
		return False
	return bool(frappe.has_permission(reference_doctype, "read", doc=reference_name, user=user))


def _referenced_doctypes() -> list[str]:
	"""The DocTypes messages refer to (a handful; the reference index makes this cheap)."""
	message = frappe.qb.DocType(MESSAGE)
	rows = (
		frappe.qb.from_(message)
		.select(message.reference_doctype)
		.distinct()
		.where(message.reference_doctype.isnotnull() & (message.reference_doctype != ""))
		.where(message.direction == OUTGOING)
		.run(pluck=True)
	)
	return [row for row in rows if _listable(row)]


def _listable(doctype: str) -> bool:
	if not frappe.db.exists("DocType", doctype):
		return False
	meta = frappe.get_meta(doctype)
	return not (meta.istable or meta.issingle or meta.is_virtual)


def _readable_names_query(doctype: str, user: str) -> str | None:
	"""Frappe's own list query for what ``user`` may read of ``doctype`` (None: nothing at all)."""
	if not frappe.has_permission(doctype, "read", user=user):
		return None
	try:
		query = frappe.get_list(doctype, fields=["name"], user=user, order_by=None, run=0)
	except frappe.PermissionError:
		return None
	return str(query).strip()

"""Who may read an EDA Message or EDA Error: its payload is a copy of a document.

``EDA Manager`` and ``System Manager`` (and Administrator) read every record, as their role permissions
say. Anyone else (``EDA User``) reads a message only if it references a document (``reference_doctype``
and ``reference_name``) that they may read themselves, checked with Frappe's own permissions (roles,
User Permissions, sharing, the DocType's permission hooks); an error only if it is an outgoing one and
they may read the EDA Message it links to (its own fields decide, never an id another record shares).
Messages without a reference (sent by code without one), messages whose
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
	"""An error is read as its own message is: by the error's own fields (its direction and the EDA
	Message it links to), never by a message id another record may share (a site consuming its own
	events has an outgoing and an incoming record under one id)."""
	if is_manager(user):
		return compat.NO_OBJECTION
	if doc.get("direction") != OUTGOING or not doc.get("eda_message"):
		return False
	message = frappe.db.get_value(
		MESSAGE, doc.get("eda_message"), ["direction", "reference_doctype", "reference_name"], as_dict=True
	)
	if message is None or message.direction != OUTGOING:
		return False
	return _may_read_reference(message.reference_doctype, message.reference_name, user)


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
	# the error's own direction and link, as error_has_permission reads them
	return (
		f"(`tabEDA Error`.`direction` = {frappe.db.escape(OUTGOING)} and `tabEDA Error`.`eda_message` in "
		f"(select `name` from `tab{MESSAGE}` where {messages}))"
	)


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


def readable_message(name: str) -> Any:
	"""The EDA Message ``name`` when the user may read it. A name that does not exist and one the user may
	not read get the same answer (403, the same words): an answer must not tell which names exist."""
	doc = frappe.get_doc(MESSAGE, name) if frappe.db.exists(MESSAGE, name) else None
	if doc is None or not doc.has_permission("read"):
		raise frappe.PermissionError(
			frappe._("No EDA Message {0} that you may read").format(frappe.bold(name))
		)
	return doc


# Frappe's ``frappe.client.get_count`` counts with ``frappe.db.count``: no permission check, so any user
# could count EDA rows by a filter on a payload or a traceback and read it a character at a time. Ours
# (``override_whitelisted_methods``) counts EDA's DocTypes through ``frappe.get_list``, which applies
# the role permissions and the query conditions above; every other DocType goes to Frappe's as before.
EDA_MODULE = "Frappe EDA"


@frappe.whitelist()
def get_count(doctype: str, filters: Any = None, debug: bool = False, cache: bool = False) -> int:
	from frappe.client import get_count as frappe_get_count

	if not isinstance(doctype, str) or frappe.db.get_value("DocType", doctype, "module") != EDA_MODULE:
		return frappe_get_count(doctype, filters, debug, cache)
	if not frappe.has_permission(doctype, "read"):
		raise frappe.PermissionError(frappe._("You may not read {0}").format(frappe.bold(doctype)))
	if isinstance(filters, str):
		filters = frappe.parse_json(filters)
	rows = frappe.get_list(doctype, filters=filters, fields=[compat.count_field("total")], order_by=None)
	return int(rows[0].total) if rows else 0

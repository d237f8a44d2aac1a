# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""Custom DocTypes that replication tests create on a site and drop again.

The replication tests need the same family of four DocTypes (a Link target, a document with a child
table, the child table, a submittable document that links to the first), each under its own names so
that one test's rules and subscriptions never see another's documents: ``item_doctypes`` builds them,
``ensure_doctypes`` and ``drop_doctypes`` create and remove them.
"""

from __future__ import annotations

import json
from typing import Any

import frappe

PERMS = [{"role": "System Manager", "read": 1, "write": 1, "create": 1, "delete": 1}]


def field(fieldname: str, fieldtype: str = "Data", **extra: Any) -> dict:
	"""A field labelled after its name (``item_code`` -> ``Item Code``)."""
	return {
		"fieldname": fieldname,
		"fieldtype": fieldtype,
		"label": fieldname.replace("_", " ").title(),
		**extra,
	}


def doctype(name: str, fields: list[dict], **extra: Any) -> dict:
	"""A custom DocType in ``Custom`` that a System Manager may do everything with (a child table has no
	permissions of its own; a submittable one also submits and cancels)."""
	if extra.get("istable"):
		permissions = []
	elif extra.get("is_submittable"):
		permissions = [dict(p, submit=1, cancel=1) for p in PERMS]
	else:
		permissions = PERMS
	return {
		"doctype": "DocType",
		"name": name,
		"module": "Custom",
		"custom": 1,
		"fields": fields,
		"permissions": permissions,
		**extra,
	}


def item_doctypes(
	group: str,
	item: str,
	price: str,
	order: str,
	*,
	item_naming: dict,
	item_fields: tuple[dict, ...] = (),
	price_fields: dict | None = None,
	order_fields: tuple[dict, ...] = (),
) -> list[dict]:
	"""A group (named by ``group_name``), an item with a Link to the group and a child table of prices
	(named as ``item_naming`` says, with ``item_fields`` added), and a submittable order of an item
	(with ``order_fields``); ``price_fields`` is added to both price columns. In the order they can be
	created."""
	price_fields = price_fields or {}
	return [
		doctype(group, [field("group_name", reqd=1, unique=1)], autoname="field:group_name"),
		doctype(
			price,
			[field("price_list", **price_fields), field("rate", "Float", **price_fields)],
			istable=1,
		),
		doctype(
			item,
			[
				field("item_code", reqd=1, unique=1),
				field("item_name"),
				field("description", "Small Text"),
				field("notes"),
				field("origin_label"),
				field("item_group", "Link", options=group),
				*item_fields,
				field("prices", "Table", options=price),
			],
			allow_import=1,  # the capture tests import items (v16 refuses a DocType without it)
			**item_naming,
		),
		doctype(
			order,
			[
				field("item", "Link", options=item, reqd=1),
				field("qty", "Float"),
				*order_fields,
				field("amended_from", "Link", options=order, read_only=1, no_copy=1),
			],
			autoname="hash",
			is_submittable=1,
		),
	]


def ensure_doctypes(definitions: list[dict]) -> list[str]:
	"""Create those of ``definitions`` that this site lacks, committed (a worker in another process
	must see them); the names created, so that a caller drops only what it made."""
	created = []
	for definition in definitions:
		if not frappe.db.exists("DocType", definition["name"]):
			frappe.get_doc(json.loads(json.dumps(definition))).insert(ignore_permissions=True)
			created.append(definition["name"])
	frappe.db.commit()
	frappe.clear_cache()
	return created


def drop_doctypes(names: list[str] | tuple[str, ...]) -> list[str]:
	"""Drop the DocTypes ``names`` (children after their parents: in the order they can be dropped) with
	their tables, and the EDA records that point at them (a replica, rule, message or subscription of a
	DocType that is gone would only fail later); the names dropped."""
	dropped = []
	for name in names:
		for table, column in (
			("EDA Replica", "document_type"),
			("EDA Event Rule", "document_type"),
			("EDA Message", "reference_doctype"),
			("EDA Subscription", "source_doctype"),
		):
			if frappe.db.table_exists(table):
				frappe.db.delete(table, {column: name})
		if frappe.db.exists("DocType", name):
			frappe.db.delete(name)  # rows first: delete_doc refuses a DocType that has documents
			frappe.delete_doc("DocType", name, force=True, ignore_permissions=True)
			dropped.append(name)
	frappe.db.commit()
	frappe.clear_cache()
	return dropped

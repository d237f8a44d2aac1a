"""Install- and migrate-time setup of the Frappe EDA app."""

from __future__ import annotations

import frappe

ROLES = ("EDA Manager", "EDA User")


def after_install() -> None:
	ensure_roles()


def after_migrate() -> None:
	"""Migrate ensures the roles too: a site installed before a role existed, or one whose role was
	deleted, would otherwise lose notify_role's default and the desk's role checks until a reinstall."""
	ensure_roles()


def ensure_roles() -> None:
	"""Create the app's roles explicitly (idempotent).

	Importing a DocType creates the roles its permissions name, but only as a side effect of the import
	order; notify_role's default and the desk's role checks need them whatever the order.
	"""
	for role in ROLES:
		if not frappe.db.exists("Role", role):
			frappe.get_doc({"doctype": "Role", "role_name": role, "desk_access": 1}).insert(
				ignore_permissions=True
			)

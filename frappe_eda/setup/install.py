"""Install- and migrate-time setup of the Frappe EDA app."""

from __future__ import annotations

import frappe

ROLES = ("EDA Manager", "EDA User")
# The EDA workspace's broker and worker view (frappe_eda/desk/broker_block.*), for these roles: the
# whitelisted method behind it (frappe_eda.desk.broker_view) serves managers only.
BROKER_BLOCK = "EDA Broker"
BROKER_BLOCK_ROLES = ("EDA Manager", "System Manager")


def after_install() -> None:
	ensure_roles()
	ensure_broker_block()
	tell_who_is_notified()


def tell_who_is_notified() -> None:
	"""Say at install who failures will reach. Installing gives the EDA Manager role to nobody: the role
	reads every payload on the site, which is for the site's administrators to grant. Until someone has
	it, failures go to the System Managers (``desk.notifications.recipients``), so nobody is left out."""
	from frappe_eda.desk.notifications import recipients_summary

	print(f"frappe_eda: {recipients_summary()['message']}")


def after_migrate() -> None:
	"""Migrate ensures the roles too: a site installed before a role existed, or one whose role was
	deleted, would otherwise lose notify_role's default and the desk's role checks until a reinstall.
	And the broker block is rewritten from the app's files, so an upgrade ships its new version."""
	ensure_roles()
	ensure_broker_block()


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


def ensure_broker_block() -> None:
	"""Create or update the Custom HTML Block the EDA workspace shows (idempotent).

	A Custom HTML Block belongs to Frappe's Desk module, so an app cannot ship it as a DocType file; the
	workspace (frappe_eda/frappe_eda/workspace/eda/eda.json) names it, and this writes it from the app's
	html, css and js beside frappe_eda.desk.broker_view. Saved only when something changed.
	"""
	parts = {
		field: _read_block_file(f"broker_block.{ext}")
		for field, ext in (("html", "html"), ("style", "css"), ("script", "js"))
	}
	if frappe.db.exists("Custom HTML Block", BROKER_BLOCK):
		block = frappe.get_doc("Custom HTML Block", BROKER_BLOCK)
		roles = sorted(row.role for row in block.roles)
		if all(block.get(field) == text for field, text in parts.items()) and roles == sorted(
			BROKER_BLOCK_ROLES
		):
			return
		block.update(parts)
		block.private = 0
		block.set("roles", [{"role": role} for role in BROKER_BLOCK_ROLES])
		block.save(ignore_permissions=True)
		return
	block = frappe.get_doc(
		{
			"doctype": "Custom HTML Block",
			"private": 0,
			"roles": [{"role": role} for role in BROKER_BLOCK_ROLES],
			**parts,
		}
	)
	block.name = BROKER_BLOCK
	block.insert(ignore_permissions=True, set_name=BROKER_BLOCK)


def _read_block_file(name: str) -> str:
	with open(frappe.get_app_path("frappe_eda", "desk", name), encoding="utf-8") as f:
		return f.read()

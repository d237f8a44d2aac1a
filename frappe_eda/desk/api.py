"""Whitelisted desk methods. Each checks the role itself: only EDA Manager may replay or resolve."""

from __future__ import annotations

import json
from typing import Any

import frappe
from frappe import _

from frappe_eda.desk import notifications, replay

MANAGER_ROLE = "EDA Manager"


def _require_manager() -> None:
	if MANAGER_ROLE not in frappe.get_roles() and frappe.session.user != "Administrator":
		frappe.throw(_("Only an EDA Manager may do this."), frappe.PermissionError)


def _names(names: Any) -> list[str]:
	if isinstance(names, str):
		names = json.loads(names) if names.startswith("[") else [names]
	return [str(n) for n in names]


@frappe.whitelist(methods=["POST"])
def replay_messages(names: Any, force: int | str = 0) -> list[dict[str, Any]]:
	_require_manager()
	return replay.replay_records(_names(names), force=bool(int(force)))


@frappe.whitelist(methods=["POST"])
def replay_failure_group(fingerprint: str, force: int | str = 0) -> list[dict[str, Any]]:
	_require_manager()
	return replay.replay_group(fingerprint, force=bool(int(force)))


@frappe.whitelist(methods=["POST"])
def edit_and_replay(name: str, payload: str) -> str:
	_require_manager()
	return replay.edit_and_replay(name, payload)


@frappe.whitelist(methods=["POST"])
def mark_resolved(names: Any) -> int:
	_require_manager()
	return replay.mark_resolved(_names(names))


@frappe.whitelist()
def failure_groups(include_resolved: int | str = 0) -> list[dict[str, Any]]:
	if not frappe.has_permission("EDA Error", "read"):
		frappe.throw(_("Not permitted to read EDA Errors."), frappe.PermissionError)
	return notifications.failure_groups(resolved=bool(int(include_resolved)))


@frappe.whitelist()
def message_errors(name: str) -> list[dict[str, Any]]:
	"""The errors of one message, oldest first, with full tracebacks (for the form)."""
	doc = frappe.get_doc("EDA Message", name)
	doc.check_permission("read")
	filters = {"message_id": doc.message_id}
	if doc.queue:
		filters["queue"] = doc.queue
	return frappe.get_all(
		"EDA Error",
		filters=filters,
		fields=[
			"name",
			"attempt",
			"occurred_at",
			"exception_type",
			"error",
			"traceback",
			"fingerprint",
			"resolved",
		],
		order_by="occurred_at asc",
	)

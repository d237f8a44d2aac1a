# Copyright (c) 2026, frappe_eda developers and contributors
# License: MIT. See LICENSE
"""Failures grouped by fingerprint (exception type + stack), with a Replay Group button per row."""

import frappe
from frappe import _

from frappe_eda.desk.access import is_manager
from frappe_eda.desk.notifications import failure_groups


def execute(filters=None):
	# Groups sample the errors of every queue and document, so they are for managers only: an EDA User
	# reads the errors of the documents they may read in the EDA Error list (grouped by fingerprint there).
	if not is_manager():
		frappe.throw(_("Only an EDA Manager may see failure groups."), frappe.PermissionError)
	filters = filters or {}
	columns = [
		{"fieldname": "exception_type", "label": _("Error"), "fieldtype": "Data", "width": 260},
		{"fieldname": "count", "label": _("Count"), "fieldtype": "Int", "width": 80},
		{"fieldname": "queue", "label": _("Queue"), "fieldtype": "Data", "width": 180},
		{"fieldname": "first_seen", "label": _("First (UTC)"), "fieldtype": "Datetime", "width": 160},
		{"fieldname": "last_seen", "label": _("Last (UTC)"), "fieldtype": "Datetime", "width": 160},
		{"fieldname": "sample_error", "label": _("Example"), "fieldtype": "Data", "width": 320},
		{"fieldname": "fingerprint", "label": _("Fingerprint"), "fieldtype": "Data", "width": 150},
		{"fieldname": "action", "label": _("Action"), "fieldtype": "Data", "width": 130},
	]
	return columns, failure_groups(resolved=bool(filters.get("include_resolved")))

"""The EDA Failure Groups report samples the errors of every queue and document, so only managers read
it. Sites installed before that still list EDA User among the report's roles (migrate does not re-sync a
standard report's role rows); the report refuses them in ``execute`` all the same, and this takes the
role off so they do not see a report they cannot run."""

import frappe

REPORT = "EDA Failure Groups"


def execute() -> None:
	if frappe.db.exists("Report", REPORT):
		frappe.db.delete("Has Role", {"parenttype": "Report", "parent": REPORT, "role": "EDA User"})

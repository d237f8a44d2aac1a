"""EDA Message gained *Last Exception Type* and *Last Fingerprint* (the list filters and groups by them);
the store writes them with each EDA Error from now on. This fills them for the Failed and Dead messages
already stored, from each one's latest error (processed and published ones are left empty: their
failures are over, and retention deletes them)."""

import frappe


def execute() -> None:
	message = frappe.qb.DocType("EDA Message")
	error = frappe.qb.DocType("EDA Error")
	names = (
		frappe.qb.from_(message)
		.select(message.name)
		.where(message.status.isin(["Failed", "Dead"]))
		.where(message.fingerprint.isnull() | (message.fingerprint == ""))
		.run(pluck=True)
	)
	for start in range(0, len(names), 500):
		chunk = names[start : start + 500]
		latest: dict[str, tuple[str, str]] = {}
		for row in (
			frappe.qb.from_(error)
			.select(error.eda_message, error.exception_type, error.fingerprint)
			.where(error.eda_message.isin(chunk))
			.orderby(error.occurred_at)
			.orderby(error.creation)
			.run(as_dict=True)
		):
			latest[row.eda_message] = (row.exception_type, row.fingerprint)
		for name, (exception_type, fingerprint) in latest.items():
			(
				frappe.qb.update(message)
				.set(message.exception_type, exception_type)
				.set(message.fingerprint, fingerprint)
				.where(message.name == name)
				.run()
			)

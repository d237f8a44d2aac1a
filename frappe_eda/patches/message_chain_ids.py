"""EDA Message gained indexed *Correlation ID* and *Causation ID* columns, which the store fills from
each envelope it writes; the form's related messages read them instead of scanning every body. This
fills them for the messages stored before, reading 500 bodies at a time (migrate commits it)."""

import frappe

from frappe_eda.stores.doctype_store import chain_ids

CHUNK = 500


def execute() -> None:
	message = frappe.qb.DocType("EDA Message")
	last = ""
	while True:
		rows = (
			frappe.qb.from_(message)
			.select(message.name, message.payload)
			.where(message.name > last)
			.where(message.correlation_id.isnull() & message.causation_id.isnull())
			.orderby(message.name)
			.limit(CHUNK)
			.run(as_dict=True)
		)
		if not rows:
			return
		for row in rows:
			ids = chain_ids(row.payload or "")
			if ids["correlation_id"] or ids["causation_id"]:
				(
					frappe.qb.update(message)
					.set(message.correlation_id, ids["correlation_id"])
					.set(message.causation_id, ids["causation_id"])
					.where(message.name == row.name)
					.run()
				)
		last = rows[-1].name

"""Where a document went and what came of it: the EDA Messages that name it as their reference.

Outgoing messages name the document they were made of (a rule, a hook, ``publish(reference_...)``);
incoming ones the document their handler wrote first (``frappe_eda.consumer.written``). Every form's
"Messages" section (``frappe_eda.bundle.js``) shows these, newest first, read with the user's own
permissions: they must read the document, and they see only the EDA Messages they may read
(``frappe_eda.desk.access``). Each outgoing message carries the receipts the servers it reached sent
back (``frappe_eda.replication.receipts``): whoever may read a message may read its receipts.
"""

from __future__ import annotations

from typing import Any

import frappe
from frappe import _

from frappe_eda import compat
from frappe_eda.replication.receipts import receipts_of

DOCUMENT_MESSAGES_LIMIT = 20
OUTGOING = "Outgoing"
FIELDS = [
	"name",
	"direction",
	"status",
	"routing_key",
	"exchange",
	"queue",
	"handler",
	"attempts",
	"last_error",
	"resolved",
	"created_at",
]


def document_messages(doctype: str, name: str) -> dict[str, Any]:
	"""The newest EDA Messages about ``doctype`` ``name`` (at most ``DOCUMENT_MESSAGES_LIMIT``; ``more``
	says whether there are others) and how many there are of each direction and status."""
	if not frappe.has_permission(doctype, "read", name):
		frappe.throw(
			_("Not permitted to read {0} {1}").format(
				frappe.utils.escape_html(doctype), frappe.utils.escape_html(name)
			),
			frappe.PermissionError,
		)
	if not frappe.has_permission("EDA Message", "read"):
		return {"messages": [], "more": False, "counts": []}
	filters = {"reference_doctype": doctype, "reference_name": name}
	rows = frappe.get_list(
		"EDA Message",
		filters=filters,
		fields=FIELDS,
		order_by="created_at desc",
		limit_page_length=DOCUMENT_MESSAGES_LIMIT + 1,
	)
	counts = compat.grouped_counts("EDA Message", filters, ["direction", "status"])
	shown = rows[:DOCUMENT_MESSAGES_LIMIT]
	receipts = receipts_of(row.name for row in shown if row.direction == OUTGOING)
	for row in shown:
		row.last_error = (row.last_error or "").split("\n", 1)[0][:300]
		row.receipts = receipts.get(row.name, [])
	return {
		"messages": shown,
		"more": len(rows) > DOCUMENT_MESSAGES_LIMIT,
		"counts": counts,
	}

"""Which document a handler wrote, so its incoming EDA Message can name it as its reference.

A message a site publishes names the document it is about (*Reference Document*); a message the
worker consumes names none on the wire that this site can trust. What an operator asks on a document
("where did this come from?") is answered by the handler's own writes: the worker runs each message
with an empty list of written documents (``consumer.per_message``), the ``doc_events["*"]`` hook notes
each document inserted or changed meanwhile, the worker keeps the first under the message's id, and the
store gives the Processed incoming record that document as its reference (a failed handler's writes are rolled back, so its record names none).
"""

from __future__ import annotations

from typing import Any

import frappe

# Events that leave a document behind (on_trash does not).
WRITE_EVENTS = frozenset({"after_insert", "on_update", "on_submit", "on_cancel", "on_update_after_submit"})


def note_written(doc: Any, method: str) -> None:
	"""Called by the doc_events hook for every document event; keeps the worker's handler's writes."""
	if method not in WRITE_EVENTS or not frappe.local.flags.in_eda_worker or not doc.name:
		return
	written = getattr(frappe.local, "eda_written", None)
	if written is None:
		written = frappe.local.eda_written = []
	if (doc.doctype, str(doc.name)) not in written:
		written.append((doc.doctype, str(doc.name)))


def first_written() -> tuple[str, str] | None:
	"""The first document the current message's handler wrote, if any."""
	written = getattr(frappe.local, "eda_written", None)
	return written[0] if written else None

"""A document rule whose target cannot work: recorded Failed, never a failed save.

A rule may point at an EDA Destination that was disabled or deleted after the rule was saved, or (from
an app's ``eda_publish`` hook, which no form validates) carry a routing-key template with more than
the plain placeholders. Raising would fail the user's save of an unrelated document, so the message is
written as a Failed EDA Message with an EDA Error saying what to fix, in the same transaction as the
document, and the EDA Managers are told once it commits. Nothing is sent: replaying the record sends
it to the exchange and key it names (the rule's exchange or the default, the message type as key).
"""

from __future__ import annotations

from typing import Any

import frappe

from frappe_eda.messaging.envelope import Message
from frappe_eda.messaging.errors import EdaError
from frappe_eda.messaging.failure import error_record
from frappe_eda.messaging.notify import PUBLISH_FAILED, FailureNotice
from frappe_eda.messaging.store import Direction, Status


def record_unsendable(
	message_type: str,
	payload: Any,
	error: EdaError,
	*,
	exchange: str | None,
	reference_doctype: str,
	reference_name: str,
) -> Message:
	"""Write ``payload`` as a Failed outgoing message with ``error``; notify after the commit."""
	from frappe_eda.outbox import outgoing_record
	from frappe_eda.settings import load_outbox_settings
	from frappe_eda.stores.doctype_store import DocTypeStore

	message = Message(type=message_type, payload=payload, source=f"{frappe.local.site}")
	failure = error_record(error, message.id, Direction.OUTGOING)
	store = DocTypeStore(commit=False)
	default_exchange = load_outbox_settings().exchange
	# The rule's own exchange may be the very thing that cannot be stored (a name over 255 bytes): then
	# the record names the default exchange, and its error says what was wrong.
	for target in dict.fromkeys((exchange or default_exchange, default_exchange)):
		record = outgoing_record(
			message,
			Status.FAILED,
			exchange=target,
			routing_key=message_type,
			reference_doctype=reference_doctype,
			reference_name=reference_name,
			last_error=str(error),
		)
		savepoint = f"eda_unsendable_{frappe.generate_hash(length=8)}"
		frappe.db.savepoint(savepoint)
		try:
			store.insert_new([record])
			store.add_error(failure)
			break
		except Exception:
			frappe.db.rollback(save_point=savepoint)  # PostgreSQL would abort the user's transaction
	else:
		# Not even that could be stored: the save goes on, and the Error Log says what was not sent.
		frappe.log_error(
			title="frappe_eda: a document event could not be recorded",
			message=f"{reference_doctype} {reference_name}: {message_type} not published and not recorded: {error}",
		)
		return message
	frappe.logger("frappe_eda").warning(f"{reference_doctype} {reference_name}: not published: {error}")
	notice = FailureNotice(
		kind=PUBLISH_FAILED,
		message_id=message.id,
		routing_key=message_type,
		exception_type=failure.exception_type,
		error=failure.error,
		fingerprint=failure.fingerprint,
	)
	frappe.db.after_commit.add(lambda: _notify(notice))
	return message


def _notify(notice: FailureNotice) -> None:
	"""After the document's commit: a notifier that fails must not turn a saved document into an error."""
	from frappe_eda.desk.notifications import site_notifier
	from frappe_eda.settings import load_settings

	try:
		site_notifier(load_settings()).notify(notice)
	except Exception:
		frappe.logger("frappe_eda").exception("could not notify about an unsendable message")

"""The ``doc_events["*"]`` hook: a document event that a rule covers becomes an outbox record.

Runs inside the document's own transaction, so the record commits or rolls back with the document.
Imports, patches, installs and migrations publish nothing (as with Frappe's Webhook), and EDA's own
DocTypes never publish, which would loop. A rule whose target cannot work (a disabled or missing
destination, a bad template) or whose message cannot be sent (a document over the 1 MiB consumers
accept) never fails the save: the message is recorded Failed and managers told.
"""

from __future__ import annotations

from typing import Any

import frappe

from frappe_eda.consumer.written import note_written
from frappe_eda.messaging.errors import ConfigurationError, InvalidMessage, Unsendable
from frappe_eda.outbox import publish
from frappe_eda.outbox.payload import document_payload
from frappe_eda.outbox.rules import PublishRule, routing_key_for, rules_for
from frappe_eda.outbox.unsendable import record_unsendable

OWN_DOCTYPES = frozenset({"EDA Message", "EDA Error", "EDA Settings", "EDA Event Rule", "EDA Destination"})


def on_document_event(doc: Any, method: str) -> None:
	flags = frappe.local.flags
	if flags.in_import or flags.in_patch or flags.in_install or flags.in_migrate:
		return
	if doc.doctype in OWN_DOCTYPES or (getattr(doc, "meta", None) and doc.meta.istable):
		return
	note_written(doc, method)  # in the worker: the incoming message's reference (consumer.written)
	rules = rules_for(doc.doctype, method)
	if not rules:
		return
	from frappe_eda.settings import load_outbox_settings

	if not load_outbox_settings().enabled:
		return
	for rule in rules:
		if rule.condition and not _condition_holds(rule, doc):
			continue
		publish_document(doc, rule)


def publish_document(doc: Any, rule: PublishRule) -> None:
	"""Queue the message ``rule`` makes of ``doc``; a target that cannot work is recorded, not raised."""
	payload = document_payload(doc, rule.fields)
	message_type = f"{frappe.scrub(doc.doctype)}.{rule.event}"
	try:
		routing_key = None
		if rule.routing_key or not rule.destination:
			routing_key = routing_key_for(rule, doc)
		publish(
			message_type,
			payload,
			to=rule.destination or None,
			exchange=rule.exchange or None,
			routing_key=routing_key,
			reference_doctype=doc.doctype,
			reference_name=doc.name,
		)
	except (ConfigurationError, Unsendable, InvalidMessage) as e:  # a disabled destination, a bad template,
		# a document too large for consumers, a key longer than the columns hold
		record_unsendable(
			message_type,
			payload,
			e,
			exchange=rule.exchange or None,
			reference_doctype=doc.doctype,
			reference_name=doc.name,
		)


def _condition_holds(rule: PublishRule, doc: Any) -> bool:
	from frappe.integrations.doctype.webhook.webhook import get_context

	return bool(frappe.safe_eval(rule.condition, eval_locals=get_context(doc)))
